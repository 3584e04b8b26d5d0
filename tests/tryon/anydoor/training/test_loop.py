"""The training loop on a tiny model: it learns, trains only what it should, resumes exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.tryon.anydoor.training.synthetic import PairsWithATS, make_pairs
from tryon.anydoor.config import AnyDoorConfig
from tryon.anydoor.models import AnyDoorComponents
from tryon.anydoor.training import loop as L
from tryon.anydoor.training import objective as O
from tryon.anydoor.training.batches import collate_training
from tryon.anydoor.training.checkpoints import TRAINABLE_FILENAME
from tryon.anydoor.training.data import PairDataset
from tryon.anydoor.training.init import init_tiny_random
from tryon.anydoor.training.mix import MixDataset
from tryon.anydoor.training.samples import Pair, PairConfig
from tryon.anydoor.training.trainconfig import TrainConfig
from tryon.anydoor.training.validation import render_samples
from tryon.errors import ConfigError

CFG = AnyDoorConfig.tiny()
CPU = torch.device("cpu")
OVERFIT_STEPS = 120


def run_config(out: Path, **train: Any) -> TrainConfig:
    return TrainConfig.from_mapping(dict(
        output_dir=str(out), data={}, export=False,
        train={"batch_size": 4, "lr": 2e-3, **train},
        checkpoint={"every": 0}, validation={"every": 0}, log={"every": 1000, "tensorboard": False},
    ))


def probe_loss(components: AnyDoorComponents, pairs: list[dict[str, Any]]) -> float:
    """Mean eps-MSE over fixed (noise, t) probes: 8 timesteps spread over [0, 1000) per pair."""
    den = O.Denoiser(components)
    try:
        batch = collate_training([{**p, "timestep": 0} for p in pairs for _ in range(8)])
        batch["time_steps"] = (torch.arange(len(pairs) * 8) * 997 // (len(pairs) * 8)) + 1
        with torch.no_grad():
            loss = O.denoising_loss(den, components, batch, O.noise_schedule(CFG),
                                    torch.Generator().manual_seed(123), device=CPU,
                                    sample_posterior=False)
    finally:
        den.remove_hooks()
    return float(loss)


def sample_error(components: AnyDoorComponents, pairs: list[dict[str, Any]]) -> float:
    """MSE between DDIM samples (20 steps, no guidance) and the targets' latents."""
    batch = collate_training([{**p, "timestep": 0} for p in pairs])
    _, latents = render_samples(components, batch, device=CPU, num_inference_steps=20,
                                  guidance_scale=1.0, seed=1)
    with torch.no_grad():
        target = components.vae.encode(batch["jpg"]).latent_dist.mode() * CFG.vae_scaling_factor
    return float(((latents - target) ** 2).mean())


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def overfit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pairs = make_pairs(CFG, 4)
    untrained = init_tiny_random(CFG, seed=0)
    trained = init_tiny_random(CFG, seed=0)
    before = {name: snapshot(m) for name, m in trained.modules().items()}
    result = L.train(run_config(tmp_path_factory.mktemp("overfit"), steps=OVERFIT_STEPS),
                     components=trained, dataset=PairsWithATS(pairs))
    return dict(pairs=pairs, untrained=untrained, trained=trained, before=before, result=result)


def test_overfit_cuts_probe_loss_and_samples_approach_targets(overfit: dict[str, Any]) -> None:
    pairs = overfit["pairs"]
    loss0 = probe_loss(overfit["untrained"], pairs)
    loss1 = probe_loss(overfit["trained"], pairs)
    # measured: 1.30 -> ~0.16 after 100 steps; a 4x cut leaves ample room for platform noise
    assert loss1 < loss0 / 4, (loss0, loss1)
    err0 = sample_error(overfit["untrained"], pairs)
    err1 = sample_error(overfit["trained"], pairs)
    assert err1 < err0 / 4, (err0, err1)
    assert len(overfit["result"].losses) == OVERFIT_STEPS


