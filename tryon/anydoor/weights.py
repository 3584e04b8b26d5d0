"""AnyDoor weights: convert the released checkpoint, save and load our format.

Two on-disk forms are understood:

* the **released checkpoint** (``epoch=1-step=8687.ckpt``): one PyTorch-Lightning file whose
  ``state_dict`` holds the LDM UNet (``model.diffusion_model.``), the cldm ControlNet
  (``control_model.``), the VAE (``first_stage_model.``), DINOv2 in Meta's layout
  (``cond_stage_model.model.``) and the projector (``cond_stage_model.projector.``), plus DDPM
  buffers we ignore. A bare ``.safetensors`` state dict with the same keys works too.
  :func:`load_official_checkpoint` converts it with diffusers' single-file converters and our
  DINOv2 key mapping, and loads every module strictly;
* **our directory** (:func:`save_pretrained` / :func:`load_pretrained`): diffusers and
  transformers subfolders (``unet/``, ``controlnet/``, ``vae/``, ``scheduler/``,
  ``id_extractor/dinov2/`` + ``id_extractor/projector.safetensors``) and ``anydoor_config.json``.

"Strict" means: every tensor of the file lands in a module (except the documented ignored
buffers and the ControlNet's unused ``input_blocks.0.0``), no module tensor is left without a
value, and shapes agree; otherwise :class:`~tryon.errors.WeightsError` names the first keys.

Nothing here downloads anything: :mod:`tryon.anydoor.fetch` does, for ``tryon weights fetch``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from tryon.anydoor.config import AnyDoorConfig
from tryon.errors import WeightsError, WeightsNotFoundError

if TYPE_CHECKING:
    from tryon.anydoor.models import AnyDoorComponents

log = logging.getLogger(__name__)

CONFIG_FILENAME = "anydoor_config.json"
CHECKSUM_FILENAME = "weights_checksum.json"
PROJECTOR_FILENAME = "projector.safetensors"

UNET_PREFIX = "model.diffusion_model."
CONTROLNET_PREFIX = "control_model."
VAE_PREFIX = "first_stage_model."
DINOV2_PREFIX = "cond_stage_model.model."
PROJECTOR_PREFIX = "cond_stage_model.projector."

#: LatentDiffusion's schedule buffers: recomputed by our scheduler from the config
IGNORED_KEY_PATTERN = re.compile(
    r"^(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_\w+|log_one_minus_alphas_cumprod"
    r"|posterior_\w+|logvar)$"
)
#: random init in the release, never trained nor used (reference pitfall 1); we zero conv_in
CONTROLNET_UNUSED = ("input_blocks.0.0.weight", "input_blocks.0.0.bias")

_MAX_LISTED = 10


# --- reading files -------------------------------------------------------------------------


class _Stub:
    """Stands in for any class a pickle names that is not on the tensor allowlist."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Stub:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _restricted_pickle_module() -> Any:
    """A ``pickle_module`` for ``torch.load`` that never executes code from the file.

    Lightning checkpoints may pickle callback or hyper-parameter objects that
    ``weights_only=True`` refuses. Instead of trusting the file, every global outside torch's
    own weights-only allowlist is replaced by an inert stub class: the tensors come back, the
    rest becomes harmless placeholders we never look at.
    """
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed: dict[str, Any] = dict(_get_allowed_globals())
    except (ImportError, AttributeError):  # private API moved: fall back to the essentials
        import collections

        allowed = {
            "collections.OrderedDict": collections.OrderedDict,
            "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
            "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
        }
    stubs: dict[str, type] = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            full = f"{module}.{name}"
            if full in allowed:
                return allowed[full]
            if full not in stubs:
                stubs[full] = type(name, (_Stub,), {"__module__": "tryon._stub." + module})
            return stubs[full]

    class Module:
        __name__ = "tryon_restricted_pickle"

    Module.Unpickler = Unpickler  # type: ignore[attr-defined]
    Module.load = staticmethod(lambda f, **kw: Unpickler(f, **kw).load())  # type: ignore[attr-defined]
    return Module


