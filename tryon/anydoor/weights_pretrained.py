"""Our AnyDoor weights directory: save, load (strictly, tensor by tensor) and checksum.

Layout written by :func:`save_pretrained`: diffusers and transformers subfolders (``unet/``,
``controlnet/``, ``vae/``, ``scheduler/``, ``id_extractor/dinov2/`` +
``id_extractor/projector.safetensors``) and ``anydoor_config.json``. :func:`load_pretrained`
memory-maps every safetensors file and copies it into modules built empty, one tensor at a
time, so loading peaks near one copy of the weights in the target dtype.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.weights_convert import ConvertedCheckpoint, check_converted, finish_loading
from tryon.anydoor.weights_io import (
    Checkpoint,
    assign_state_dicts,
    read_checkpoint,
    resolve_dtype,
)
from tryon.errors import WeightsError, WeightsNotFoundError

if TYPE_CHECKING:
    from tryon.anydoor.models import AnyDoorComponents

log = logging.getLogger(__name__)

CONFIG_FILENAME = "anydoor_config.json"
CHECKSUM_FILENAME = "weights_checksum.json"
PROJECTOR_FILENAME = "projector.safetensors"

_MAX_LISTED = 10

def _safetensors_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.safetensors") if p.is_file())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_checksum(directory: str | os.PathLike[str]) -> str:
    """sha256 over every ``*.safetensors`` file of a saved directory (names and contents), or
    the plain sha256 of a single checkpoint file (the released ``.ckpt``/``.safetensors``).

    For reproducibility records. Per-file digests of a directory are cached in
    ``weights_checksum.json`` keyed by size and mtime, so repeated calls on multi-GB weights
    cost a stat per file; a single file is hashed in full on every call.
    """
    directory = Path(directory)
    if directory.is_file():
        return _sha256(directory)
    files = _safetensors_files(directory)
    if not files:
        raise WeightsNotFoundError(f"No .safetensors files under {directory}.")
    cache_path = directory / CHECKSUM_FILENAME
    try:
        cache = json.loads(cache_path.read_text())
        cached_files = cache.get("files", {}) if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cached_files = {}
    entries: dict[str, dict[str, Any]] = {}
    changed = False
    for path in files:
        rel = path.relative_to(directory).as_posix()
        st = path.stat()
        hit = cached_files.get(rel)
        if (
            isinstance(hit, dict)
            and hit.get("size") == st.st_size
            and hit.get("mtime_ns") == st.st_mtime_ns
        ):
            entries[rel] = hit
        else:
            entries[rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256(path)}
            changed = True
    total = hashlib.sha256()
    for rel in sorted(entries):
        total.update(f"{rel}\0{entries[rel]['sha256']}\n".encode())
    digest = total.hexdigest()
    if changed or set(cached_files) != set(entries):
        try:
            cache_path.write_text(
                json.dumps({"sha256": digest, "files": entries}, indent=2, sort_keys=True)
            )
        except OSError:  # read-only weights (a mounted volume) are fine: just no cache
            log.debug("could not write %s", cache_path)
    return digest


def save_pretrained(
    components: AnyDoorComponents, directory: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``components`` as diffusers/transformers subfolders + ``anydoor_config.json``.

    Written to a temporary sibling and renamed into place, so a crash never leaves a
    half-written directory that :func:`load_pretrained` would accept. Returns the directory.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()) and not overwrite:
        raise WeightsError(
            f"{directory} exists and is not empty: choose another directory or overwrite."
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        # diffusers' mixins are invisible to mypy: save through Any
        parts: dict[str, Any] = {
            "unet": components.unet,
            "controlnet": components.controlnet,
            "vae": components.vae,
        }
        for sub, model in parts.items():
            model.save_pretrained(tmp / sub, safe_serialization=True)
        scheduler: Any = components.scheduler
        scheduler.save_pretrained(tmp / "scheduler")
        ide = components.id_extractor
        ide.dino.save_pretrained(tmp / "id_extractor" / "dinov2", safe_serialization=True)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in ide.projector.state_dict().items()},
            str(tmp / "id_extractor" / PROJECTOR_FILENAME),
        )
        (tmp / CONFIG_FILENAME).write_text(components.config.to_json() + "\n")
        weights_checksum(tmp)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved AnyDoor weights to %s", directory)
    return directory


def _read_folder(folder: Path) -> tuple[dict[str, Tensor], list[Checkpoint]]:
    """The tensors of every ``*.safetensors`` file in ``folder`` (one file or the shards of a
    sharded save), memory-mapped, with the checkpoints they come from."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise WeightsError(f"{folder} holds no .safetensors weights.")
    out: dict[str, Tensor] = {}
    sources = []
    for f in files:
        checkpoint = read_checkpoint(f)
        out.update(checkpoint.tensors)
        sources.append(checkpoint)
    return out, sources


