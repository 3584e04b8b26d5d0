"""``tryon compose`` and ``tryon batch`` on the preview engine, through click's runner."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tryon.cli import cli
from tryon.engines import registry

ASSETS = resources.files("tryon") / "assets"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("TRYON_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TRYON_DATA_DIR", str(tmp_path / "var"))
    registry.clear_cache()
    yield
    registry.clear_cache()


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _images(tmp_path: Path) -> tuple[list[str], list[str], str]:
    scenes, refs = [], []
    for j in range(3):
        a = np.full((288, 384, 3), (150 + 30 * j, 180, 200 - 20 * j), np.uint8)
        a[220:] = (90, 70, 50)
        Image.fromarray(a).save(tmp_path / f"scene{j}.png")
        scenes.append(str(tmp_path / f"scene{j}.png"))
    for i in range(3):
        a = np.full((300, 260, 3), 250, np.uint8)
        a[50:260, 40 + 10 * i:220 - 10 * i] = [(200, 30, 30), (30, 160, 30), (30, 30, 200)][i]
        Image.fromarray(a).save(tmp_path / f"ref{i}.png")
        refs.append(str(tmp_path / f"ref{i}.png"))
    m = np.zeros((288, 384), np.uint8)
    m[60:200, 40:140] = 255
    Image.fromarray(m).save(tmp_path / "obj.png")
    return scenes, refs, str(tmp_path / "obj.png")


@pytest.mark.parametrize("command", ["compose", "batch"])
def test_help(command: str) -> None:
    code, out = _invoke(command, "--help")
    assert code == 0 and "--engine" in out


def test_compose_insert_move_and_typed_errors(tmp_path: Path) -> None:
    scenes, refs, obj = _images(tmp_path)
    code, out = _invoke("compose", "--engine", "preview", "-q", "--scene", scenes[0],
                        "--reference", refs[0], "--box", "40,60,140,200", "--samples", "2",
                        "--out", str(tmp_path / "c.png"))
    assert code == 0, out
    assert (tmp_path / "c.png").exists() and (tmp_path / "c-1.png").exists()
    code, out = _invoke("compose", "--engine", "preview", "-q", "--op", "move", "--scene",
                        scenes[0], "--object-mask", obj, "--box", "200,60,300,200",
                        "--out", str(tmp_path / "m.png"))
    assert code == 0 and "op=move" in out, out
    code, out = _invoke("compose", "--engine", "preview", "-q", "--scene", scenes[0],
                        "--reference", refs[0], "--box", "10,10,20,20", "--out",
                        str(tmp_path / "x.png"))
    assert code == 3 and "region_too_small" in out


def test_batch_3x3_writes_results_and_a_reproducible_manifest(tmp_path: Path) -> None:
    scenes, refs, _ = _images(tmp_path)
    args = ["batch", "--engine", "preview", "-q", "--seed", "5", "--box", "40,60,140,200"]
    for s in scenes:
        args += ["--scene", s]
    for r in refs:
        args += ["--reference", r]
    code, out = _invoke(*args, "--out-dir", str(tmp_path / "a"))
    assert code == 0 and "9/9 items done" in out, out
    lines = [json.loads(x) for x in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert [x["item"] for x in lines] == list(range(9))
    assert [x["seed"] for x in lines] == [5 + i for i in range(9)]
    for x in lines:
        data = (tmp_path / "a" / x["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == x["sha256"]
        assert x["engine"] == "preview" and "weights_checksum" in x and x["box"]
    # the same inputs and seed give the same files
    code, _ = _invoke(*args, "--out-dir", str(tmp_path / "b"))
    again = [json.loads(x) for x in (tmp_path / "b" / "manifest.jsonl").read_text().splitlines()]
    assert [x["sha256"] for x in again] == [x["sha256"] for x in lines]
