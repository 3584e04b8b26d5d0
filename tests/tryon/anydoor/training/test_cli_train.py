"""``tryon train`` on a tiny YAML config and ``tryon evaluate`` on a tiny VITON-HD split."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from tryon.anydoor.weights import load_pretrained
from tryon.cli import cli


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
