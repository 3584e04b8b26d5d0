"""Lean weight reading: memory-mapped files, page release that never changes values, DINOv2
splits as views, loaded modules that own their memory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from official_layout import official_state_dict
from safetensors.torch import load_file, save_file

from tryon.anydoor import weights as W
from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.weights_io import Checkpoint, read_checkpoint
from tryon.errors import WeightsError

CFG = AnyDoorConfig.tiny()


@pytest.fixture(scope="module")
def sd() -> dict[str, torch.Tensor]:
    return official_state_dict(CFG, seed=3)


@pytest.fixture(scope="module")
def st_file(tmp_path_factory: pytest.TempPathFactory, sd: dict[str, torch.Tensor]) -> Path:
    path = tmp_path_factory.mktemp("io") / "anydoor.safetensors"
    save_file(sd, str(path))
    return path


def test_safetensors_are_mapped_and_equal_to_the_library_reader(st_file: Path) -> None:
    checkpoint = read_checkpoint(st_file)
    assert checkpoint.mapped
    reference = load_file(str(st_file))
    assert checkpoint.tensors.keys() == reference.keys()
    lo, hi = checkpoint.spans[0]
    for key, value in reference.items():
        got = checkpoint.tensors[key]
        assert got.dtype == value.dtype and got.shape == value.shape, key
        assert torch.equal(got, value), key
        assert lo <= got.data_ptr() < hi, key  # a view of the map, not a copy


def test_release_changes_memory_use_never_values(st_file: Path) -> None:
    checkpoint = read_checkpoint(st_file)
    before = {k: v.clone() for k, v in checkpoint.tensors.items()}
    checkpoint.release(checkpoint.tensors.values())
    for key, value in checkpoint.tensors.items():
        assert torch.equal(value, before[key]), key  # pages come back from the file


def test_release_leaves_ordinary_memory_alone(st_file: Path) -> None:
    checkpoint = read_checkpoint(st_file)
    ordinary = torch.arange(1 << 16, dtype=torch.float32)  # 256 KiB, many whole pages
    checkpoint.release([ordinary])
    assert torch.equal(ordinary, torch.arange(1 << 16, dtype=torch.float32))
    unmapped = Checkpoint(tensors={"x": ordinary}, spans=())
    unmapped.release([ordinary])
    assert torch.equal(ordinary, torch.arange(1 << 16, dtype=torch.float32))


def test_ckpt_is_mapped_and_legacy_format_is_not(tmp_path: Path, sd) -> None:  # type: ignore[no-untyped-def]
    ckpt = tmp_path / "a.ckpt"
    torch.save({"state_dict": sd}, ckpt)
    assert read_checkpoint(ckpt).mapped
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": sd}, legacy, _use_new_zipfile_serialization=False)
    old = read_checkpoint(legacy)
    assert not old.mapped
    key = next(iter(sd))
    assert torch.equal(old.tensors[key], sd[key])


def test_truncated_safetensors_is_a_weights_error(tmp_path: Path, st_file: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(st_file.read_bytes()[: st_file.stat().st_size // 2])
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        read_checkpoint(bad)


def test_dinov2_splits_are_views_of_the_fused_tensors(sd) -> None:  # type: ignore[no-untyped-def]
    prefix = "cond_stage_model.model."
    meta = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    out, _, _ = W.convert_dinov2_state_dict(meta)
    qkv, w12 = meta["blocks.0.attn.qkv.weight"], meta["blocks.0.mlp.w12.weight"]
    q = out["encoder.layer.0.attention.q_proj.weight"]
    gate = out["encoder.layer.0.mlp.gate_proj.weight"]
    assert q.untyped_storage().data_ptr() == qkv.untyped_storage().data_ptr()
    assert gate.untyped_storage().data_ptr() == w12.untyped_storage().data_ptr()
    assert torch.equal(q, qkv[: qkv.shape[0] // 3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_loaded_modules_own_their_memory_and_match_a_cast(st_file: Path, sd, dtype) -> None:  # type: ignore[no-untyped-def]
    reference = W.load_official_state_dict(sd, CFG)  # in memory, float32
    loaded = W.load_official_checkpoint(st_file, CFG, dtype=dtype)
    lo, hi = read_checkpoint(st_file).spans[0]  # another map; check storages by ownership
    pointers = set()
    for name, module in loaded.modules().items():
        ref_state = reference.modules()[name].state_dict()
        for key, value in module.state_dict().items():
            assert value.dtype == (dtype if ref_state[key].is_floating_point() else value.dtype)
            assert torch.equal(value, ref_state[key].to(value.dtype)), f"{name}.{key}"
            ptr = value.untyped_storage().data_ptr()
            assert ptr not in pointers, f"{name}.{key} shares memory"
            pointers.add(ptr)
    assert lo not in pointers


def test_pretrained_round_trip_through_hub_dinov2_names(tmp_path: Path, sd) -> None:  # type: ignore[no-untyped-def]
    comps = W.load_official_state_dict(sd, CFG)
    W.save_pretrained(comps, tmp_path / "saved")
    written = load_file(str(tmp_path / "saved" / "id_extractor" / "dinov2" / "model.safetensors"))
    assert any(".attention.attention.query." in k for k in written)  # transformers' names
    back = W.load_pretrained(tmp_path / "saved", dtype="bfloat16")
    for key, value in back.id_extractor.state_dict().items():
        want = comps.id_extractor.state_dict()[key]
        assert torch.equal(value, want.to(value.dtype)), key


def _resident_kib(path: Path) -> int:
    """Resident KiB of this process's maps of ``path`` (from /proc/self/smaps)."""
    total, current = 0, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:
            current = head[5] if len(head) > 5 else None
        elif line.startswith("Rss:") and current == str(path):
            total += int(head[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="Linux page accounting")
def test_release_hands_the_pages_back(tmp_path: Path) -> None:
    path = tmp_path / "big.safetensors"
    save_file({"w": torch.randn(1024, 2048)}, str(path))  # 8 MiB
    checkpoint = read_checkpoint(path)
    tensor = checkpoint.tensors["w"]
    assert float(tensor.sum()) == pytest.approx(float(tensor.sum()))  # touch every page
    touched = _resident_kib(path.resolve())
    assert touched >= 7 * 1024
    checkpoint.release([tensor])
    assert _resident_kib(path.resolve()) < 64  # at most the header's and edge pages
