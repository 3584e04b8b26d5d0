"""``tryon train`` and ``tryon evaluate``: fine-tune AnyDoor and score it on a paired split.

Heavy imports (torch, diffusers, accelerate) happen inside the commands so ``tryon --help``
stays fast. For several GPUs or nodes run under accelerate::

    accelerate launch -m tryon.cli train --config run.yaml

Ctrl-C (SIGINT) stops either command with exit code 130 (see :mod:`tryon.cli`), not click's
"Aborted!" and 1; a stopped training keeps its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from tryon.cli import EXIT_INTERRUPTED, fail

log = logging.getLogger(__name__)


def _interrupted(what: str) -> NoReturn:
    click.echo(f"\ninterrupted: {what}", err=True)
    sys.exit(EXIT_INTERRUPTED)


@click.command()
@click.option("--config", "config_path", required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training YAML (see docs/training.md).")
@click.option("--resume", default=None,
              help="'latest' (newest checkpoint under output_dir, or a fresh start) or a "
                   "checkpoint folder; overrides the config's `resume`.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Override the config's output_dir.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Override train.steps.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def train(config_path: Path, resume: str | None, output_dir: Path | None, steps: int | None,
          quiet: bool) -> None:
    """Train or fine-tune AnyDoor from a YAML config; writes checkpoints and an engine folder.

    Ctrl-C exits with code 130 and keeps the last checkpoint: continue with --resume latest.
    """
    from tryon.errors import TryOnError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import dataclasses

        from tryon.anydoor.training.trainconfig import TrainConfig

        config = TrainConfig.from_yaml(config_path)
        changes: dict[str, Any] = {}
        if resume is not None:
            changes["resume"] = resume
        if output_dir is not None:
            changes["output_dir"] = str(output_dir)
        if steps is not None:
            changes["train"] = dataclasses.replace(config.train, steps=steps)
        config = config.with_overrides(**changes)
        result = _run(config, quiet)
    except TryOnError as exc:
        fail(exc)
        return
    except KeyboardInterrupt:
        _interrupted("training stopped; the last checkpoint is kept (continue with --resume latest)")
    if int(os.environ.get("RANK", "0")) != 0:
        return  # one report per run, from the main process
    click.echo(f"trained to step {result.step}; checkpoint {result.checkpoint}")
    if result.export_dir is not None:
        click.echo(f"exported model: {result.export_dir} (set TRYON_WEIGHTS to it)")


def _run(config: Any, quiet: bool) -> Any:
    from tqdm import tqdm

    from tryon.anydoor.training.loop import train as run_training

    bar: list[Any] = []

    def progress(step: int, total: int, loss: float) -> None:
        if not bar:
            bar.append(tqdm(total=total, initial=step - 1, desc="train", unit="step",
                            disable=quiet, dynamic_ncols=True))
        bar[0].update(step - bar[0].n)
        bar[0].set_postfix(loss=f"{loss:.4f}", refresh=False)

    try:
        return run_training(config, progress=progress)
    finally:
        if bar:
            bar[0].close()


@click.command()
@click.option("--weights", required=True, type=click.Path(exists=True, path_type=Path),
              help="Model folder (e.g. a training run's model/) or the released .ckpt.")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Paired split folder (default layout: VITON-HD test).")
@click.option("--layout", type=click.Choice(["viton_hd", "dresscode", "video", "image_mask"]),
              default="viton_hd", show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON report to write.")
@click.option("--steps", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--guidance", type=click.FloatRange(0.0, 30.0, min_open=True), default=4.5,
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Evaluate the first N pairs.")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available).")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None,
              help="Default: float16 on CUDA, float32 on CPU.")
@click.option("--dinov2", type=click.Path(exists=True, path_type=Path), default=None,
              help="DINOv2 for the DINO score (transformers folder or Meta .pth); default: the "
                   "model's own DINOv2.")
@click.option("--no-dino", is_flag=True, help="Skip the DINO score.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def evaluate(weights: Path, data: Path, layout: str, out: Path, steps: int, guidance: float,
             seed: int, limit: int | None, device: str | None, dtype: str | None,
             dinov2: Path | None, no_dino: bool, quiet: bool) -> None:
    """Score a model on a paired split: SSIM, PSNR, L1 in the target box and DINO score.

    Ctrl-C exits with code 130 without writing the report.
    """
    from tryon.errors import TryOnError

    try:
        import torch
        from tqdm import tqdm

        from tryon.anydoor.pipeline import AnyDoorPipeline
        from tryon.anydoor.training.evaluate import DinoScorer, evaluate_pairs, load_pairs
        from tryon.anydoor.weights import load_weights

        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dt = getattr(torch, dtype) if dtype else (torch.float16 if dev.type == "cuda" else torch.float32)
        components = load_weights(weights)
        pipe = AnyDoorPipeline(components, device=dev, dtype=dt)
        scorer = None
        if not no_dino:
            if dinov2 is not None:
                from tryon.anydoor.config import AnyDoorConfig
                from tryon.anydoor.training.init import load_dinov2

                model = load_dinov2(dinov2, AnyDoorConfig()).to(dev).eval()
                scorer = DinoScorer(model, 224, dev)
            else:
                scorer = DinoScorer(components.id_extractor.dino, components.config.reference_size, dev)
        pairs = list(load_pairs(str(data), layout, limit=limit, seed=seed))
        with tqdm(total=len(pairs), desc="evaluate", unit="pair", disable=quiet) as bar:
            report = evaluate_pairs(pipe, pairs, num_inference_steps=steps, guidance_scale=guidance,
                                    seed=seed, dino=scorer, on_pair=lambda _i: bar.update(1))
    except TryOnError as exc:
        fail(exc)
        return
    except KeyboardInterrupt:
        _interrupted("evaluation stopped; no report written")
    body = report.to_dict()
    body["weights"] = str(weights)
    body["data"] = str(data)
    body["layout"] = layout
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(body, indent=2) + "\n")
    m = report.mean
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    click.echo(f"{report.num_pairs} pairs: ssim {fmt(m['ssim'])} psnr {fmt(m['psnr'])} "
               f"l1 {fmt(m['l1'])} dino {fmt(m['dino'])} -> {out}")
