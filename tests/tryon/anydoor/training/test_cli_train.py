"""``tryon train`` on a tiny YAML config and ``tryon evaluate`` on a tiny VITON-HD split."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from tryon.anydoor.weights import load_pretrained
from tryon.cli import cli

REPO = Path(__file__).resolve().parents[4]


def _write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])


def _write_labels(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette([v for i in range(256) for v in (i * 7 % 256, i * 13 % 256, i * 29 % 256)])
    im.save(path)


def _image(seed: int, h: int = 64, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 256, 3)
    img = (base[None, None] + 2 * yy[..., None] + xx[..., None]) % 256
    return img.astype(np.uint8)


def _rect(h: int, w: int, y: int, x: int, rh: int, rw: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y : y + rh, x : x + rw] = 1
    return m


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    data = root / "objects"
    for i in range(3):
        _write_rgb(data / "images" / f"obj{i}.png", _image(i))
        _write_labels(data / "masks" / f"obj{i}.png", _rect(64, 64, 18 + i, 16, 22, 26))
    config = {
        "output_dir": str(root / "run"),
        "seed": 1,
        "model": {"init": "tiny-random", "config": "tiny"},
        "data": {"length": 4, "pair": {"ref_size": 28, "size": 64},
                 "datasets": [{"type": "image_mask", "root": str(data), "weight": 1.0}]},
        "train": {"steps": 2, "batch_size": 2, "lr": 1e-4},
        "checkpoint": {"every": 2},
        "validation": {"every": 2, "num_samples": 2, "num_inference_steps": 2},
        "log": {"every": 1},
    }
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(cli, ["train", "--config", str(path), "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return {"root": root, "run": root / "run", "config": path, "output": result.output}


def test_train_writes_checkpoint_log_validation_and_a_loadable_model(trained: dict[str, Path]) -> None:
    run = trained["run"]
    ckpt = run / "checkpoints" / "step_0000002"
    assert (ckpt / "trainable.safetensors").is_file() and (ckpt / "optimizer.bin").is_file()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 2
    lines = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "train/loss" in x] == [1, 2]
    assert any("val/loss" in x for x in lines)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    grid = np.asarray(Image.open(run / "validation" / "step_0000002.png"))
    assert grid.shape == (2 * 64, 3 * 64, 3)
    components = load_pretrained(run / "model")
    assert components.config.image_size == 64
    assert "exported model" in trained["output"]


def test_train_resume_latest_continues_from_the_checkpoint(trained: dict[str, Path]) -> None:
    result = CliRunner().invoke(cli, ["train", "--config", str(trained["config"]), "--resume",
                                      "latest", "--steps", "3", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "trained to step 3" in result.output
    lines = [json.loads(x) for x in (trained["run"] / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "train/loss" in x] == [1, 2, 3]


def test_train_rejects_a_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path), "data": {}, "train": {"lr_typo": 1}}))
    result = CliRunner().invoke(cli, ["train", "--config", str(path)])
    assert result.exit_code == 1
    assert "config_invalid" in result.output and "lr_typo" in result.output


def test_evaluate_writes_a_report_on_a_viton_split(trained: dict[str, Path]) -> None:
    split = trained["root"] / "viton_test"
    for i in range(2):
        person = _image(10 + i, 64, 48)
        parse = np.zeros((64, 48), np.uint8)
        parse[20:44, 12:36] = 5  # upper clothes
        parse[5:15, 18:30] = 2
        _write_rgb(split / "image" / f"{i:05d}_00.jpg", person)
        _write_labels(split / "image-parse-v3" / f"{i:05d}_00.png", parse)
        cloth = np.full((64, 48, 3), 255, np.uint8)
        cloth[12:52, 8:40] = _image(20 + i, 40, 32)
        _write_rgb(split / "cloth" / f"{i:05d}_00.jpg", cloth)
        cmask = np.zeros((64, 48), np.uint8)
        cmask[12:52, 8:40] = 255
        _write_rgb(split / "cloth-mask" / f"{i:05d}_00.jpg", np.repeat(cmask[..., None], 3, 2))
    out = trained["root"] / "report.json"
    result = CliRunner().invoke(cli, ["evaluate", "--weights", str(trained["run"] / "model"),
                                      "--data", str(split), "--out", str(out), "--steps", "2",
                                      "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    report = json.loads(out.read_text())
    assert report["num_pairs"] == 2 and len(report["pairs"]) == 2
    mean = report["mean"]
    assert -1 <= mean["ssim"] <= 1 and 0 < mean["psnr"] < 100 and 0 < mean["l1"] < 1
    assert -1 <= mean["dino"] <= 1
    assert report["pairs"][0]["source"].startswith("viton_hd:")


# --- issue 9: D2, D3, D5, D6 through the command line ------------------------------------------


def _objects(root: Path, masks: list[np.ndarray]) -> Path:
    for i, mask in enumerate(masks):
        _write_rgb(root / "images" / f"obj{i}.png", _image(i))
        _write_labels(root / "masks" / f"obj{i}.png", mask)
    return root


def _config(root: Path, objects: Path, **over: object) -> Path:
    config = {
        "output_dir": str(root / "run"),
        "seed": 1,
        "model": {"init": "tiny-random", "config": "tiny"},
        "data": {"length": 4, "datasets": [{"type": "image_mask", "root": str(objects)}]},
        "train": {"steps": 2, "batch_size": 2, "lr": 1e-4},
        "checkpoint": {"every": 0},
        "validation": {"every": 0},
        "log": {"every": 1, "tensorboard": False},
        "export": False,
        **over,
    }
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


GOOD = _rect(64, 64, 18, 16, 22, 26)
EMPTY = np.zeros((64, 64), np.uint8)


def test_train_sizes_pairs_from_the_model_and_refuses_a_mismatch(tmp_path: Path) -> None:
    data = _objects(tmp_path / "objects", [GOOD, GOOD])
    # no pair sizes: the tiny model's 28 / 64 are used (the defaults, 224 / 512, would not fit)
    result = CliRunner().invoke(cli, ["train", "--config", str(_config(tmp_path, data)), "-q"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    # explicit sizes that the model cannot read: a typed error before the first step
    bad = _config(tmp_path, data, output_dir=str(tmp_path / "bad"),
                  data={"pair": {"ref_size": 224}, "datasets": [{"type": "image_mask",
                                                                 "root": str(data)}]})
    result = CliRunner().invoke(cli, ["train", "--config", str(bad), "-q"])
    assert result.exit_code == 1
    assert "config_invalid" in result.output and "ref_size is 224" in result.output
    assert "needs 28" in result.output
    assert not (tmp_path / "bad" / "train_log.jsonl").exists()


def test_train_reports_skipped_pairs_by_reason(tmp_path: Path) -> None:
    data = _objects(tmp_path / "objects", [GOOD, EMPTY])
    config = _config(tmp_path, data, train={"steps": 3, "batch_size": 2, "lr": 1e-4})
    result = CliRunner().invoke(cli, ["train", "--config", str(config), "-q"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    lines = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    last = lines[-1]
    assert last["step"] == 3
    # half the items have an empty mask: over 6 samples some draws hit it (seeded, so stable)
    assert last["data/skipped/ref_mask_score"] >= 1
    assert last["data/skipped"] == last["data/skipped/ref_mask_score"]
    assert 0 < last["data/skipped_share"] < 1
    counts = [x["data/skipped"] for x in lines]
    assert counts == sorted(counts)  # cumulative


def test_train_with_every_pair_rejected_is_a_typed_error(tmp_path: Path) -> None:
    data = _objects(tmp_path / "objects", [EMPTY, EMPTY])
    result = CliRunner().invoke(cli, ["train", "--config", str(_config(tmp_path, data)), "-q"])
    assert result.exit_code == 1
    assert "error [training_data_rejected]" in result.output
    assert "ref_mask_score: 20" in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not a raw SampleRejected
    assert "Traceback" not in result.output


def test_train_refuses_a_multi_process_launch_without_cuda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    data = _objects(tmp_path / "objects", [GOOD, GOOD])
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}  # what torchrun sets
    result = CliRunner(env=env).invoke(cli, ["train", "--config", str(_config(tmp_path, data))])
    assert result.exit_code == 1
    assert "config_invalid" in result.output and "WORLD_SIZE=2" in result.output
    assert not (tmp_path / "run").exists()


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "tryon.cli", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _interrupt(proc: subprocess.Popen[bytes], ready: Callable[[bytes], bool]) -> tuple[int, str]:
    """Wait until ``ready(stderr so far)``, send SIGINT, return (exit code, stderr)."""
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(
        lambda: proc.stderr.read1(4096) if proc.stderr else b"", b"")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while not ready(b"".join(chunks)):
        assert proc.poll() is None, b"".join(chunks).decode(errors="replace")
        assert time.monotonic() < deadline, "the command never got going"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=120)
    reader.join(timeout=10)
    return code, b"".join(chunks).decode(errors="replace")


def test_sigint_stops_train_with_exit_130(tmp_path: Path) -> None:
    data = _objects(tmp_path / "objects", [GOOD, GOOD])
    config = _config(tmp_path, data, train={"steps": 100000, "batch_size": 2, "lr": 1e-4})
    log = tmp_path / "run" / "train_log.jsonl"
    proc = _spawn(["train", "--config", str(config), "--quiet"])
    code, err = _interrupt(proc, lambda _err: log.is_file() and log.read_text().count("\n") >= 1)
    assert code == 130, err
    assert "interrupted" in err and "--resume latest" in err
    assert "Aborted!" not in err


def test_sigint_stops_evaluate_with_exit_130(trained: dict[str, Path]) -> None:
    split = trained["root"] / "sigint_split"
    for i in range(3):
        _write_rgb(split / "images" / f"o{i}.png", _image(30 + i))
        _write_labels(split / "masks" / f"o{i}.png", GOOD)
    out = trained["root"] / "sigint_report.json"
    proc = _spawn(["evaluate", "--weights", str(trained["run"] / "model"), "--data", str(split),
                   "--layout", "image_mask", "--out", str(out), "--steps", "1000",
                   "--device", "cpu", "--no-dino"])
    code, err = _interrupt(proc, lambda err: b"evaluate:" in err)
    assert code == 130, err
    assert "interrupted" in err and "Aborted!" not in err
    assert not out.exists()