def test_trainable_parts_change_and_frozen_parts_are_bit_identical(overfit: dict[str, Any]) -> None:
    before, trained = overfit["before"], overfit["trained"]
    after = {name: snapshot(m) for name, m in trained.modules().items()}

    def changed(module: str, prefix: str) -> bool:
        return any(not torch.equal(before[module][k], after[module][k])
                   for k in before[module] if k.startswith(prefix))

    def identical(module: str, prefix: str = "") -> bool:
        keys = [k for k in before[module] if k.startswith(prefix)]
        assert keys, (module, prefix)
        return all(torch.equal(before[module][k], after[module][k]) for k in keys)

    # trainable: the detail extractor (trunk, hint block, zero convs), decoder, projector
    for prefix in ("down_blocks.", "mid_block.", "controlnet_cond_embedding.",
                   "controlnet_down_blocks.", "controlnet_mid_block."):
        assert changed("controlnet", prefix), prefix
    for prefix in ("up_blocks.", "conv_norm_out.", "conv_out."):
        assert changed("unet", prefix), prefix
    assert changed("id_extractor", "projector.")
    # frozen
    assert identical("vae")
    assert identical("id_extractor", "dino.")
    for prefix in ("conv_in.", "time_embedding.", "down_blocks.", "mid_block."):
        assert identical("unet", prefix), prefix
    # the detail extractor still never reads x_t (pitfall 1)
    assert identical("controlnet", "conv_in.")
    assert not trained.controlnet.conv_in.weight.any()


def test_unet_encoder_gets_no_gradient_path() -> None:
    components = init_tiny_random(CFG, seed=0)
    O.configure_trainable(components)
    den = O.Denoiser(components)
    seen: dict[str, bool] = {}
    hooks = [
        components.unet.down_blocks[0].register_forward_hook(
            lambda m, a, o: seen.__setitem__("down", o[0].requires_grad)),
        components.unet.mid_block.register_forward_hook(
            lambda m, a, o: seen.__setitem__("mid", o.requires_grad)),
        components.unet.up_blocks[-1].register_forward_hook(
            lambda m, a, o: seen.__setitem__("up", o.requires_grad)),
    ]
    t, s = CFG.image_size, CFG.latent_size
    den(torch.randn(1, 4, s, s), torch.tensor([10]), torch.randn(1, 4, t, t),
        torch.randn(1, CFG.num_tokens, CFG.projector_in))
    for h in hooks:
        h.remove()
    den.remove_hooks()
    assert seen == {"down": False, "mid": False, "up": True}


def test_resume_reproduces_the_uninterrupted_loss_curve(tmp_path: Path) -> None:
    pairs = make_pairs(CFG, 5, seed=3)  # 5 items, batch 2, drop_last: 2 batches per epoch
    common = dict(batch_size=2, lr=1e-3, lr_scheduler="constant_with_warmup", lr_warmup_steps=4)

    straight = L.train(run_config(tmp_path / "a", steps=6, **common),
                       components=init_tiny_random(CFG, seed=0), dataset=PairsWithATS(pairs))

    cfg_b = run_config(tmp_path / "b", steps=3, **common)
    first = L.train(cfg_b, components=init_tiny_random(CFG, seed=0), dataset=PairsWithATS(pairs))
    assert first.checkpoint is not None and first.checkpoint.name == "step_0000003"
    # resume mid-epoch (step 3 = epoch 1, batch 1), with a freshly initialised model
    second = L.train(run_config(tmp_path / "b", steps=6, **common).with_overrides(resume="latest"),
                     components=init_tiny_random(CFG, seed=0), dataset=PairsWithATS(pairs))
    assert second.resumed_from == first.checkpoint
    resumed = [loss for _, loss in first.losses + second.losses]
    uninterrupted = [loss for _, loss in straight.losses]
    assert [s for s, _ in first.losses + second.losses] == [1, 2, 3, 4, 5, 6]
    assert resumed == pytest.approx(uninterrupted, rel=1e-5, abs=1e-7)
    # and a curve that really moves, so equality is not trivial
    assert len(set(round(v, 6) for v in uninterrupted)) == 6


