"""Weights: released-layout conversion (strict), our directory format, CLI (fetch: test_fetch.py).

The released layout comes from ``official_layout.py``, written from the original LDM/cldm/Meta
module trees; reference forwards below are written from the original formulas, not from
diffusers/transformers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from official_layout import (
    ddpm_buffers,
    meta_dinov2_shapes,
    official_shapes,
    official_state_dict,
    random_tensors,
)
from safetensors.torch import save_file

from tryon.anydoor import weights as W
from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import build_components
from tryon.cli import cli
from tryon.errors import WeightsError, WeightsNotFoundError

CFG = AnyDoorConfig.tiny()
UNET, CTRL, VAE, DINO = (
    "model.diffusion_model.",
    "control_model.",
    "first_stage_model.",
    "cond_stage_model.model.",
)


class LightningHparams:
    """Stands for the non-tensor objects a Lightning checkpoint pickles (refused by weights_only)."""

    def __init__(self) -> None:
        self.lr = 1e-5


@pytest.fixture(scope="module")
def sd() -> dict[str, torch.Tensor]:
    return official_state_dict(CFG, seed=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, sd: dict[str, torch.Tensor]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("official")
    st = root / "anydoor.safetensors"
    save_file(sd, str(st))
    ckpt = root / "anydoor.ckpt"
    torch.save(
        {
            "state_dict": sd,
            "optimizer_states": [
                {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 1e-5}]}
            ],
            "epoch": 1,
            "global_step": 8687,
            "hyper_parameters": LightningHparams(),
        },
        ckpt,
    )
    return {"safetensors": st, "ckpt": ckpt, "root": root}


@pytest.fixture(scope="module")
def comps(files: dict[str, Path]):  # type: ignore[no-untyped-def]
    return W.load_official_checkpoint(files["safetensors"], CFG)


def _fp(t: torch.Tensor) -> tuple[int, str]:
    return t.numel(), hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


# --- layout ---------------------------------------------------------------------------------


def test_full_size_official_layout_maps_strictly() -> None:
    cfg = AnyDoorConfig()
    sd = {k: torch.empty(s, device="meta") for k, s in official_shapes(cfg).items()}
    sd.update(ddpm_buffers(cfg))
    converted = W.convert_official_state_dict(sd, cfg)
    components = build_components(cfg, empty=True)
    missing, unexpected, mismatched = W.check_against(components.modules(), converted)
    assert (missing, unexpected, mismatched) == ([], [], [])
    counts = components.num_parameters()
    assert round(counts["unet"] / 1e6, 2) == 865.91  # "DiffusionWrapper has 865.91 M params"
    assert 2.44e9 < sum(counts.values()) < 2.46e9


@pytest.mark.parametrize(("prefix", "module"), [(UNET, "unet"), (VAE, "vae"), (CTRL, "controlnet")])
def test_every_checkpoint_tensor_lands_exactly_once(sd, comps, prefix: str, module: str) -> None:  # type: ignore[no-untyped-def]
    src = [
        v
        for k, v in sd.items()
        if k.startswith(prefix) and not k.startswith(CTRL + "input_blocks.0.0.")
    ]
    skip = "conv_in." if module == "controlnet" else "-"  # zeroed on purpose, checked elsewhere
    dst = [v for k, v in getattr(comps, module).state_dict().items() if not k.startswith(skip)]
    # values are random, so equal multisets of bytes mean a bijection that preserves values
    # (1x1 convs squeezed to linear keep their bytes)
    assert sorted(map(_fp, src)) == sorted(map(_fp, dst))


@pytest.mark.parametrize(
    ("src", "module", "dst"),
    [
        (
            UNET + "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
            "unet",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
        ),
        (
            UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
            "unet",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        ),
        (UNET + "input_blocks.2.0.op.weight", "unet", "down_blocks.0.downsamplers.0.conv.weight"),
        (
            UNET + "input_blocks.3.0.skip_connection.weight",
            "unet",
            "down_blocks.1.resnets.0.conv_shortcut.weight",
        ),
        (UNET + "middle_block.1.proj_in.weight", "unet", "mid_block.attentions.0.proj_in.weight"),
        (
            UNET + "middle_block.2.emb_layers.1.weight",
            "unet",
            "mid_block.resnets.1.time_emb_proj.weight",
        ),
        (UNET + "output_blocks.1.1.conv.weight", "unet", "up_blocks.0.upsamplers.0.conv.weight"),
        (
            UNET + "output_blocks.2.1.proj_out.weight",
            "unet",
            "up_blocks.1.attentions.0.proj_out.weight",
        ),
        (UNET + "out.2.weight", "unet", "conv_out.weight"),
        (UNET + "time_embed.2.weight", "unet", "time_embedding.linear_2.weight"),
        (
            CTRL + "input_hint_block.0.weight",
            "controlnet",
            "controlnet_cond_embedding.conv_in.weight",
        ),
        (
            CTRL + "input_hint_block.2.weight",
            "controlnet",
            "controlnet_cond_embedding.blocks.0.weight",
        ),
        (
            CTRL + "input_hint_block.12.weight",
            "controlnet",
            "controlnet_cond_embedding.blocks.5.weight",
        ),
        (
            CTRL + "input_hint_block.14.weight",
            "controlnet",
            "controlnet_cond_embedding.conv_out.weight",
        ),
        (CTRL + "zero_convs.0.0.weight", "controlnet", "controlnet_down_blocks.0.weight"),
        (CTRL + "zero_convs.3.0.bias", "controlnet", "controlnet_down_blocks.3.bias"),
        (CTRL + "middle_block_out.0.weight", "controlnet", "controlnet_mid_block.weight"),
        (
            CTRL + "input_blocks.1.1.proj_in.weight",
            "controlnet",
            "down_blocks.0.attentions.0.proj_in.weight",
        ),
        (
            VAE + "encoder.down.0.block.0.conv1.weight",
            "vae",
            "encoder.down_blocks.0.resnets.0.conv1.weight",
        ),
        (
            VAE + "decoder.up.0.block.1.nin_shortcut.weight",
            "vae",
            None,
        ),  # absent: up.0 keeps channels
        (
            VAE + "decoder.up.3.block.0.conv2.weight",
            "vae",
            "decoder.up_blocks.0.resnets.0.conv2.weight",
        ),
        (VAE + "quant_conv.weight", "vae", "quant_conv.weight"),
        ("cond_stage_model.projector.weight", "id_extractor", "projector.weight"),
    ],
)
def test_named_keys_map_to_the_right_modules(
    sd, comps, src: str, module: str, dst: str | None
) -> None:  # type: ignore[no-untyped-def]
    if dst is None:
        assert src not in sd
        return
    assert torch.equal(getattr(comps, module).state_dict()[dst], sd[src])


def test_vae_mid_attention_convs_became_linear_and_match_ldm_attnblock(sd, comps) -> None:  # type: ignore[no-untyped-def]
    attn = comps.vae.encoder.mid_block.attentions[0]
    p = VAE + "encoder.mid.attn_1."
    for ours, theirs in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
        w = attn.get_submodule(ours).weight
        assert w.ndim == 2
        assert torch.equal(w, sd[p + theirs + ".weight"][:, :, 0, 0])
    # LDM AttnBlock: GroupNorm -> 1x1 q,k,v -> softmax(q^T k / sqrt(c)) -> 1x1 proj_out -> +x
    ch = CFG.vae_block_out_channels[-1]
    x = torch.randn(2, ch, 3, 5, generator=torch.Generator().manual_seed(1))
    h = F.group_norm(
        x, CFG.vae_norm_num_groups, sd[p + "norm.weight"], sd[p + "norm.bias"], eps=1e-6
    )
    q, k, v = (F.conv2d(h, sd[p + n + ".weight"], sd[p + n + ".bias"]) for n in ("q", "k", "v"))
    b, c, hh, ww = q.shape
    weights = torch.bmm(q.reshape(b, c, -1).permute(0, 2, 1), k.reshape(b, c, -1)) * c**-0.5
    out = torch.bmm(v.reshape(b, c, -1), weights.softmax(dim=2).permute(0, 2, 1)).reshape(
        b, c, hh, ww
    )
    ref = x + F.conv2d(out, sd[p + "proj_out.weight"], sd[p + "proj_out.bias"])
    with torch.no_grad():
        got = attn(x)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_controlnet_hint_block_matches_cldm_forward(sd, comps) -> None:  # type: ignore[no-untyped-def]
    # cldm input_hint_block: conv(hint->c0), then per step conv(c,c) and conv(c,c') stride 2,
    # SiLU after each but the last (zero) conv
    n_steps = len(CFG.hint_embedding_channels) - 1
    strides = [1] + [1, 2] * n_steps + [1]
    hint = torch.randn(1, CFG.hint_channels, 32, 32, generator=torch.Generator().manual_seed(2))
    h = hint
    for j, s in enumerate(strides):
        key = f"{CTRL}input_hint_block.{2 * j}"
        h = F.conv2d(h, sd[key + ".weight"], sd[key + ".bias"], stride=s, padding=1)
        if j < len(strides) - 1:
            h = F.silu(h)
    with torch.no_grad():
        got = comps.controlnet.controlnet_cond_embedding(hint)
    torch.testing.assert_close(got, h, atol=1e-5, rtol=1e-5)


def test_controlnet_conv_in_is_zero_so_the_latent_is_ignored(comps) -> None:  # type: ignore[no-untyped-def]
    cn = comps.controlnet
    assert not cn.conv_in.weight.any() and not cn.conv_in.bias.any()
    g = torch.Generator().manual_seed(3)
    s = CFG.latent_size
    hint = torch.randn(1, CFG.hint_channels, 8 * s, 8 * s, generator=g)
    ctx = torch.randn(1, CFG.num_tokens, CFG.cross_attention_dim, generator=g)
    outs = []
    for _ in range(2):
        sample = torch.randn(1, CFG.latent_channels, s, s, generator=g)
        with torch.no_grad():
            down, mid = cn(
                sample, 500, encoder_hidden_states=ctx, controlnet_cond=hint, return_dict=False
            )
        outs.append(torch.cat([t.flatten() for t in (*down, mid)]))
    assert outs[0].abs().sum() > 0
    torch.testing.assert_close(outs[0], outs[1])


def _meta_dinov2(sd: dict[str, torch.Tensor], x: torch.Tensor, cfg: AnyDoorConfig) -> torch.Tensor:
    """Meta's DinoVisionTransformer.forward_features -> norm(all tokens), from its formulas."""
    dim, heads, eps = cfg.dino_hidden_size, cfg.dino_num_heads, cfg.dino_layer_norm_eps
    x = F.conv2d(
        x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=cfg.dino_patch_size
    )
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + sd["pos_embed"]
    b, n, _ = x.shape
    for i in range(cfg.dino_num_layers):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (dim,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        qkv = F.linear(h, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"])
        qkv = qkv.reshape(b, n, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * (dim // heads) ** -0.5, qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        o = (a @ v).transpose(1, 2).reshape(b, n, dim)
        x = x + sd[p + "ls1.gamma"] * F.linear(
            o, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"]
        )
        h = F.layer_norm(x, (dim,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        x1, x2 = F.linear(h, sd[p + "mlp.w12.weight"], sd[p + "mlp.w12.bias"]).chunk(2, dim=-1)
        o = F.linear(F.silu(x1) * x2, sd[p + "mlp.w3.weight"], sd[p + "mlp.w3.bias"])
        x = x + sd[p + "ls2.gamma"] * o
    return F.layer_norm(x, (dim,), sd["norm.weight"], sd["norm.bias"], eps)


def test_dinov2_matches_meta_forward(sd, comps) -> None:  # type: ignore[no-untyped-def]
    meta = {k[len(DINO) :]: v for k, v in sd.items() if k.startswith(DINO)}
    side = CFG.dino_image_size  # the table's own grid: no position resampling involved
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(4))
    ref = _meta_dinov2(meta, x, CFG)
    with torch.no_grad():
        got = comps.id_extractor.dino(pixel_values=x).last_hidden_state
    assert got.shape == (2, 1 + (side // CFG.dino_patch_size) ** 2, CFG.dino_hidden_size)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(comps.id_extractor.dino.embeddings.mask_token, meta["mask_token"])


# --- strictness -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        UNET + "input_blocks.1.1.proj_in.weight",
        CTRL + "zero_convs.2.0.weight",
        VAE + "decoder.mid.attn_1.k.bias",
        DINO + "blocks.1.mlp.w12.weight",
        "cond_stage_model.projector.bias",
    ],
)
def test_a_missing_key_raises(sd, key: str) -> None:  # type: ignore[no-untyped-def]
    broken = {k: v for k, v in sd.items() if k != key}
    with pytest.raises(WeightsError, match="missing") as info:
        W.load_official_state_dict(broken, CFG)
    assert info.value.details["missing"]


@pytest.mark.parametrize(
    "key",
    [
        "model_ema.decay",  # unknown top-level key
        UNET + "bogus.weight",  # known prefix, no converter rule: silently dropped by diffusers
        CTRL + "zero_convs.9.0.weight",  # beyond the last block: silently dropped by diffusers
        UNET + "input_blocks.1.1.extra.weight",  # renamed into a name the module lacks
        DINO + "blocks.0.attn.q_norm.weight",
    ],
)
def test_an_extra_key_raises(sd, key: str) -> None:  # type: ignore[no-untyped-def]
    extra = dict(sd)
    extra[key] = torch.ones(4)
    with pytest.raises(WeightsError, match="unexpected") as info:
        W.load_official_state_dict(extra, CFG)
    assert any(key in k for k in info.value.details["unexpected"])


def test_wrong_config_reports_shapes(sd) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WeightsError, match="shape"):
        W.load_official_state_dict(sd, AnyDoorConfig.tiny(projector_out=16, cross_attention_dim=16))


def test_controlnet_input_block_0_is_optional_and_never_used(sd, comps) -> None:  # type: ignore[no-untyped-def]
    # diffusers counts input blocks from the keys present: dropping block 0 must not shift them
    pruned = {k: v for k, v in sd.items() if not k.startswith(CTRL + "input_blocks.0.0.")}
    loaded = W.load_official_state_dict(pruned, CFG)
    _state_equal(loaded.controlnet, comps.controlnet)


# --- files ----------------------------------------------------------------------------------


def test_lightning_ckpt_with_optimizer_and_objects_loads(files, comps) -> None:  # type: ignore[no-untyped-def]
    loaded = W.load_official_checkpoint(files["ckpt"], CFG)
    for name, module in loaded.modules().items():
        _state_equal(module, comps.modules()[name])


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.makedirs, (str(self.marker),))


def test_checkpoint_objects_never_run_code(tmp_path: Path, sd, comps) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": sd, "callbacks": _RunsCodeWhenUnpickled(marker)}, path)
    loaded = W.load_official_checkpoint(path, CFG)
    assert not marker.exists()
    _state_equal(loaded.unet, comps.unet)


def test_legacy_torch_format_loads(tmp_path: Path, sd, comps) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": sd}, path, _use_new_zipfile_serialization=False)
    _state_equal(W.load_official_checkpoint(path, CFG).unet, comps.unet)


def test_separate_dinov2_file_fills_and_overrides(tmp_path: Path, sd) -> None:  # type: ignore[no-untyped-def]
    other = random_tensors(meta_dinov2_shapes(CFG), seed=7)
    pth = tmp_path / "dinov2.pth"
    torch.save(other, pth)
    no_dino = {k: v for k, v in sd.items() if not k.startswith(DINO)}
    st = tmp_path / "no_dino.safetensors"
    save_file(no_dino, str(st))
    with pytest.raises(WeightsError, match="missing"):
        W.load_official_checkpoint(st, CFG)
    for source in (st, None):
        if source is None:  # override: the checkpoint's own DINOv2 is replaced
            source = tmp_path / "full.safetensors"
            save_file(sd, str(source))
        loaded = W.load_official_checkpoint(source, CFG, dinov2_path=pth)
        emb = loaded.id_extractor.dino.embeddings
        assert torch.equal(emb.position_embeddings, other["pos_embed"])
        q = loaded.id_extractor.dino.encoder.layer[1].attention.q_proj.weight
        assert torch.equal(q, other["blocks.1.attn.qkv.weight"][: CFG.dino_hidden_size])


def test_dtype_applies_to_every_module(files) -> None:  # type: ignore[no-untyped-def]
    loaded = W.load_official_checkpoint(files["safetensors"], CFG, dtype="bfloat16")
    for module in loaded.modules().values():
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}


def test_save_load_round_trip_is_bit_exact(tmp_path: Path, comps) -> None:  # type: ignore[no-untyped-def]
    out = W.save_pretrained(comps, tmp_path / "w")
    for sub in ("unet", "controlnet", "vae", "scheduler", "id_extractor/dinov2"):
        assert (
            out / sub / ("scheduler_config.json" if sub == "scheduler" else "config.json")
        ).is_file()
    loaded = W.load_pretrained(out)
    assert loaded.config == comps.config
    for name, module in loaded.modules().items():
        _state_equal(module, comps.modules()[name])
    public = lambda c: {k: v for k, v in dict(c).items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.scheduler.config) == public(comps.scheduler.config)
    half = W.load_pretrained(out, dtype=torch.float16)
    assert half.unet.conv_in.weight.dtype == torch.float16
    assert torch.equal(half.unet.conv_in.weight, comps.unet.conv_in.weight.half())


def test_weights_checksum_is_cached_and_tracks_content(tmp_path: Path, comps) -> None:  # type: ignore[no-untyped-def]
    out = W.save_pretrained(comps, tmp_path / "w")
    first = W.weights_checksum(out)
    assert len(first) == 64 and first == W.weights_checksum(out)
    cache = json.loads((out / W.CHECKSUM_FILENAME).read_text())
    assert cache["sha256"] == first and "unet/diffusion_pytorch_model.safetensors" in cache["files"]
    projector = out / "id_extractor" / W.PROJECTOR_FILENAME
    save_file(
        {
            "weight": torch.ones(CFG.projector_out, CFG.projector_in),
            "bias": torch.ones(CFG.projector_out),
        },
        str(projector),
    )
    assert W.weights_checksum(out) != first


def test_save_refuses_a_non_empty_directory(tmp_path: Path, comps) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "keep.txt").write_text("x")
    with pytest.raises(WeightsError, match="not empty"):
        W.save_pretrained(comps, tmp_path / "w")
    assert (tmp_path / "w" / "keep.txt").read_text() == "x"


def test_load_weights_dispatches_and_reports_missing_paths(tmp_path: Path, files, comps) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WeightsNotFoundError, match="No weights at"):
        W.load_weights(tmp_path / "nope")
    out = W.save_pretrained(comps, tmp_path / "w")
    _state_equal(W.load_weights(out).vae, comps.vae)
    _state_equal(W.load_weights(files["safetensors"], config=CFG).vae, comps.vae)
    with pytest.raises(WeightsError, match="anydoor_config.json"):
        W.load_weights(tmp_path)


