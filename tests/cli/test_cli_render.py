"""``tryon render`` / ``tryon demo`` through click's runner, and one real
subprocess of the installed ``tryon`` script."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tryon.cli import cli
from tryon.engines import registry
from tryon.images import load_image_file

ASSETS = resources.files("tryon") / "assets"
PERSON = str(ASSETS / "person_astronaut.png")
TSHIRT = str(ASSETS / "garment_tshirt.png")
TROUSERS = str(ASSETS / "garment_trousers.png")


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


def _read_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("command", ["render", "demo", "doctor"])
def test_help(command: str) -> None:
    code, out = _invoke(command, "--help")
    assert code == 0 and "Usage:" in out
    if command != "demo":
        assert "Exit codes" in out


def test_render_preview_writes_result_and_overlay(tmp_path: Path) -> None:
    out, overlay = tmp_path / "out.png", tmp_path / "overlay.png"
    code, text = _invoke(
        "render", "--person", PERSON, "--garment", TSHIRT, "--category", "upper_body",
        "--engine", "preview", "--out", str(out), "--overlay", str(overlay), "-q",
    )
    assert code == 0, text
    assert "engine=preview" in text
    # the CLI uses the service's intake (photos normalised through JPEG q95): compare with that
    person = load_image_file(PERSON).rgb
    result = _read_png(out)
    assert result.shape == person.shape
    changed = (result != person).any(axis=-1)
    assert changed.mean() > 0.1
    # the face (top rows) is untouched: it is outside the upper-body placement
    assert not changed[:120].any()
    assert _read_png(overlay).shape == person.shape
    assert not np.array_equal(_read_png(overlay), person)


def test_render_explicit_box_and_samples(tmp_path: Path) -> None:
    out = tmp_path / "boxed.png"
    code, text = _invoke(
        "render", "--person", PERSON, "--garment", TSHIRT, "--category", "upper_body",
        "--box", "100,200,300,380", "--samples", "2", "--out", str(out), "-q",
    )
    assert code == 0, text
    result = _read_png(out)
    person = load_image_file(PERSON).rgb
    changed = (result != person).any(axis=-1)
    assert changed[200:380, 100:300].mean() > 0.3
    outside = np.ones(changed.shape, dtype=bool)
    outside[200:380, 100:300] = False
    assert not changed[outside].any()
    # samples are never copies: each seed draws its own fit
    assert not np.array_equal(_read_png(tmp_path / "boxed-1.png"), result)


def test_render_bad_image_exits_3(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not an image")
    code, text = _invoke("render", "--person", str(bad), "--garment", TSHIRT,
                         "--category", "upper_body", "--out", str(tmp_path / "o.png"))
    assert code == 3
    assert "error [" in text
    assert not (tmp_path / "o.png").exists()


def test_render_unusable_pose_exits_3(tmp_path: Path) -> None:
    code, text = _invoke("render", "--person", PERSON, "--garment", TROUSERS, "--category",
                         "lower_body", "--out", str(tmp_path / "o.png"), "-q")
    assert code == 3 and "pose_not_usable" in text


@pytest.mark.parametrize("engine", ["anydoor", "nope"])
def test_render_unavailable_engine_exits_4(tmp_path: Path, engine: str) -> None:
    code, text = _invoke("render", "--person", PERSON, "--garment", TSHIRT, "--category",
                         "upper_body", "--engine", engine, "--out", str(tmp_path / "o.png"))
    assert code == 4 and "engine_unavailable" in text


def test_render_bad_box_is_a_usage_error(tmp_path: Path) -> None:
    code, _ = _invoke("render", "--person", PERSON, "--garment", TSHIRT, "--category",
                      "upper_body", "--box", "5,5,1,1", "--out", str(tmp_path / "o.png"))
    assert code == 2


def test_demo_writes_contact_sheet(tmp_path: Path) -> None:
    code, text = _invoke("demo", "--out", str(tmp_path / "demo"), "-q")
    assert code == 0, text
    sheet = _read_png(tmp_path / "demo" / "contact_sheet.png")
    # header, the garment row and three people rows of 256 px cells and captions; 4 columns
    # (person + three garments, preview only)
    assert sheet.shape[1] == 4 * 256 and sheet.shape[0] > 4 * 256
    # both real full-body people render all three categories
    for person in ("sports2d_man", "sports2d_woman"):
        for garment in ("tee", "jeans", "dress"):
            result = _read_png(tmp_path / "demo" / f"{person}-{garment}-preview.png")
            assert result.ndim == 3
    assert (tmp_path / "demo" / "astronaut-tee-preview.png").is_file()
    # the waist-up photo cannot place trousers or a dress: the cell shows the typed error
    assert text.count("pose_not_usable") == 2
    assert not (tmp_path / "demo" / "astronaut-jeans-preview.png").exists()
    assert not (tmp_path / "demo" / "astronaut-dress-preview.png").exists()


def test_demo_in_a_real_subprocess(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("tryon")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRYON_")}
    env["TRYON_DATA_DIR"] = str(tmp_path / "var")
    proc = subprocess.run(
        [str(exe), "demo", "--out", "tmp", "-q"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    sheet_path = tmp_path / "tmp" / "contact_sheet.png"
    assert f"contact sheet: {Path('tmp') / 'contact_sheet.png'}" in proc.stdout
    with Image.open(sheet_path) as im:
        im.verify()
    with Image.open(sheet_path) as im:
        assert im.format == "PNG" and im.size[0] == 4 * 256