#: transformers 5 writes DINOv2 under the Hub's historical names and renames them on load
_HUB_DINOV2 = re.compile(r"^(encoder\.layer\.\d+\.)(.+)$")
_HUB_DINOV2_RENAMES = {
    "attention.attention.query": "attention.q_proj",
    "attention.attention.key": "attention.k_proj",
    "attention.attention.value": "attention.v_proj",
    "attention.output.dense": "attention.o_proj",
    "mlp.weights_out": "mlp.down_proj",
}


def _dinov2_from_hub_names(hub: dict[str, Tensor]) -> dict[str, Tensor]:
    """A transformers DINOv2 folder's tensors -> our ``Dinov2Model``'s parameter names.

    We read the safetensors ourselves (instead of ``Dinov2Model.from_pretrained``) so the
    folder is memory-mapped and copied once, like every other module. The fused SwiGLU
    ``mlp.weights_in`` is split into ``gate_proj`` (first half) and ``up_proj`` as views.
    Names this table does not know pass through unchanged and meet the strict check.
    """
    out: dict[str, Tensor] = {}
    for key, value in hub.items():
        match = _HUB_DINOV2.match(key)
        if match is None:
            out[key] = value
            continue
        layer, rest = match.groups()
        stem, _, kind = rest.rpartition(".")
        if stem == "mlp.weights_in" and value.shape[0] % 2 == 0:
            gate, up = value.chunk(2, dim=0)
            out[f"{layer}mlp.gate_proj.{kind}"] = gate
            out[f"{layer}mlp.up_proj.{kind}"] = up
        elif stem in _HUB_DINOV2_RENAMES:
            out[f"{layer}{_HUB_DINOV2_RENAMES[stem]}.{kind}"] = value
        else:
            out[key] = value
    return out


def is_pretrained_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / CONFIG_FILENAME).is_file()


def load_pretrained(
    directory: str | os.PathLike[str],
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
) -> AnyDoorComponents:
    """Load a directory written by :func:`save_pretrained`, strictly.

    The modules are built empty from ``anydoor_config.json``; every file is memory-mapped and
    copied in tensor by tensor, in ``dtype`` (default float32), so the peak stays near one
    copy of the weights in ``dtype``.
    """
    from diffusers import DDIMScheduler

    from tryon.anydoor.models import build_components, zero_controlnet_conv_in

    directory = Path(directory)
    if not directory.is_dir():
        raise WeightsNotFoundError(f"No weights directory at {directory}.")
    config_path = directory / CONFIG_FILENAME
    if not config_path.is_file():
        raise WeightsError(f"{directory} has no {CONFIG_FILENAME}: not a saved AnyDoor directory.")
    try:
        config = AnyDoorConfig.from_dict(json.loads(config_path.read_text()))
    except (ValueError, TypeError) as exc:
        raise WeightsError(f"{config_path} is not a valid AnyDoor config: {exc}") from exc

    target = resolve_dtype(dtype)
    dino_dir = directory / "id_extractor" / "dinov2"
    if not (dino_dir / "config.json").is_file():
        raise WeightsError(f"{dino_dir} is missing or has no config.json.")
    dino, sources = _read_folder(dino_dir)
    ide = {f"dino.{k}": v for k, v in _dinov2_from_hub_names(dino).items()}
    projector = directory / "id_extractor" / PROJECTOR_FILENAME
    if not projector.is_file():
        raise WeightsError(f"{projector} is missing.")
    projector_file = read_checkpoint(projector)
    sources.append(projector_file)
    ide.update({f"projector.{k}": v for k, v in projector_file.tensors.items()})
    state_dicts: dict[str, dict[str, Tensor]] = {"id_extractor": ide}
    for name in ("unet", "controlnet", "vae"):
        state_dicts[name], found = _read_folder(directory / name)
        sources += found
    converted = ConvertedCheckpoint(state_dicts=state_dicts, origin={})
    components = build_components(config, empty=True)
    modules = components.modules()
    check_converted(str(directory), modules, converted)
    assign_state_dicts(modules, converted.state_dicts, target, sources)
    controlnet: Any = components.controlnet
    conv_in = controlnet.conv_in
    if bool(conv_in.weight.any()) or (conv_in.bias is not None and bool(conv_in.bias.any())):
        log.warning(
            "%s: controlnet conv_in is not zero; zeroing it (AnyDoor ignores x_t there)", directory
        )
        zero_controlnet_conv_in(components.controlnet)
    scheduler_dir = directory / "scheduler"
    if scheduler_dir.is_dir():
        components.scheduler = DDIMScheduler.from_pretrained(scheduler_dir)
    return finish_loading(components, device)
