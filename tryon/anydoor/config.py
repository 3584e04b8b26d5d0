"""One config object that names every size of the AnyDoor model.

The defaults are the released model: Stable Diffusion 2.1-base UNet/VAE, a ControlNet-style
detail extractor with a 4-channel hint, and DINOv2 ViT-g/14 + a 1536->1024 projector.
:meth:`AnyDoorConfig.tiny` gives a model of the same layout small enough for CPU tests.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from tryon.errors import ConfigError


@dataclass(frozen=True)
class AnyDoorConfig:
    # --- UNet (and the detail extractor's trunk) ---
    unet_block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    unet_layers_per_block: int = 2
    #: heads per level (LDM num_head_channels=64 -> 5/10/20/20 heads); diffusers calls this
    #: attention_head_dim for SD2-style UNets
    unet_attention_heads: tuple[int, ...] = (5, 10, 20, 20)
    #: True for the levels that have cross-attention (LDM attention_resolutions [4,2,1])
    unet_cross_attn_levels: tuple[bool, ...] = (True, True, True, False)
    cross_attention_dim: int = 1024
    transformer_layers_per_block: int = 1
    norm_num_groups: int = 32
    latent_channels: int = 4
    latent_size: int = 64
    # --- detail extractor ---
    hint_channels: int = 4
    hint_embedding_channels: tuple[int, ...] = (16, 32, 96, 256)
    # --- VAE ---
    vae_block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    vae_layers_per_block: int = 2
    vae_norm_num_groups: int = 32
    vae_scaling_factor: float = 0.18215
    # --- ID extractor (DINOv2) ---
    dino_hidden_size: int = 1536
    dino_num_layers: int = 40
    dino_num_heads: int = 24
    dino_patch_size: int = 14
    #: the size the checkpoint's position table was trained at (37x37 patches + CLS)
    dino_image_size: int = 518
    dino_use_swiglu: bool = True
    #: hidden size of the MLP; for SwiGLU this is the gated width (ViT-g: 4096)
    dino_mlp_hidden: int = 4096
    dino_layer_norm_eps: float = 1e-6
    #: input size at inference: 224 -> 16x16 patches -> 257 tokens
    reference_size: int = 224
    # --- projector ---
    projector_in: int = 1536
    projector_out: int = 1024
    # --- sampling schedule (LDM "linear" == diffusers "scaled_linear") ---
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    #: target crop size in pixels
    image_size: int = 512

    # ------------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, **overrides: Any) -> AnyDoorConfig:
        """A model of the official layout, a few MB, for CPU tests (64 px images, 28 px refs)."""
        base: dict[str, Any] = dict(
            unet_block_out_channels=(32, 64),
            unet_layers_per_block=1,
            unet_attention_heads=(2, 4),
            unet_cross_attn_levels=(True, False),
            cross_attention_dim=32,
            norm_num_groups=8,
            latent_size=8,
            hint_embedding_channels=(16, 16, 32, 32),
            vae_block_out_channels=(16, 32, 32, 32),
            vae_layers_per_block=1,
            vae_norm_num_groups=8,
            dino_hidden_size=48,
            dino_num_layers=2,
            dino_num_heads=4,
            dino_patch_size=14,
            dino_image_size=70,
            dino_mlp_hidden=64,
            reference_size=28,
            projector_in=48,
            projector_out=32,
            image_size=64,
        )
        base.update(overrides)
        return cls(**base)

    # --- derived sizes --------------------------------------------------------------------
    @property
    def num_patches(self) -> int:
        return (self.reference_size // self.dino_patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        return self.num_patches + 1

    @property
    def vae_downscale(self) -> int:
        return 2 ** (len(self.vae_block_out_channels) - 1)

    # --- diffusers / transformers config dicts --------------------------------------------
    def unet_kwargs(self) -> dict[str, Any]:
        n = len(self.unet_block_out_channels)
        down = tuple(
            "CrossAttnDownBlock2D" if ca else "DownBlock2D" for ca in self.unet_cross_attn_levels
        )
        up = tuple(
            "CrossAttnUpBlock2D" if ca else "UpBlock2D" for ca in reversed(self.unet_cross_attn_levels)
        )
        if len(self.unet_attention_heads) != n or len(self.unet_cross_attn_levels) != n:
            raise ConfigError("unet_attention_heads and unet_cross_attn_levels need one entry "
                              f"per UNet block ({n})")
        return dict(
            sample_size=self.latent_size,
            in_channels=self.latent_channels,
            out_channels=self.latent_channels,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=self.unet_block_out_channels,
            layers_per_block=self.unet_layers_per_block,
            attention_head_dim=self.unet_attention_heads,
            cross_attention_dim=self.cross_attention_dim,
            transformer_layers_per_block=self.transformer_layers_per_block,
            use_linear_projection=True,
            norm_num_groups=self.norm_num_groups,
            upcast_attention=False,
        )

    def controlnet_kwargs(self) -> dict[str, Any]:
        kw = self.unet_kwargs()
        for key in ("sample_size", "out_channels", "up_block_types"):
            kw.pop(key)
        kw.update(
            conditioning_channels=self.hint_channels,
            conditioning_embedding_out_channels=self.hint_embedding_channels,
            controlnet_conditioning_channel_order="rgb",
        )
        return kw

    def vae_kwargs(self) -> dict[str, Any]:
        n = len(self.vae_block_out_channels)
        return dict(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=self.vae_block_out_channels,
            layers_per_block=self.vae_layers_per_block,
            latent_channels=self.latent_channels,
            norm_num_groups=self.vae_norm_num_groups,
            sample_size=self.image_size,
            scaling_factor=self.vae_scaling_factor,
        )

    def dinov2_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = dict(
            hidden_size=self.dino_hidden_size,
            num_hidden_layers=self.dino_num_layers,
            num_attention_heads=self.dino_num_heads,
            patch_size=self.dino_patch_size,
            image_size=self.dino_image_size,
            use_swiglu_ffn=self.dino_use_swiglu,
            layer_norm_eps=self.dino_layer_norm_eps,
            qkv_bias=True,
            layerscale_value=1e-5,
        )
        if self.dino_use_swiglu:
            # transformers derives the SwiGLU width from mlp_ratio: hidden = int(h*ratio*2/3)
            # rounded up to a multiple of 8 (ViT-g: 1536*4*2/3 = 4096)
            ratio = round(self.dino_mlp_hidden * 3 / (2 * self.dino_hidden_size))
            width = (int(int(self.dino_hidden_size * ratio) * 2 / 3) + 7) // 8 * 8
        else:
            ratio = round(self.dino_mlp_hidden / self.dino_hidden_size)
            width = self.dino_hidden_size * ratio
        # transformers 5.x validates mlp_ratio as an int, so not every width is expressible
        if width != self.dino_mlp_hidden:
            raise ValueError(
                f"dino_mlp_hidden={self.dino_mlp_hidden} cannot be expressed by an integer "
                f"mlp_ratio for hidden size {self.dino_hidden_size} (nearest gives {width})"
            )
        kw["mlp_ratio"] = int(ratio)
        return kw

    def scheduler_kwargs(self) -> dict[str, Any]:
        return dict(
            num_train_timesteps=self.num_train_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            timestep_spacing="leading",
            prediction_type="epsilon",
        )

    # --- (de)serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnyDoorConfig:
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(names)
        if unknown:
            raise ValueError(f"unknown AnyDoorConfig fields: {sorted(unknown)}")
        clean: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**clean)