# --- CLI ------------------------------------------------------------------------------------


def test_cli_convert_writes_a_loadable_directory(tmp_path: Path, files, comps) -> None:  # type: ignore[no-untyped-def]
    dst = tmp_path / "converted"
    result = CliRunner().invoke(
        cli,
        ["weights", "convert", str(files["ckpt"]), str(dst), "--config", "tiny"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert W.weights_checksum(dst) in result.output
    _state_equal(W.load_pretrained(dst).unet, comps.unet)
    ckpt_info = CliRunner().invoke(cli, ["weights", "info", str(files["ckpt"])])
    assert ckpt_info.exit_code == 0, ckpt_info.output
    # the JSON is stdout alone: warnings (e.g. the restricted-unpickler note) go to stderr
    assert (
        json.loads(ckpt_info.stdout)["parameters"]["cond_stage_model.projector."]
        == (CFG.projector_in + 1) * CFG.projector_out
    )
    info = CliRunner().invoke(cli, ["weights", "info", str(dst)])
    assert info.exit_code == 0 and json.loads(info.stdout)[
        "weights_checksum"
    ] == W.weights_checksum(dst)


def test_cli_convert_with_the_wrong_config_exits_4(tmp_path: Path, files) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(
        cli, ["weights", "convert", str(files["safetensors"]), str(tmp_path / "o")]
    )
    assert result.exit_code == 4
    assert "weights_invalid" in result.output


def test_checksum_of_a_single_checkpoint_file_is_its_sha256(tmp_path: Path) -> None:
    ckpt = tmp_path / "epoch=1-step=8687.ckpt"
    ckpt.write_bytes(b"not really a checkpoint" * 1000)
    assert W.weights_checksum(ckpt) == hashlib.sha256(ckpt.read_bytes()).hexdigest()