def _torch_load(path: Path) -> Any:
    # mmap: the optimizer states a Lightning file carries are never read into memory
    attempts: list[dict[str, Any]] = [
        {"weights_only": True, "mmap": True},
        {"weights_only": True},
        {"weights_only": False, "pickle_module": _restricted_pickle_module(), "mmap": True},
        {"weights_only": False, "pickle_module": _restricted_pickle_module()},
    ]
    last: Exception | None = None
    for kwargs in attempts:
        try:
            obj = torch.load(path, map_location="cpu", **kwargs)
        except (
            pickle.UnpicklingError,
            RuntimeError,
            ValueError,
            TypeError,
            AttributeError,
            EOFError,
        ) as exc:
            last = exc
            continue
        if not kwargs["weights_only"]:
            log.warning(
                "%s holds non-tensor objects that weights-only loading refuses; read it with "
                "a restricted unpickler (non-tensor objects replaced by inert stubs)",
                path,
            )
        return obj
    raise WeightsError(f"{path} is not a readable PyTorch checkpoint: {last}")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a flat ``{name: tensor}`` state dict from a ``.ckpt``/``.pth``/``.pt``/``.bin``
    (``torch.load``, CPU, weights-only where the file allows) or ``.safetensors`` file.

    A Lightning checkpoint's ``state_dict`` entry is used when present (the optimizer states
    and other entries are ignored); otherwise the file must be a bare state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"No weights file at {path}.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path} is not a readable safetensors file: {exc}") from exc
    else:
        obj = _torch_load(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} does not hold a state dict (found {type(obj).__name__}).")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(
            f"{path}: state dict entries that are not tensors: {bad[:_MAX_LISTED]}",
            bad_entries=[str(k) for k in bad[:_MAX_LISTED]],
        )
    return dict(obj)


# --- conversion --------------------------------------------------------------------------------


@dataclass
class ConvertedCheckpoint:
    """The official state dict split and renamed per module, with bookkeeping for errors.

    ``state_dicts[module]`` uses the module's own parameter names (``id_extractor`` keys are
    ``dino.*`` and ``projector.*``); ``origin[module][name]`` is the checkpoint key it came
    from; ``unused`` lists checkpoint keys no module takes.
    """

    state_dicts: dict[str, dict[str, Tensor]]
    origin: dict[str, dict[str, str]]
    unused: list[str] = field(default_factory=list)


_DINO_BLOCK = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)$")
_DINO_BLOCK_RENAMES = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "attn.proj.weight": "attention.o_proj.weight",
    "attn.proj.bias": "attention.o_proj.bias",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
    "mlp.w3.weight": "mlp.down_proj.weight",
    "mlp.w3.bias": "mlp.down_proj.bias",
    # plain-MLP variants (ViT-S/B/L) for completeness
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_DINO_TOP_RENAMES = {
    "cls_token": "embeddings.cls_token",
    "mask_token": "embeddings.mask_token",
    "pos_embed": "embeddings.position_embeddings",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}


