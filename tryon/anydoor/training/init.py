"""Starting weights for training, and export of the result.

* :func:`init_from_sd`: the reference recipe (``tool_add_control_sd21.py``, reference §5):
  UNet and VAE from Stable Diffusion 2.1-base, the detail extractor copied from the UNet
  encoder (``ControlNetModel.from_unet``), new layers freshly initialised (hint block as
  diffusers builds it, whose last conv is zero like the reference's; zero convs zero; the
  projector a default ``nn.Linear``), ``conv_in`` zeroed (pitfall 1), DINOv2 from a
  transformers folder or Meta's ``.pth``;
* :func:`init_from_anydoor`: the released (or a previously exported) model, to fine-tune;
* :func:`init_tiny_random`: a seeded random model for smoke tests;
* :func:`export_model`: the engine's :func:`~tryon.anydoor.weights.save_pretrained` folder,
  which the service loads directly (``TRYON_WEIGHTS``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import (
    AnyDoorComponents,
    IDExtractor,
    build_components,
    randomize_parameters,
    zero_controlnet_conv_in,
)
from tryon.errors import ConfigError, WeightsError, WeightsNotFoundError

log = logging.getLogger(__name__)


def _check_config(name: str, got: Any, want: dict[str, Any]) -> None:
    """Raise :class:`WeightsError` when a loaded diffusers config disagrees with ``want``."""
    bad = []
    for key, value in want.items():
        have = got.get(key) if isinstance(got, dict) else getattr(got, key, None)
        if isinstance(value, tuple) and isinstance(have, list):
            have = tuple(have)
        if have != value:
            bad.append(f"{key}={have!r} (expected {value!r})")
    if bad:
        raise WeightsError(f"{name} does not match the AnyDoor config: " + ", ".join(bad[:5]))


def _sd_folder(root: Path, sub: str) -> Path:
    folder = root / sub
    if not (folder / "config.json").is_file():
        raise WeightsNotFoundError(
            f"{folder} is not a diffusers model folder: model.sd must be a Stable Diffusion "
            "2.1-base folder in diffusers layout (unet/, vae/, each with config.json)."
        )
    return folder


def load_dinov2(path: str | os.PathLike[str], config: AnyDoorConfig) -> Any:
    """DINOv2 as a transformers ``Dinov2Model`` from a transformers folder or Meta's ``.pth``.

    Meta's layout is converted with :func:`tryon.anydoor.weights.convert_dinov2_state_dict`
    and loaded strictly.
    """
    from transformers import Dinov2Config, Dinov2Model

    from tryon.anydoor.weights import convert_dinov2_state_dict, read_state_dict

    path = Path(path)
    if not path.exists():
        raise WeightsNotFoundError(f"No DINOv2 weights at {path}.")
    if path.is_dir():
        loaded: Any = Dinov2Model.from_pretrained(path, output_loading_info=True)
        model, info = loaded
        # transformers only warns about missing keys and leaves them random: refuse instead
        bad = {k: list(v)[:5] for k, v in info.items() if k != "error_msgs" and v}
        if bad or info.get("error_msgs"):
            raise WeightsError(f"DINOv2 folder {path} does not load cleanly: {bad or info['error_msgs']}")
        want = {k: v for k, v in config.dinov2_kwargs().items() if k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "use_swiglu_ffn")}
        _check_config(f"DINOv2 at {path}", model.config.to_dict(), want)
        return model
    meta = read_state_dict(path)
    # Meta's hub file has bare keys; an AnyDoor-style prefix is tolerated
    prefix = "cond_stage_model.model."
    if any(k.startswith(prefix) for k in meta):
        meta = {k[len(prefix):]: v for k, v in meta.items() if k.startswith(prefix)}
    state, _, unused = convert_dinov2_state_dict(meta)
    model = Dinov2Model(Dinov2Config(**config.dinov2_kwargs()))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(
            f"DINOv2 file {path} does not fit the config: missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}, unmapped {unused[:5]}"
        )
    return model


def init_from_sd(
    sd_path: str | os.PathLike[str],
    dinov2_path: str | os.PathLike[str],
    config: AnyDoorConfig | None = None,
) -> AnyDoorComponents:
    """AnyDoor components from SD-2.1-base (``sd_path/unet``, ``sd_path/vae``) + DINOv2.

    The UNet and VAE configs must match ``config`` (default: the official sizes); the VAE's
    scaling factor is set to ``config.vae_scaling_factor``. All modules are float32 on CPU.
    """
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    config = config or AnyDoorConfig()
    root = Path(sd_path)
    if not root.is_dir():
        raise WeightsNotFoundError(f"No Stable Diffusion folder at {root}.")
    unet = UNet2DConditionModel.from_pretrained(_sd_folder(root, "unet"), torch_dtype=torch.float32)
    want = config.unet_kwargs()
    _check_config(
        "the SD UNet",
        dict(unet.config),
        {k: want[k] for k in ("in_channels", "out_channels", "block_out_channels",
                              "layers_per_block", "cross_attention_dim", "down_block_types")},
    )
    vae = AutoencoderKL.from_pretrained(_sd_folder(root, "vae"), torch_dtype=torch.float32)
    vwant = config.vae_kwargs()
    _check_config(
        "the SD VAE",
        dict(vae.config),
        {k: vwant[k] for k in ("block_out_channels", "latent_channels", "layers_per_block")},
    )
    vae.register_to_config(scaling_factor=config.vae_scaling_factor)

    # copies conv_in, time embedding, down blocks and mid block from the UNet; the hint block
    # and the zero convs are new (diffusers zero-initialises the zero convs and the hint
    # block's last conv, as the reference's zero_module does)
    controlnet = ControlNetModel.from_unet(
        unet,
        controlnet_conditioning_channel_order="rgb",
        conditioning_embedding_out_channels=config.hint_embedding_channels,
        conditioning_channels=config.hint_channels,
        load_weights_from_unet=True,
    )
    zero_controlnet_conv_in(controlnet)

    from accelerate import init_empty_weights

    with init_empty_weights():
        id_extractor = IDExtractor(config)
    id_extractor.dino = load_dinov2(dinov2_path, config)
    # a fresh default-initialised projector, as in the reference (pitfall 6: trained here)
    id_extractor.projector = nn.Linear(config.projector_in, config.projector_out, bias=True)

    components = build_components(config, empty=True)
    components.unet = unet
    components.controlnet = controlnet
    components.vae = vae
    components.id_extractor = id_extractor
    for module in components.modules().values():
        module.eval()
    log.info("initialised AnyDoor from SD at %s and DINOv2 at %s", root, dinov2_path)
    return components


def init_from_anydoor(
    weights: str | os.PathLike[str],
    *,
    config: AnyDoorConfig | None = None,
    dinov2_path: str | os.PathLike[str] | None = None,
) -> AnyDoorComponents:
    """Released checkpoint or our folder (:func:`tryon.anydoor.weights.load_weights`), float32."""
    from tryon.anydoor.weights import load_weights

    return load_weights(weights, config=config, dinov2_path=dinov2_path, dtype=torch.float32)


def init_tiny_random(config: AnyDoorConfig | None = None, *, seed: int = 0) -> AnyDoorComponents:
    """A seeded random model with every path live (zero convs non-zero), float32 on CPU."""
    config = config or AnyDoorConfig.tiny()
    torch_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        components = build_components(config)
    finally:
        torch.random.set_rng_state(torch_state)
    randomize_parameters(components, seed=seed)
    return components


def init_components(model: Any) -> AnyDoorComponents:
    """Dispatch on a :class:`~tryon.anydoor.training.trainconfig.ModelSection`."""
    model.check_sources()
    if model.init == "sd":
        return init_from_sd(model.sd, model.dinov2, model.anydoor_config())
    if model.init == "anydoor":
        config = None if model.config in (None, "official") else model.anydoor_config()
        return init_from_anydoor(model.weights, config=config, dinov2_path=model.dinov2)
    if model.init == "tiny-random":
        return init_tiny_random(model.anydoor_config(), seed=model.random_seed)
    raise ConfigError(f"unknown model.init {model.init!r}")


def export_model(
    components: AnyDoorComponents,
    directory: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``components`` in the engine's folder format (``TRYON_WEIGHTS`` loads it).

    ``dtype`` (e.g. ``torch.float16``) casts a copy of the weights first; by default they are
    written as they are (float32 after training). ``conv_in`` is checked to be zero: a model
    whose detail extractor reads x_t is not AnyDoor.
    """
    from tryon.anydoor.weights import save_pretrained

    conv_in = components.controlnet.conv_in
    if bool(conv_in.weight.detach().any()):
        raise WeightsError("controlnet.conv_in is not zero: refusing to export (pitfall 1).")
    if dtype is not None:
        import copy

        components = copy.deepcopy(components)
        for module in components.modules().values():
            module.to(dtype)
    return save_pretrained(components, directory, overwrite=overwrite)
