"""The upload path's pre-flight (web/api/photos.py -> web/analyzer.py) analyses the pixels the
intake already decoded, reduced once to analysis resolution: the stored photo is never decoded
a second time, and the result is the one a decode of the stored bytes gives."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tryon.images import normalize_upload
from tryon.vision.analysis import analyze_photo_json
from tryon.vision.analysis_input import (
    ANALYSIS_SIDE,
    AnalysisInput,
    analysis_input,
    reduce_for_analysis,
)
from web.analyzer import _run_analysis

PHOTO = Path(__file__).resolve().parents[2] / "data" / "real_photos" / "p2s_single_cam01_f000.jpg"


def phone_jpeg() -> bytes:
    """A phone-like upload: a tall photo stored sideways with EXIF orientation 6 (rotate 90
    degrees clockwise to view), larger than the intake's 2048 px long side."""
    with Image.open(PHOTO) as im:
        upright = im.convert("RGB")
    upright = upright.resize((upright.width * 5 // 2, upright.height * 5 // 2),
                             Image.Resampling.BICUBIC)
    raw = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    raw.save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


@pytest.fixture(scope="module")
def stored():
    img = normalize_upload(phone_jpeg())
    assert img.content_type == "image/png"  # rotated and scaled down: stored lossless as PNG
    assert max(img.rgb.shape[:2]) == 2048 and img.rgb.shape[0] > img.rgb.shape[1]
    return img


def test_analysis_input_is_the_reduced_intake_pixels(stored) -> None:
    photo = analysis_input(stored.rgb)
    h, w = stored.rgb.shape[:2]
    assert photo.photo_size == (w, h) == stored.size
    assert max(photo.image.shape[:2]) == ANALYSIS_SIDE
    with Image.open(io.BytesIO(stored.encoded)) as im:
        decoded = np.asarray(im.convert("RGB"))
    assert np.array_equal(photo.image, reduce_for_analysis(decoded))
    assert len(pickle.dumps(photo)) < 1.5 * 2**20  # what crosses to the analyzer process
    with pytest.raises(ValueError):
        AnalysisInput(stored.rgb, (w // 2, h // 2))  # full-size pixels of another size


def test_the_analyzer_decodes_nothing_and_answers_in_stored_pixels(stored, monkeypatch) -> None:
    photo = analysis_input(stored.rgb)
    before = analyze_photo_json(stored.encoded, with_person_mask=True)  # decodes the PNG

    def no_decode(*a, **k):
        raise AssertionError("the stored photo was decoded again in the analyzer")

    with monkeypatch.context() as m:
        m.setattr(Image, "open", no_decode)
        m.setattr(cv2, "imdecode", no_decode)
        m.setattr(cv2, "imread", no_decode)
        out = _run_analysis(photo, None)
    assert out["image_size"] == list(stored.size)
    # the same verdicts, boxes and mask as decoding the stored bytes (lossless PNG, same reduce)
    for key in ("verdicts", "placements", "people_boxes", "spans", "pose"):
        assert out[key] == before[key], key
    assert out["verdicts"]["upper_body"] is None
    with Image.open(io.BytesIO(out["person_mask_png"])) as im:
        assert im.mode == "L" and im.size == stored.size  # upsampled once to the photo's size
    assert out["person_mask_png"] == before["person_mask_png"]