def convert_dinov2_state_dict(
    meta: Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    """Meta's DINOv2 layout (bare keys) -> transformers 5.x ``Dinov2Model`` names.

    ``blocks.i.attn.qkv`` is split in three along dim 0 (q, k, v); SwiGLU ``mlp.w12`` in two
    (first half -> ``gate_proj``, whose SiLU multiplies the second half, ``up_proj``);
    chunked checkpoints (``blocks.c.i.*``) are read by the block's own index ``i``.
    Returns ``(state_dict, origin, unused_keys)``; split tensors are copies, so the result can
    be written with safetensors (which refuses tensors sharing memory).
    """
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    unused: list[str] = []

    def put(name: str, value: Tensor, src: str) -> None:
        out[name] = value
        origin[name] = src

    for key, value in meta.items():
        if key in _DINO_TOP_RENAMES:
            put(_DINO_TOP_RENAMES[key], value, key)
            continue
        match = _DINO_BLOCK.match(key)
        if match is None:
            unused.append(key)
            continue
        layer, rest = match.groups()
        p = f"encoder.layer.{layer}."
        if rest in _DINO_BLOCK_RENAMES:
            put(p + _DINO_BLOCK_RENAMES[rest], value, key)
        elif rest in ("attn.qkv.weight", "attn.qkv.bias"):
            kind = rest.rsplit(".", 1)[1]
            if value.shape[0] % 3:
                unused.append(key)
                continue
            for name, part in zip(
                ("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True
            ):
                put(f"{p}attention.{name}.{kind}", part.clone(), key)
        elif rest in ("mlp.w12.weight", "mlp.w12.bias"):
            kind = rest.rsplit(".", 1)[1]
            if value.shape[0] % 2:
                unused.append(key)
                continue
            gate, up = value.chunk(2, dim=0)
            put(f"{p}mlp.gate_proj.{kind}", gate.clone(), key)
            put(f"{p}mlp.up_proj.{kind}", up.clone(), key)
        else:
            unused.append(key)
    return out, origin, unused


def _convert_tracked(
    convert: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
    part: dict[str, Tensor],
    config: dict[str, Any],
) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    """Run a diffusers converter and find out which input key fed each output key.

    The converters silently drop keys they do not recognise and write ``None`` for keys they
    expect but miss. To be strict we first convert a *probe*: the same key names with one-
    element tensors (same ndim, so the 1x1-conv squeezes still apply) holding each key's
    index, then read the indices back. The real conversion only moves references.
    """
    keys = list(part)
    probe = {
        k: torch.full((1,) * part[k].ndim, float(i), dtype=torch.float64)
        for i, k in enumerate(keys)
    }
    try:
        probed = convert(probe, config)
        converted = convert(dict(part), config)
    except (KeyError, IndexError, AttributeError, TypeError) as exc:
        raise WeightsError(
            f"the checkpoint layout is not the expected LDM layout: {exc!r}"
        ) from exc
    origin: dict[str, str] = {}
    out: dict[str, Tensor] = {}
    for name, marker in probed.items():
        if marker is None or converted.get(name) is None:
            continue  # the converter wanted a key the file lacks: reported as missing later
        origin[name] = keys[int(marker.reshape(-1)[0].item())]
        out[name] = converted[name]
    used = set(origin.values())
    unused = [k for k in keys if k not in used]
    return out, origin, unused


def convert_official_state_dict(
    state_dict: Mapping[str, Tensor],
    config: AnyDoorConfig,
    *,
    dinov2: Mapping[str, Tensor] | None = None,
) -> ConvertedCheckpoint:
    """Split the released checkpoint by prefix and rename every part to our modules' names.

    ``dinov2``: an optional DINOv2 state dict in Meta's layout (bare keys, as in
    ``dinov2_vitg14_pretrain.pth``) that replaces the checkpoint's ``cond_stage_model.model.*``.
    Does not check completeness against the modules: :func:`load_official_checkpoint` does.
    """
    from diffusers.loaders.single_file_utils import (
        convert_controlnet_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )

    parts: dict[str, dict[str, Tensor]] = {
        "unet": {},
        "controlnet": {},
        "vae": {},
        "dinov2": {},
        "projector": {},
    }
    prefixes = {
        UNET_PREFIX: "unet",
        CONTROLNET_PREFIX: "controlnet",
        VAE_PREFIX: "vae",
        DINOV2_PREFIX: "dinov2",
        PROJECTOR_PREFIX: "projector",
    }
    unused: list[str] = []
    for key, value in state_dict.items():
        for prefix, part in prefixes.items():
            if key.startswith(prefix):
                parts[part][key] = value
                break
        else:
            if not IGNORED_KEY_PATTERN.match(key):
                unused.append(key)

    state_dicts: dict[str, dict[str, Tensor]] = {}
    origin: dict[str, dict[str, str]] = {}

    # 1. UNet and VAE: diffusers' converters (they strip the prefixes themselves)
    for module, convert, kwargs in (
        ("unet", convert_ldm_unet_checkpoint, config.unet_kwargs()),
        ("vae", convert_ldm_vae_checkpoint, config.vae_kwargs()),
    ):
        sd, org, left = _convert_tracked(convert, parts[module], kwargs)
        state_dicts[module], origin[module] = sd, org
        unused += left

    # 2. ControlNet. Its converter counts input blocks from the keys present, so a file
    # without the unused input_blocks.0.0 would shift every block; keep a placeholder there
    # and replace conv_in by zeros afterwards (pitfall 1: the detail extractor ignores x_t).
    control = dict(parts["controlnet"])
    mc = config.unet_block_out_channels[0]
    w_key, b_key = (CONTROLNET_PREFIX + k for k in CONTROLNET_UNUSED)
    dtype = next(iter(control.values())).dtype if control else torch.float32
    control.setdefault(w_key, torch.zeros(mc, config.latent_channels, 3, 3, dtype=dtype))
    control.setdefault(b_key, torch.zeros(mc, dtype=dtype))
    sd, org, left = _convert_tracked(
        convert_controlnet_checkpoint, control, config.controlnet_kwargs()
    )
    sd["conv_in.weight"] = torch.zeros_like(control[w_key])
    sd["conv_in.bias"] = torch.zeros_like(control[b_key])
    org["conv_in.weight"], org["conv_in.bias"] = w_key, b_key
    state_dicts["controlnet"], origin["controlnet"] = sd, org
    unused += left

    # 3. ID extractor: DINOv2 (ours or the override file) + projector
    if dinov2 is not None:
        if parts["dinov2"]:
            log.info("replacing the checkpoint's DINOv2 weights with the separate DINOv2 file")
        dino_src, dino_label = dict(dinov2), "dinov2:"
        if any(k.startswith(DINOV2_PREFIX) for k in dino_src):  # an AnyDoor-style file
            dino_src = {
                k[len(DINOV2_PREFIX) :]: v
                for k, v in dino_src.items()
                if k.startswith(DINOV2_PREFIX)
            }
    else:
        dino_src = {k[len(DINOV2_PREFIX) :]: v for k, v in parts["dinov2"].items()}
        dino_label = DINOV2_PREFIX
    dino, dino_org, dino_left = convert_dinov2_state_dict(dino_src)
    ide: dict[str, Tensor] = {f"dino.{k}": v for k, v in dino.items()}
    ide_org = {f"dino.{k}": dino_label + v for k, v in dino_org.items()}
    unused += [dino_label + k for k in dino_left]
    for key, value in parts["projector"].items():
        name = "projector." + key[len(PROJECTOR_PREFIX) :]
        ide[name], ide_org[name] = value, key
    state_dicts["id_extractor"], origin["id_extractor"] = ide, ide_org

    return ConvertedCheckpoint(state_dicts=state_dicts, origin=origin, unused=unused)


# --- strict loading -------------------------------------------------------------------------


def _check_against(
    modules: Mapping[str, nn.Module], converted: ConvertedCheckpoint
) -> tuple[list[str], list[str], list[str]]:
    missing: list[str] = []
    unexpected: list[str] = list(converted.unused)
    mismatched: list[str] = []
    for name, module in modules.items():
        expected = module.state_dict()
        given = converted.state_dicts.get(name, {})
        org = converted.origin.get(name, {})
        missing += [f"{name}.{k}" for k in expected if k not in given]
        unexpected += [org.get(k, f"{name}.{k}") for k in given if k not in expected]
        for k, v in given.items():
            if k in expected and tuple(v.shape) != tuple(expected[k].shape):
                mismatched.append(
                    f"{org.get(k, k)}: file {tuple(v.shape)}, model {tuple(expected[k].shape)}"
                )
    return missing, unexpected, mismatched


def _raise_mismatch(
    source: str, missing: list[str], unexpected: list[str], mismatched: list[str]
) -> None:
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first: {', '.join(missing[:_MAX_LISTED])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:_MAX_LISTED])})")
    if mismatched:
        parts.append(
            f"{len(mismatched)} with another shape (first: {'; '.join(mismatched[:_MAX_LISTED])})"
        )
    raise WeightsError(
        f"{source} does not match the AnyDoor layout of this config: {'; '.join(parts)}. "
        "Check that the file is the AnyDoor checkpoint and that the config matches it.",
        missing=missing[:_MAX_LISTED],
        unexpected=unexpected[:_MAX_LISTED],
        mismatched=mismatched[:_MAX_LISTED],
    )


