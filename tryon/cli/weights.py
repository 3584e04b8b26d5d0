"""``tryon weights``: convert, fetch and inspect AnyDoor weights.

Heavy imports (torch, diffusers) happen inside the commands so ``tryon --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from tryon.cli import fail

if TYPE_CHECKING:
    from tryon.anydoor.config import AnyDoorConfig

log = logging.getLogger(__name__)

_CONFIG_HELP = (
    "Model sizes: 'official' (default), 'tiny' (tests), or a JSON file of AnyDoorConfig fields."
)


def _load_config(value: str) -> AnyDoorConfig:
    from tryon.anydoor.config import AnyDoorConfig
    from tryon.errors import ConfigError

    if value == "official":
        return AnyDoorConfig()
    if value == "tiny":
        return AnyDoorConfig.tiny()
    path = Path(value)
    if not path.is_file():
        raise ConfigError(
            f"--config must be 'official', 'tiny' or a JSON file; {value!r} is none of these."
        )
    try:
        return AnyDoorConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a valid AnyDoor config: {exc}") from exc


@click.group()
def weights() -> None:
    """Convert, download and inspect AnyDoor model weights."""


@weights.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "--dinov2",
    "dinov2",
    type=click.Path(path_type=Path),
    default=None,
    help="Meta's dinov2_vitg14_pretrain.pth, to fill or override the checkpoint's DINOv2.",
)
@click.option("--config", "config_name", default="official", show_default=True, help=_CONFIG_HELP)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    default="float32",
    show_default=True,
    help="dtype of the saved weights.",
)
@click.option("--overwrite", is_flag=True, help="Replace DST if it already holds files.")
def convert(
    src: Path, dst: Path, dinov2: Path | None, config_name: str, dtype: str, overwrite: bool
) -> None:
    """Convert the released AnyDoor checkpoint SRC (.ckpt or .safetensors) into directory DST."""
    from tryon.anydoor.weights import load_official_checkpoint, save_pretrained, weights_checksum
    from tryon.errors import TryOnError

    try:
        config = _load_config(config_name)
        components = load_official_checkpoint(src, config, dinov2_path=dinov2, dtype=dtype)
        save_pretrained(components, dst, overwrite=overwrite)
        digest = weights_checksum(dst)
    except TryOnError as exc:
        fail(exc)
        return
    click.echo(f"wrote {dst} (weights sha256 {digest})")


@weights.command()
@click.option(
    "--dest",
    type=click.Path(path_type=Path),
    default=None,
    help="Directory for the downloaded file (default: TRYON_DATA_DIR/weights).",
)
@click.option("--revision", default=None, help="Git revision of the Space (default: main).")
@click.option(
    "--url",
    default=None,
    help="Download from this URL instead (a mirror or a direct link to the checkpoint).",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the partial download waits between tries (default: TRYON_DATA_DIR/downloads).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fetch(
    dest: Path | None, revision: str | None, url: str | None, cache_dir: Path | None, quiet: bool
) -> None:
    """Download the released AnyDoor checkpoint (needs network access to the Hugging Face Hub).

    An interrupted download resumes when the command is run again; --dest receives the file
    only once it is complete. Without network it exits with status 6 (network_unavailable).
    """
    from tqdm import tqdm

    from tryon.anydoor.fetch import fetch as fetch_weights
    from tryon.config import load_settings
    from tryon.errors import TryOnError

    bar: tqdm | None = None

    def progress(done: int, total: int | None) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, desc="download",
                       disable=quiet, leave=False)
        else:
            bar.update(done - bar.n)

    try:
        settings = load_settings()
        target = dest if dest is not None else settings.data_dir / "weights"
        path = fetch_weights(
            target,
            cache_dir=cache_dir if cache_dir is not None else settings.data_dir / "downloads",
            revision=revision,
            url=url,
            progress=progress,
        )
    except TryOnError as exc:
        if bar is not None:
            bar.close()
        fail(exc)
        return
    if bar is not None:
        bar.close()
    click.echo(f"downloaded {path}")
    click.echo(f"next: tryon weights convert {path} <output-dir>")


@weights.command()
@click.argument("path", type=click.Path(path_type=Path))
def info(path: Path) -> None:
    """Print facts about a weights directory or checkpoint file as JSON (builds no model)."""
    from tryon.anydoor.weights import describe
    from tryon.errors import TryOnError

    try:
        facts = describe(path)
    except TryOnError as exc:
        fail(exc)
        return
    click.echo(json.dumps(facts, indent=2, sort_keys=True))
