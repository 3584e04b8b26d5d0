"""AnyDoor weights: one entry point over the released checkpoint and our directory format.

Two on-disk forms are understood:

* the **released checkpoint** (``epoch=1-step=8687.ckpt``, or a bare ``.safetensors`` state
  dict with the same keys): converted and loaded strictly by
  :func:`~tryon.anydoor.weights_convert.load_official_checkpoint`;
* **our directory** (:func:`~tryon.anydoor.weights_pretrained.save_pretrained` /
  :func:`~tryon.anydoor.weights_pretrained.load_pretrained`): diffusers and transformers
  subfolders and ``anydoor_config.json``.

The work is split by responsibility: :mod:`tryon.anydoor.weights_io` reads files
(memory-mapped) and copies them into modules tensor by tensor,
:mod:`tryon.anydoor.weights_convert` converts the released layout and loads it
strictly, :mod:`tryon.anydoor.weights_pretrained` saves, loads and checksums our
directory. This module re-exports their public names, so ``from tryon.anydoor.weights import
load_weights, save_pretrained`` keeps working, and picks the loader for a path
(:func:`load_weights`).

Nothing here downloads anything: :mod:`tryon.anydoor.fetch` does, for ``tryon weights fetch``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.weights_convert import (
    CONTROLNET_PREFIX,
    CONTROLNET_UNUSED,
    DINOV2_PREFIX,
    IGNORED_KEY_PATTERN,
    PROJECTOR_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    ConvertedCheckpoint,
    check_against,
    convert_dinov2_state_dict,
    convert_official_state_dict,
    load_official_checkpoint,
    load_official_state_dict,
)
from tryon.anydoor.weights_io import Checkpoint, read_checkpoint, read_state_dict
from tryon.anydoor.weights_pretrained import (
    CHECKSUM_FILENAME,
    CONFIG_FILENAME,
    PROJECTOR_FILENAME,
    _safetensors_files,
    is_pretrained_dir,
    load_pretrained,
    save_pretrained,
    weights_checksum,
)
from tryon.errors import WeightsError, WeightsNotFoundError

if TYPE_CHECKING:
    from tryon.anydoor.models import AnyDoorComponents

__all__ = [
    "CHECKSUM_FILENAME",
    "CONFIG_FILENAME",
    "CONTROLNET_PREFIX",
    "CONTROLNET_UNUSED",
    "DINOV2_PREFIX",
    "IGNORED_KEY_PATTERN",
    "PROJECTOR_FILENAME",
    "PROJECTOR_PREFIX",
    "UNET_PREFIX",
    "VAE_PREFIX",
    "Checkpoint",
    "ConvertedCheckpoint",
    "check_against",
    "convert_dinov2_state_dict",
    "convert_official_state_dict",
    "describe",
    "is_pretrained_dir",
    "load_official_checkpoint",
    "load_official_state_dict",
    "load_pretrained",
    "load_weights",
    "read_checkpoint",
    "read_state_dict",
    "save_pretrained",
    "weights_checksum",
]

log = logging.getLogger(__name__)

def load_weights(
    path: str | os.PathLike[str],
    *,
    config: AnyDoorConfig | None = None,
    dinov2_path: str | os.PathLike[str] | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
) -> AnyDoorComponents:
    """Load weights from our directory format or the released ``.ckpt``/``.safetensors``.

    ``config`` and ``dinov2_path`` apply to the released file only (a directory carries its
    own config).
    """
    if not str(path):
        raise WeightsNotFoundError()
    p = Path(path)
    if not p.exists():
        raise WeightsNotFoundError(
            f"No weights at {p}: set TRYON_WEIGHTS to a directory written by "
            "`tryon weights convert`, or to the released AnyDoor .ckpt "
            "(`tryon weights fetch` downloads it where a network is available)."
        )
    if p.is_dir():
        if config is not None and is_pretrained_dir(p):
            log.debug("ignoring the config argument: %s carries its own", p)
        return load_pretrained(p, dtype=dtype, device=device)
    return load_official_checkpoint(p, config, dinov2_path=dinov2_path, dtype=dtype, device=device)


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Cheap facts about a weights path, for ``tryon weights info`` (no modules are built)."""
    p = Path(path)
    if not p.exists():
        raise WeightsNotFoundError(f"No weights at {p}.")
    if p.is_dir():
        if not is_pretrained_dir(p):
            raise WeightsError(f"{p} has no {CONFIG_FILENAME}: not a saved AnyDoor directory.")
        files = _safetensors_files(p)
        return {
            "format": "directory",
            "path": str(p),
            "config": json.loads((p / CONFIG_FILENAME).read_text()),
            "files": [f.relative_to(p).as_posix() for f in files],
            "bytes": sum(f.stat().st_size for f in files),
            "weights_checksum": weights_checksum(p),
        }
    sd = read_state_dict(p)
    counts: dict[str, int] = {}
    for key, value in sd.items():
        prefix = next(
            (
                x
                for x in (
                    UNET_PREFIX,
                    CONTROLNET_PREFIX,
                    VAE_PREFIX,
                    DINOV2_PREFIX,
                    PROJECTOR_PREFIX,
                )
                if key.startswith(x)
            ),
            "other",
        )
        counts[prefix] = counts.get(prefix, 0) + value.numel()
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in sd.values()})
    return {
        "format": "checkpoint",
        "path": str(p),
        "tensors": len(sd),
        "parameters": counts,
        "dtypes": dtypes,
    }