def _assign(module: nn.Module, state_dict: Mapping[str, Tensor], dtype: torch.dtype | None) -> None:
    # assign=True adopts the tensors instead of copying into (meta) parameters: no second copy
    if dtype is not None:
        state_dict = {
            k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state_dict.items()
        }
    try:
        module.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as exc:  # shapes were checked; this is a last-resort guard
        raise WeightsError(f"loading weights failed: {exc}") from exc


def _finish(components: AnyDoorComponents, device: str | torch.device) -> AnyDoorComponents:
    for name, module in components.modules().items():
        leftover = [n for n, p in module.named_parameters() if p.is_meta]
        if leftover:
            raise WeightsError(
                f"{name}: parameters without values after loading: {leftover[:_MAX_LISTED]}"
            )
        module.to(device)
        module.eval()
    return components


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise WeightsError(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16")
        return resolved
    return dtype


def load_official_checkpoint(
    path: str | os.PathLike[str],
    config: AnyDoorConfig | None = None,
    *,
    dinov2_path: str | os.PathLike[str] | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
) -> AnyDoorComponents:
    """Build :class:`AnyDoorComponents` from the released checkpoint (``.ckpt`` or
    ``.safetensors``), strictly.

    ``config`` defaults to the official sizes. ``dinov2_path``: Meta's DINOv2 ``.pth`` (bare
    keys) that fills or overrides the checkpoint's DINOv2 part. ``dtype`` (default float32)
    is the dtype of every module. Modules are built empty (meta tensors) and adopt the file's
    tensors, so peak memory stays near one copy of the weights.
    """
    path = Path(path)
    state_dict = read_state_dict(path)
    dinov2 = read_state_dict(dinov2_path) if dinov2_path is not None else None
    return load_official_state_dict(
        state_dict, config, dinov2=dinov2, dtype=dtype, device=device, source=str(path)
    )


def load_official_state_dict(
    state_dict: Mapping[str, Tensor],
    config: AnyDoorConfig | None = None,
    *,
    dinov2: Mapping[str, Tensor] | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
    source: str = "the state dict",
) -> AnyDoorComponents:
    """:func:`load_official_checkpoint` for a state dict already in memory."""
    from tryon.anydoor.models import build_components, zero_controlnet_conv_in

    config = config or AnyDoorConfig()
    converted = convert_official_state_dict(state_dict, config, dinov2=dinov2)
    components = build_components(config, empty=True)
    modules = components.modules()
    _raise_mismatch(source, *_check_against(modules, converted))
    target = _dtype(dtype)
    for name, module in modules.items():
        _assign(module, converted.state_dicts[name], target)
    zero_controlnet_conv_in(components.controlnet)
    log.info("loaded AnyDoor weights from %s (%s)", source, target)
    return _finish(components, device)


# --- our directory format --------------------------------------------------------------------


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


def _read_folder(folder: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise WeightsError(f"{folder} holds no .safetensors weights.")
    out: dict[str, Tensor] = {}
    for f in files:  # one file, or the shards of a sharded save
        out.update(load_file(str(f), device="cpu"))
    return out


def _read_dinov2_folder(folder: Path, dtype: torch.dtype) -> dict[str, Tensor]:
    """DINOv2 tensors under our module's names (``dino.*``).

    transformers 5 writes the Hub's historical key names (``attention.attention.query``,
    fused ``mlp.weights_in``) and converts them back on load, so the folder is read through
    ``from_pretrained`` rather than as raw safetensors; its loading report keeps it strict.
    """
    from transformers import Dinov2Model

    if not (folder / "config.json").is_file():
        raise WeightsError(f"{folder} is missing or has no config.json.")
    try:
        loaded: Any = Dinov2Model.from_pretrained(folder, dtype=dtype, output_loading_info=True)
        model, info = loaded
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{folder} could not be read as a transformers DINOv2: {exc}") from exc
    problems = [
        f"{kind}: {sorted(map(str, info.get(kind) or ()))[:_MAX_LISTED]}"
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
        if info.get(kind)
    ]
    if problems:
        raise WeightsError(f"{folder} does not hold a complete DINOv2: {'; '.join(problems)}")
    return {f"dino.{k}": v for k, v in model.state_dict().items()}


def is_pretrained_dir(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / CONFIG_FILENAME).is_file()


def load_pretrained(
    directory: str | os.PathLike[str],
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
) -> AnyDoorComponents:
    """Load a directory written by :func:`save_pretrained`, strictly.

    The modules are built empty from ``anydoor_config.json`` and adopt the stored tensors
    (the low_cpu_mem_usage path: one copy in memory). ``dtype`` defaults to float32.
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

    target = _dtype(dtype)
    ide = _read_dinov2_folder(directory / "id_extractor" / "dinov2", target)
    projector = directory / "id_extractor" / PROJECTOR_FILENAME
    if not projector.is_file():
        raise WeightsError(f"{projector} is missing.")
    from safetensors.torch import load_file

    ide.update({f"projector.{k}": v for k, v in load_file(str(projector), device="cpu").items()})
    converted = ConvertedCheckpoint(
        state_dicts={
            "unet": _read_folder(directory / "unet"),
            "controlnet": _read_folder(directory / "controlnet"),
            "vae": _read_folder(directory / "vae"),
            "id_extractor": ide,
        },
        origin={},
    )
    components = build_components(config, empty=True)
    modules = components.modules()
    _raise_mismatch(str(directory), *_check_against(modules, converted))
    for name, module in modules.items():
        _assign(module, converted.state_dicts[name], target)
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
    return _finish(components, device)


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
