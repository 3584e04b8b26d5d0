"""Released AnyDoor checkpoint -> our modules: key conversion and strict, lean loading.

The released checkpoint (``epoch=1-step=8687.ckpt``) is one PyTorch-Lightning file whose
``state_dict`` holds the LDM UNet (``model.diffusion_model.``), the cldm ControlNet
(``control_model.``), the VAE (``first_stage_model.``), DINOv2 in Meta's layout
(``cond_stage_model.model.``) and the projector (``cond_stage_model.projector.``), plus DDPM
buffers we ignore. :func:`convert_official_state_dict` renames it with diffusers' single-file
converters and our DINOv2 key mapping, moving references only (the DINOv2 qkv and SwiGLU
splits are views); :func:`~tryon.anydoor.weights_io.assign_state_dicts` then copies tensor by tensor into modules built
empty, in the target dtype, releasing each source tensor's file pages as it goes.

"Strict" means: every tensor of the file lands in a module (except the documented ignored
buffers and the ControlNet's unused ``input_blocks.0.0``), no module tensor is left without a
value, and shapes agree; otherwise :class:`~tryon.errors.WeightsError` names the first keys.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.weights_io import (
    Checkpoint,
    assign_state_dicts,
    read_checkpoint,
    resolve_dtype,
)
from tryon.errors import WeightsError

if TYPE_CHECKING:
    from tryon.anydoor.models import AnyDoorComponents

log = logging.getLogger(__name__)

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
    Returns ``(state_dict, origin, unused_keys)``. Split tensors are views of the input (no
    copy: for ViT-g in fp16 a copy costs 1.5 GB); ``.clone()`` them before writing them with
    safetensors, which refuses tensors that share memory.
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
                put(f"{p}attention.{name}.{kind}", part, key)
        elif rest in ("mlp.w12.weight", "mlp.w12.bias"):
            kind = rest.rsplit(".", 1)[1]
            if value.shape[0] % 2:
                unused.append(key)
                continue
            gate, up = value.chunk(2, dim=0)
            put(f"{p}mlp.gate_proj.{kind}", gate, key)
            put(f"{p}mlp.up_proj.{kind}", up, key)
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


def check_against(
    modules: Mapping[str, nn.Module], converted: ConvertedCheckpoint
) -> tuple[list[str], list[str], list[str]]:
    """``(missing, unexpected, mismatched)`` keys of ``converted`` against ``modules``."""
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


def check_converted(
    source: str, modules: Mapping[str, nn.Module], converted: ConvertedCheckpoint
) -> None:
    """Raise :class:`WeightsError` naming the first missing/unexpected/mismatched keys."""
    missing, unexpected, mismatched = check_against(modules, converted)
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


def finish_loading(
    components: AnyDoorComponents, device: str | torch.device
) -> AnyDoorComponents:
    """Refuse parameters left on the meta device; move every module to ``device``, eval mode."""
    for name, module in components.modules().items():
        leftover = [n for n, p in module.named_parameters() if p.is_meta]
        if leftover:
            raise WeightsError(
                f"{name}: parameters without values after loading: {leftover[:_MAX_LISTED]}"
            )
        module.to(device)
        module.eval()
    return components


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
    is the dtype of every module. The files are memory-mapped and converted tensor by tensor
    (:func:`~tryon.anydoor.weights_io.assign_state_dicts`), so peak memory stays near one copy of the weights in ``dtype``.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    dinov2 = read_checkpoint(dinov2_path) if dinov2_path is not None else None
    sources = [c for c in (checkpoint, dinov2) if c is not None]
    return _load_official(
        checkpoint.tensors,
        config,
        dinov2=dinov2.tensors if dinov2 is not None else None,
        dtype=dtype,
        device=device,
        source=str(path),
        sources=sources,
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
    """:func:`load_official_checkpoint` for a state dict already in memory (left unchanged)."""
    return _load_official(
        state_dict, config, dinov2=dinov2, dtype=dtype, device=device, source=source
    )


def _load_official(
    state_dict: Mapping[str, Tensor],
    config: AnyDoorConfig | None,
    *,
    dinov2: Mapping[str, Tensor] | None,
    dtype: torch.dtype | str | None,
    device: str | torch.device,
    source: str,
    sources: Sequence[Checkpoint] = (),
) -> AnyDoorComponents:
    from tryon.anydoor.models import build_components, zero_controlnet_conv_in

    config = config or AnyDoorConfig()
    target = resolve_dtype(dtype)
    converted = convert_official_state_dict(state_dict, config, dinov2=dinov2)
    components = build_components(config, empty=True)
    modules = components.modules()
    check_converted(source, modules, converted)
    assign_state_dicts(modules, converted.state_dicts, target, sources)
    zero_controlnet_conv_in(components.controlnet)
    log.info("loaded AnyDoor weights from %s (%s)", source, target)
    return finish_loading(components, device)
