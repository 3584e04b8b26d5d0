"""``tryon compose`` and ``tryon batch``: compositions and batches on this machine, no service.

The same core as the API's jobs: :mod:`tryon.compose` plans and renders a composition; a try-on
batch item is built by ``tryon render``'s path (:func:`tryon.cli.render.prepare`). Progress
bars (tqdm, stderr): one per render, and one over a batch's items.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from numpy.typing import NDArray

from tryon.anydoor.limits import GUIDANCE, NUM_SAMPLES, STEPS
from tryon.cli import fail
from tryon.cli.render import BoxParam, _write_png, progress_bar
from tryon.compose import ComposeInputs, ComposeOp, ComposeParams, plan, reference_mask, render_plan
from tryon.errors import InvalidInputError, TryOnError
from tryon.types import Box, Category

_PATH = click.Path(dir_okay=False, exists=True, path_type=Path)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"Cannot read {path}: {exc.strerror}") from None


def _mask(path: Path | None, size: tuple[int, int], limits: Any) -> NDArray[np.bool_] | None:
    from tryon.images import decode_mask

    return None if path is None else decode_mask(_read(path), size, limits)


def _sha(path: Path) -> str:
    return hashlib.sha256(_read(path)).hexdigest()


def _sampling(f: Any) -> Any:
    for opt in reversed([
        click.option("--engine", default=None, help="preview or anydoor (default: the best "
                                                    "available)."),
        click.option("--steps", type=click.IntRange(int(STEPS.low), int(STEPS.high)),
                     default=None, help="Denoising steps (default TRYON_DEFAULT_STEPS)."),
        click.option("--guidance", type=click.FloatRange(GUIDANCE.low, GUIDANCE.high,
                                                         min_open=True), default=None),
        click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
                     help="Sample k of item i uses seed + i * samples + k."),
        click.option("--samples", type=click.IntRange(int(NUM_SAMPLES.low),
                                                      int(NUM_SAMPLES.high)),
                     default=1, show_default=True),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars."),
    ]):
        f = opt(f)
    return f


def _params(op: ComposeOp, box: Box | None, settings: Any, steps: int | None,
            guidance: float | None, samples: int, seed: int) -> ComposeParams:
    return ComposeParams(op=op, box=box, steps=steps or settings.default_steps,
                         guidance=guidance if guidance is not None else settings.default_guidance,
                         num_samples=samples, seed=seed)


def _reference(path: Path, mask_path: Path | None, limits: Any
               ) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    from tryon.images import load_image_file

    img = load_image_file(path, limits, keep_alpha=True)
    return img.rgb, reference_mask(img.rgb, img.alpha, _mask(mask_path, img.size, limits))


@click.command()
@click.option("--scene", required=True, type=_PATH, help="The target image.")
@click.option("--op", type=click.Choice([o.value for o in ComposeOp]), default="insert",
              show_default=True, help="insert, replace, move (the hole is filled by Telea "
                                      "inpainting), swap.")
@click.option("--reference", type=_PATH, help="The object to place (insert, replace).")
@click.option("--reference-mask", type=_PATH, help="Its mask (else alpha, else background "
                                                   "removal).")
@click.option("--box", type=BoxParam(), default=None, help="Region (insert) or destination "
                                                            "(move), scene pixels.")
@click.option("--region-mask", type=_PATH, help="The region as a mask (insert).")
@click.option("--object-mask", type=_PATH, help="The object in the scene (replace/move/swap).")
@click.option("--object-mask-b", type=_PATH, help="The second object (swap).")
@_sampling
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output PNG (sample k > 0: OUT-k.png).")
def compose(scene: Path, op: str, reference: Path | None, reference_mask: Path | None,
            box: Box | None, region_mask: Path | None, object_mask: Path | None,
            object_mask_b: Path | None, engine: str | None, steps: int | None,
            guidance: float | None, seed: int, samples: int, quiet: bool, out: Path) -> None:
    """Place a reference object into a scene, or move, swap or replace objects in it.

    \b
    Exit codes: 0 ok, 3 invalid input (empty_region, region_too_small,
    object_not_separable, ...), 4 engine unavailable, 130 interrupted.
    """
    from tryon.config import load_settings
    from tryon.engines.registry import get_engine
    from tryon.images import IntakeLimits, load_image_file

    try:
        settings = load_settings()
        eng = get_engine(engine, settings)
        limits = IntakeLimits.from_settings(settings)
        scene_img = load_image_file(scene, limits)
        size = scene_img.size
        ref = ref_mask = None
        if reference is not None:
            ref, ref_mask = _reference(reference, reference_mask, limits)
        the_op = ComposeOp(op)
        the_plan = plan(the_op, ComposeInputs(
            scene=scene_img.rgb, reference=ref, reference_mask=ref_mask,
            region_mask=_mask(region_mask, size, limits),
            object_mask=_mask(object_mask, size, limits),
            object_mask_b=_mask(object_mask_b, size, limits)), box)
        params = _params(the_op, box, settings, steps, guidance, samples, seed)
        t0 = time.perf_counter()
        with progress_bar(f"{eng.name} {op}", enabled=not quiet) as callback:
            result = render_plan(eng, the_plan, params, params.seeds(), callback=callback)
        elapsed = time.perf_counter() - t0
        paths = [out] + [out.with_name(f"{out.stem}-{k}{out.suffix}") for k in range(1, samples)]
        for path, image in zip(paths, result.images, strict=True):
            _write_png(path, image)
    except (TryOnError, KeyboardInterrupt) as exc:
        fail(exc)
        return
    click.echo(f"wrote {', '.join(str(p) for p in paths)} (engine={eng.name}, op={op}, "
               f"boxes={the_plan.record.get('boxes')}, {elapsed:.2f} s)")


@click.command()
@click.option("--kind", type=click.Choice(["compose", "tryon"]), default="compose",
              show_default=True)
@click.option("--scene", "scenes", multiple=True, type=_PATH,
              help="compose: a scene (repeat). tryon: a person photo (repeat).")
@click.option("--reference", "references", multiple=True, type=_PATH,
              help="compose: a reference object (repeat). tryon: a garment (repeat).")
@click.option("--box", "boxes", multiple=True, type=BoxParam(),
              help="compose: the region, once for all scenes or once per scene. tryon: "
                   "optional explicit box, same rule.")
@click.option("--category", type=click.Choice([c.value for c in Category]),
              default=Category.UPPER_BODY.value, show_default=True, help="tryon: the garments'.")
@_sampling
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Writes results/NNNN_k.png and manifest.jsonl here.")
def batch(kind: str, scenes: tuple[Path, ...], references: tuple[Path, ...],
          boxes: tuple[Box, ...], category: str, engine: str | None, steps: int | None,
          guidance: float | None, seed: int, samples: int, quiet: bool, out_dir: Path) -> None:
    """Render every REFERENCE x SCENE pair (compose) or GARMENT x PERSON pair (tryon).

    One photo x N garments, N photos x one garment, N x M: the items are the product. A failed
    item is recorded in the manifest and the batch goes on. The manifest (JSON lines: inputs
    with sha256, box, seed, engine, weights checksum, output file and sha256) reproduces the
    set.
    """
    from tqdm import tqdm

    from tryon.config import load_settings
    from tryon.engines.registry import get_engine
    from tryon.images import IntakeLimits, load_image_file

    try:
        if not scenes or not references:
            raise InvalidInputError("Give at least one --scene and one --reference.")
        if len(boxes) not in (0, 1, len(scenes)):
            raise InvalidInputError(f"Give one --box, or one per scene ({len(scenes)}).")
        settings = load_settings()
        eng = get_engine(engine, settings)
        limits = IntakeLimits.from_settings(settings)
    except (TryOnError, KeyboardInterrupt) as exc:
        fail(exc)
        return
    total = len(scenes) * len(references)
    lines: list[dict[str, Any]] = []
    (out_dir / "results").mkdir(parents=True, exist_ok=True)
    failed = 0
    bar = tqdm(total=total, desc=f"batch {kind}", unit="item", disable=quiet, dynamic_ncols=True)
    try:
        index = 0
        for ref_path in references:
            for j, scene_path in enumerate(scenes):
                box = boxes[j] if len(boxes) == len(scenes) and len(boxes) > 1 else \
                    (boxes[0] if boxes else None)
                item_seed = (seed + index * samples) & 0x7FFF_FFFF
                line: dict[str, Any] = {
                    "item": index, "kind": kind, "engine": eng.name,
                    "inputs": {"scene": str(scene_path), "scene_sha256": _sha(scene_path),
                               "reference": str(ref_path), "reference_sha256": _sha(ref_path)},
                    "box": None if box is None else box.as_list(),
                }
                try:
                    with progress_bar(f"item {index}", enabled=not quiet) as callback:
                        images, record = _render_item(
                            kind, eng, scene_path, ref_path, box, category, settings, limits,
                            steps, guidance, samples, item_seed, callback, load_image_file)
                except TryOnError as exc:
                    failed += 1
                    lines.append({**line, "status": "failed", "error": exc.code})
                else:
                    for k, image in enumerate(images):
                        name = f"{index:04d}_{k}.png"
                        _write_png(out_dir / "results" / name, image)
                        data = (out_dir / "results" / name).read_bytes()
                        lines.append({
                            **line, "status": "succeeded", "sample": k, "seed": item_seed + k,
                            "file": f"results/{name}", "sha256": hashlib.sha256(data).hexdigest(),
                            "box": record.get("box", line["box"]),
                            "engine_version": record.get("engine_version"),
                            "weights_checksum": record.get("weights_checksum"),
                            "compose": record.get("compose"),
                        })
                index += 1
                bar.update(1)
    except KeyboardInterrupt as exc:
        fail(exc)
        return
    finally:
        bar.close()
        (out_dir / "manifest.jsonl").write_text(
            "".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))
    click.echo(f"{total - failed}/{total} items done; wrote {out_dir / 'manifest.jsonl'}")
    if failed:
        raise SystemExit(3)


def _render_item(kind: str, eng: Any, scene_path: Path, ref_path: Path, box: Box | None,
                 category: str, settings: Any, limits: Any, steps: int | None,
                 guidance: float | None, samples: int, seed: int, callback: Any,
                 load_image_file: Any) -> tuple[list[NDArray[np.uint8]], dict[str, Any]]:
    if kind == "compose":
        scene = load_image_file(scene_path, limits)
        ref, ref_mask = _reference(ref_path, None, limits)
        params = _params(ComposeOp.INSERT, box, settings, steps, guidance, samples, seed)
        the_plan = plan(ComposeOp.INSERT, ComposeInputs(scene.rgb, ref, ref_mask), box)
        out = render_plan(eng, the_plan, params, params.seeds(), callback=callback)
        return out.images, {**out.record, "box": the_plan.record["boxes"][0]}
    from tryon.cli.render import analyse_person, prepare
    from tryon.engines.request import JobParams

    person = load_image_file(scene_path, limits)
    garment = load_image_file(ref_path, limits, keep_alpha=True)
    cat = Category(category)
    jp = JobParams(category=cat, box=box, steps=steps or settings.default_steps,
                   guidance=guidance if guidance is not None else settings.default_guidance,
                   num_samples=samples, seed=seed)
    prep = prepare(analyse_person(person.rgb, [cat]), garment.rgb, garment.alpha, None, jp)
    out = eng.render(prep.request, callback=callback)
    return out.images, {**out.record, "box": prep.placement.box.as_list()}