def test_checkpoint_holds_only_trainable_tensors(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    components = init_tiny_random(CFG, seed=0)
    result = L.train(run_config(tmp_path, steps=1, batch_size=2), components=components,
                     dataset=PairsWithATS(make_pairs(CFG, 2)))
    assert result.checkpoint is not None
    stored = load_file(str(result.checkpoint / TRAINABLE_FILENAME))
    assert any(k.startswith("projector.") for k in stored)
    assert any(k.startswith("unet.up_blocks.") for k in stored)
    assert not any(k.startswith(("unet.down_blocks.", "unet.mid_block.", "controlnet.conv_in."))
                   for k in stored)


# --- issue 9: D1 (resume with a real mix), D2, D4 ------------------------------------------------


class _MemoryPairs(PairDataset):
    """Pair datasets without files: ``n`` textured images with one square object each."""

    name = "memory"

    def __init__(self, n: int, config: PairConfig) -> None:
        super().__init__(config)
        rng = np.random.default_rng(0)
        self.pairs = []
        for i in range(n):
            image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            mask = np.zeros((64, 64), np.uint8)
            mask[16 + i : 40 + i, 14:42] = 1
            self.pairs.append(Pair(image, mask, image, mask, source=f"memory:{i}"))

    def num_items(self) -> int:
        return len(self.pairs)

    def load_pair(self, index: int, rng: np.random.Generator) -> Pair:
        return self.pairs[index]


class _Recorded(torch.utils.data.Dataset):
    """Wraps a mix and records what each read hands out: ``(epoch, position)`` ->
    ``(source, timestep, hint bytes)``; a position read twice must give the same sample."""

    def __init__(self, inner: MixDataset) -> None:
        self.inner = inner
        self.seen: dict[tuple[int, int], tuple[str, int, bytes]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int) -> Any:
        s = self.inner[i]
        key, value = (self.inner.epoch, i), (s.source, s.timestep, s.hint.tobytes())
        assert self.seen.setdefault(key, value) == value
        return s


def test_resume_with_a_mix_sees_the_samples_of_the_uninterrupted_run(tmp_path: Path) -> None:
    """Two pairs drawn 6 times an epoch: each draw is fresh (D1) and a resume replays them."""

    def mix() -> _Recorded:
        pairs = _MemoryPairs(2, PairConfig(ref_size=28, size=64))
        return _Recorded(MixDataset([pairs], [1.0], 6, seed=5))

    common = dict(batch_size=2, lr=1e-3)  # 3 batches an epoch; 5 steps reach epoch 1
    straight, first, second = mix(), mix(), mix()
    L.train(run_config(tmp_path / "a", steps=5, **common),
            components=init_tiny_random(CFG, seed=0), dataset=straight)
    L.train(run_config(tmp_path / "b", steps=2, **common),
            components=init_tiny_random(CFG, seed=0), dataset=first)
    L.train(run_config(tmp_path / "b", steps=5, **common).with_overrides(resume="latest"),
            components=init_tiny_random(CFG, seed=0), dataset=second)
    # every position the interrupted run read, before or after the resume, gave the sample
    # the uninterrupted run got there; and the resumed half reached into epoch 1
    for part in (first, second):
        assert part.seen.keys() <= straight.seen.keys()
        assert all(straight.seen[k] == v for k, v in part.seen.items())
    assert {e for e, _ in second.seen} == {0, 1}
    # no two draws of one epoch are copies, though only two pairs exist
    epoch0 = [v for (e, _), v in straight.seen.items() if e == 0]
    assert len(epoch0) == 6 and len({src for src, _, _ in epoch0}) == 2
    assert len({(t, h) for _, t, h in epoch0}) == 6


def test_samples_of_another_size_than_the_model_are_refused_before_the_first_step(
    tmp_path: Path,
) -> None:
    wrong = make_pairs(AnyDoorConfig.tiny(image_size=32), 2)
    with pytest.raises(ConfigError, match=r"hint of shape \(32, 32, 4\) but the model needs "
                                          r"\(64, 64, 4\)"):
        L.train(run_config(tmp_path, steps=1, batch_size=2),
                components=init_tiny_random(CFG, seed=0), dataset=PairsWithATS(wrong))
    assert not (tmp_path / "train_log.jsonl").exists()
    assert not (tmp_path / "checkpoints").exists()


def test_check_launch_refuses_several_processes_without_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    L.check_launch({})
    L.check_launch({"WORLD_SIZE": "1"})
    with pytest.raises(ConfigError, match="WORLD_SIZE=4"):
        L.check_launch({"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    L.check_launch({"WORLD_SIZE": "4"})


def _scalar_steps(folder: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_resume_keeps_one_copy_of_each_step_in_the_log_and_tensorboard(tmp_path: Path) -> None:
    pairs = make_pairs(CFG, 4, seed=1)

    def cfg(steps: int) -> TrainConfig:
        return TrainConfig.from_mapping(dict(
            output_dir=str(tmp_path), data={}, export=False,
            train={"batch_size": 2, "lr": 1e-3, "steps": steps},
            checkpoint={"every": 2}, validation={"every": 0},
            log={"every": 1, "tensorboard": True},
        ))

    L.train(cfg(3), components=init_tiny_random(CFG, seed=0), dataset=PairsWithATS(pairs))
    # a crash after step 3 was logged but before its checkpoint: only step 2's survives
    shutil.rmtree(tmp_path / "checkpoints" / "step_0000003")
    second = L.train(cfg(4).with_overrides(resume="latest"),
                     components=init_tiny_random(CFG, seed=0), dataset=PairsWithATS(pairs))
    assert second.resumed_from is not None and second.resumed_from.name == "step_0000002"
    lines = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert lines[2]["train/loss"] == pytest.approx(second.losses[0][1])  # the rerun's step 3
    assert _scalar_steps(tmp_path / "tensorboard", "train/loss") == [1, 2, 3, 4]
