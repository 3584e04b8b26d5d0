"""``tryon render`` (one try-on from files) and ``tryon demo`` (the shipped samples, contact sheet).

Both run the same stages as a worker: decode -> pose and person mask -> placement -> target
mask -> engine. Typed errors end the command with the stable exit codes of :mod:`tryon.cli`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import click
import numpy as np
from numpy.typing import NDArray

from tryon.anydoor.limits import GUIDANCE, NUM_SAMPLES, STEPS
from tryon.cli import fail
from tryon.engines.request import JobParams
from tryon.errors import PreflightError, TryOnError
from tryon.types import Box, Category, GarmentLength, MaskMode

log = logging.getLogger(__name__)

#: the garments ``tryon demo`` renders: (file in tryon/assets, category, label)
DEMO_GARMENTS: tuple[tuple[str, Category, str], ...] = (
    ("garment_product_tee.png", Category.UPPER_BODY, "tee"),
    ("garment_product_jeans.png", Category.LOWER_BODY, "jeans"),
    ("garment_product_dress.png", Category.DRESS, "dress"),
)
#: the people ``tryon demo`` dresses: (file in tryon/assets, caption); sources in LICENSE.md
DEMO_PEOPLE: tuple[tuple[str, str], ...] = (
    ("person_sports2d_man.jpg", "sports2d demo (BSD-3)"),
    ("person_sports2d_woman.jpg", "sports2d demo (BSD-3)"),
    ("person_astronaut.png", "astronaut (NASA, PD)"),
)


class BoxParam(click.ParamType):
    name = "x1,y1,x2,y2"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Box:
        if isinstance(value, Box):
            return value
        try:
            x1, y1, x2, y2 = (int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"expected four integers x1,y1,x2,y2, got {value!r}", param, ctx)
        if x2 <= x1 or y2 <= y1:
            self.fail(f"box {value!r} is empty: need x1 < x2 and y1 < y2", param, ctx)
        return Box(x1, y1, x2, y2)


@dataclass(frozen=True)
class PersonInfo:
    """A decoded photo with its analysis and the analysed person's silhouette (bool ``(H, W)``,
    or None when nobody was found)."""

    rgb: NDArray[np.uint8]
    analysis: Any  # tryon.vision.analysis.PhotoAnalysis
    person_mask: NDArray[np.bool_] | None


@dataclass(frozen=True)
class Prepared:
    """Everything an engine needs, plus what the overlay shows."""

    request: Any  # tryon.engines.base.RenderRequest
    placement: Any  # tryon.vision.placement.Placement
    garment_rgb: NDArray[np.uint8]
    garment_mask: NDArray[np.bool_]


def analyse_person(rgb: NDArray[np.uint8], categories: list[Category]) -> PersonInfo:
    """Pose + person mask for one photo (MediaPipe graphs live only for this call)."""
    from tryon.vision.analysis import analyze_photo
    from tryon.vision.pose import PoseEstimator

    with PoseEstimator() as pose:
        analysis = analyze_photo(rgb, pose_estimator=pose, categories=categories)
    # the analysed person's own silhouette, the same one the upload stores
    return PersonInfo(rgb=rgb, analysis=analysis, person_mask=analysis.person_mask_full())


def prepare(
    person: PersonInfo,
    garment_rgb: NDArray[np.uint8],
    garment_alpha: NDArray[np.uint8] | None,
    uploaded_mask: NDArray[np.bool_] | None,
    params: JobParams,
) -> Prepared:
    """Garment mask, then the worker's own builder (:func:`tryon.engines.request.build_request`):
    the placement from the pose with the category and length (or the explicit box, flagged
    authoritative), the target mask of ``params.mask``, the render parameters. Raises the typed
    pre-flight errors (pose_not_usable, no_person, ...) and InvalidMaskError."""
    from tryon.engines.request import PersonInputs, build_request
    from tryon.vision.masks import garment_mask

    gm = garment_mask(garment_rgb, alpha=garment_alpha, uploaded=uploaded_mask)
    built = build_request(params, PersonInputs(person.rgb, person.analysis, person.person_mask),
                          garment_rgb, gm.mask, params.seeds())
    return Prepared(request=built.request, placement=built.placement, garment_rgb=garment_rgb,
                    garment_mask=gm.mask)


@contextmanager
def progress_bar(label: str, enabled: bool = True) -> Iterator[Any]:
    """One tqdm bar on stderr driven by an engine's ``callback(step, total)``.

    The bar is created at the first callback, when the engine has said its total, so it never
    shows a placeholder total first.
    """
    from tqdm import tqdm

    bar: Any = None

    def callback(step: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=label, unit="step", disable=not enabled, leave=False,
                       dynamic_ncols=True)
        elif bar.total != total:
            bar.reset(total=total)
        bar.n = step
        bar.refresh()

    try:
        yield callback
    finally:
        if bar is not None:
            bar.close()


def _write_png(path: Path, rgb: NDArray[np.uint8]) -> None:
    from tryon.images import encode_png

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(rgb))


# --- render ------------------------------------------------------------------------------------


@click.command()
@click.option("--person", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Photo of the person (JPEG, PNG or WebP).")
@click.option("--garment", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Garment image; a PNG with transparency is cut out by its alpha.")
@click.option("--garment-mask", type=click.Path(dir_okay=False, path_type=Path),
              help="Garment mask (white = garment); default: alpha, else background removal.")
@click.option("--category", required=True, type=click.Choice([c.value for c in Category]))
@click.option("--length", default=GarmentLength.REGULAR.value, show_default=True,
              type=click.Choice([g.value for g in GarmentLength]))
@click.option("--engine", default=None,
              help="preview, anydoor or a plugin engine [default: anydoor when TRYON_WEIGHTS "
                   "is set, else preview].")
@click.option("--steps", type=click.IntRange(int(STEPS.low), int(STEPS.high)), default=None,
              help="Denoising steps (anydoor) [default: TRYON_DEFAULT_STEPS, 50].")
@click.option("--guidance", type=click.FloatRange(GUIDANCE.low, GUIDANCE.high,
                                                  min_open=GUIDANCE.low_open), default=None,
              help="Guidance scale (anydoor) [default: TRYON_DEFAULT_GUIDANCE, 4.5].")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
              help="Seed of the first sample; sample k uses seed+k.")
@click.option("--samples", type=click.IntRange(int(NUM_SAMPLES.low), int(NUM_SAMPLES.high)),
              default=1, show_default=True)
@click.option("--box", type=BoxParam(), default=None,
              help="Explicit placement box x1,y1,x2,y2 (pixels, end-exclusive) instead of the "
                   "pose rule; authoritative (the garment fills it).")
@click.option("--mask", "mask_mode", default=MaskMode.BOX.value, show_default=True,
              type=click.Choice([m.value for m in MaskMode]),
              help="Region to repaint: the whole box, or the person's shape inside it (as the "
                   "API's `mask`).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Result PNG; extra samples go to OUT-1.png, OUT-2.png, ...")
@click.option("--overlay", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the placement overlay (pose, box, target mask) as PNG.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def render(
    person: Path, garment: Path, garment_mask: Path | None, category: str, length: str,
    engine: str | None, steps: int | None, guidance: float | None, seed: int, samples: int,
    box: Box | None, mask_mode: str, out: Path, overlay: Path | None, quiet: bool,
) -> None:
    """Render one try-on: put GARMENT on PERSON and write OUT.

    \b
    Exit codes: 0 ok, 3 invalid input (bad image, pose not usable, ...),
    4 engine or weights unavailable, 130 interrupted.
    """
    from tryon.config import load_settings
    from tryon.engines.registry import get_engine
    from tryon.images import IntakeLimits, decode_mask, load_image_file

    try:
        settings = load_settings()
        # the engine first: a missing engine should fail before seconds of pose work
        eng = get_engine(engine, settings)
        limits = IntakeLimits.from_settings(settings)
        person_img = load_image_file(person, limits)
        garment_img = load_image_file(garment, limits, keep_alpha=True)
        uploaded = None
        if garment_mask is not None:
            try:
                data = garment_mask.read_bytes()
            except OSError as exc:
                from tryon.errors import InvalidInputError

                raise InvalidInputError(f"Cannot read {garment_mask}: {exc.strerror}") from None
            uploaded = decode_mask(data, garment_img.size, limits)
        cat = Category(category)
        info = analyse_person(person_img.rgb, [cat])
        params = JobParams(
            category=cat, length=GarmentLength(length), box=box, mask=MaskMode(mask_mode),
            steps=steps or settings.default_steps,
            guidance=guidance if guidance is not None else settings.default_guidance,
            num_samples=samples, seed=seed,
        )
        prep = prepare(info, garment_img.rgb, garment_img.alpha, uploaded, params)
        if overlay is not None:
            from tryon.vision.overlay import render_overlay

            overlay.parent.mkdir(parents=True, exist_ok=True)
            overlay.write_bytes(render_overlay(
                person_img.rgb, pose=info.analysis.pose, placement=prep.placement,
                target_mask=prep.request.target_mask,
            ))
        t0 = time.perf_counter()
        with progress_bar(eng.name, enabled=not quiet) as callback:
            result = eng.render(prep.request, callback=callback)
        elapsed = time.perf_counter() - t0
        paths = [out] + [out.with_name(f"{out.stem}-{k}{out.suffix}") for k in range(1, samples)]
        for path, image in zip(paths, result.images, strict=True):
            _write_png(path, image)
    except (TryOnError, KeyboardInterrupt) as exc:
        fail(exc)
        return
    click.echo(
        f"wrote {', '.join(str(p) for p in paths)} (engine={result.record.get('engine')}, "
        f"box={prep.placement.box.as_list()}, {elapsed:.2f} s)"
    )


# --- demo --------------------------------------------------------------------------------------

CELL = 256
LABEL_H = 28
HEADER_H = 30
GREY = (236, 236, 236)


def _asset_bytes(name: str) -> bytes:
    return (resources.files("tryon") / "assets" / name).read_bytes()


def _fit_cell(rgb: NDArray[np.uint8], size: int = CELL) -> NDArray[np.uint8]:
    """Letterbox ``rgb`` into a ``size`` x ``size`` light-grey cell."""
    import cv2

    h, w = rgb.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    small = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    cell = np.full((size, size, 3), GREY, dtype=np.uint8)
    y, x = (size - nh) // 2, (size - nw) // 2
    cell[y : y + nh, x : x + nw] = small
    return cell


def _on_grey(rgb: NDArray[np.uint8], alpha: NDArray[np.uint8] | None) -> NDArray[np.uint8]:
    if alpha is None:
        return rgb
    a = alpha.astype(np.float32)[..., None] / 255.0
    bg = np.array(GREY, dtype=np.float32)
    return np.rint(rgb * a + bg * (1.0 - a)).astype(np.uint8)


def _text(img: NDArray[np.uint8], lines: list[str], origin: tuple[int, int], *,
          scale: float = 0.45, colour: tuple[int, int, int] = (20, 20, 20)) -> None:
    import cv2

    x, y = origin
    for line in lines:
        cv2.putText(img, line, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)
        y += round(40 * scale)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for word in words:
        if len(cur) + len(word) + 1 > width and cur:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return lines + ([cur] if cur else [])


def _error_cell(exc: TryOnError) -> NDArray[np.uint8]:
    cell = np.full((CELL, CELL, 3), (250, 228, 228), dtype=np.uint8)
    _text(cell, [f"error: {exc.code}"], (10, 26), scale=0.55, colour=(170, 20, 20))
    _text(cell, _wrap(exc.message, 34)[:12], (10, 52), scale=0.4)
    return cell


@dataclass
class DemoRow:
    label: str
    cells: list[NDArray[np.uint8]]
    captions: list[str]


def contact_sheet(columns: list[str], rows: list[DemoRow]) -> NDArray[np.uint8]:
    """Rows of labelled ``CELL``-sized images under a header of column names (uint8 RGB)."""
    ncol = len(columns)
    height = HEADER_H + len(rows) * (CELL + LABEL_H)
    sheet = np.full((height, ncol * CELL, 3), 255, dtype=np.uint8)
    for c, name in enumerate(columns):
        _text(sheet, [name], (c * CELL + 8, 21), scale=0.6)
    for r, row in enumerate(rows):
        y = HEADER_H + r * (CELL + LABEL_H)
        for c, (cell, caption) in enumerate(zip(row.cells, row.captions, strict=True)):
            sheet[y : y + CELL, c * CELL : (c + 1) * CELL] = cell
            _text(sheet, [caption], (c * CELL + 6, y + CELL + 19), scale=0.42)
    return sheet


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: $TRYON_DATA_DIR/demo, i.e. var/demo].")
@click.option("--steps", type=click.IntRange(int(STEPS.low), int(STEPS.high)), default=None,
              help="Denoising steps for anydoor (only when weights are configured).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def demo(out_dir: Path | None, steps: int | None, quiet: bool) -> None:
    """Dress the shipped sample people in each shipped garment; write a contact sheet.

    Uses the preview engine (and anydoor too when TRYON_WEIGHTS is set). One row per person
    and engine: the photo, then one result per garment, captioned with its category and time.
    A garment that cannot be placed on a photo (the astronaut is waist-up: no trousers, no
    dress) shows the typed error the API would give instead of a result.
    """
    from tryon.config import load_settings
    from tryon.engines.registry import ANYDOOR, PREVIEW, get_engine
    from tryon.images import IntakeLimits, normalize_upload

    try:
        t_start = time.perf_counter()
        settings = load_settings()
        out_dir = out_dir or settings.data_dir / "demo"
        engine_names = [PREVIEW] + ([ANYDOOR] if settings.weights else [])
        engines = [get_engine(name, settings) for name in engine_names]
        limits = IntakeLimits.from_settings(settings)
        demo_steps = steps or settings.default_steps
        garments = [(normalize_upload(_asset_bytes(f), limits, keep_alpha=True), cat, label)
                    for f, cat, label in DEMO_GARMENTS]
        rows = [DemoRow("garments", [np.full((CELL, CELL, 3), 255, np.uint8)]
                        + [_fit_cell(_on_grey(g.rgb, g.alpha)) for g, _, _ in garments],
                        ["garment"] + [f"{label} ({cat.value})" for _, cat, label in garments])]
        for person_file, caption in DEMO_PEOPLE:
            photo = normalize_upload(_asset_bytes(person_file), limits)
            info = analyse_person(photo.rgb, [cat for _, cat, _ in DEMO_GARMENTS])
            stem = Path(person_file).stem.removeprefix("person_")
            for eng in engines:
                cells, captions = [_fit_cell(photo.rgb)], [caption]
                for garment, category, label in garments:
                    try:
                        params = JobParams(category=category, steps=demo_steps,
                                           guidance=settings.default_guidance)
                        prep = prepare(info, garment.rgb, garment.alpha, None, params)
                        request = prep.request
                        t0 = time.perf_counter()
                        with progress_bar(f"{stem}/{label}/{eng.name}",
                                          enabled=not quiet) as callback:
                            result = eng.render(request, callback=callback)
                    except PreflightError as exc:
                        cells.append(_error_cell(exc))
                        captions.append(f"{category.value}: {exc.code}")
                        click.echo(f"{stem:16s} {label:6s} {category.value:11s} refused: "
                                   f"{exc.code}: {exc.message}")
                        continue
                    dt = time.perf_counter() - t0
                    path = out_dir / f"{stem}-{label}-{eng.name}.png"
                    _write_png(path, result.images[0])
                    cells.append(_fit_cell(result.images[0]))
                    captions.append(f"{category.value} {eng.name} {dt:.2f} s")
                    click.echo(f"{stem:16s} {label:6s} {category.value:11s} {eng.name}: "
                               f"{dt:.2f} s -> {path}")
                rows.append(DemoRow(f"{stem}/{eng.name}", cells, captions))
        columns = ["person"] + [f"{label}: {cat.value}" for _, cat, label in DEMO_GARMENTS]
        sheet_path = out_dir / "contact_sheet.png"
        _write_png(sheet_path, contact_sheet(columns, rows))
    except (TryOnError, KeyboardInterrupt) as exc:
        fail(exc)
        return
    click.echo(f"contact sheet: {sheet_path} ({time.perf_counter() - t_start:.1f} s in total)")
