"""Pre-flight verdicts and boxes on real photographs (tests/data/real_photos, see its
SOURCES.md): the expected verdicts and the boxes below were judged and drawn by hand on the
committed files, not copied from the code's output.

Boxes are ``[x1, y1, x2, y2]`` in the committed file's pixels.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tryon.images import normalize_upload
from tryon.types import Box
from tryon.vision.analysis import PhotoAnalysis, analyze_photo
from tryon.vision.analysis_input import analysis_input

PHOTOS = Path(__file__).resolve().parents[2] / "data" / "real_photos"

OK, NP, MP, PNU, PTS = None, "no_person", "multiple_people", "pose_not_usable", "person_too_small"
CATS = ("upper_body", "lower_body", "dress", "outerwear")

#: photo -> expected verdict for (upper_body, lower_body, dress, outerwear), and what it shows
EXPECTED: dict[str, tuple[tuple[str | None, ...], str]] = {
    "p2s_single_cam01_f000": ((OK, OK, OK, OK), "frontal full body, lab clutter"),
    "s2d_f000_frontal": ((OK, OK, OK, OK), "frontal full body, outdoors against a tree"),
    "s2d_f090_side": ((OK, OK, OK, OK), "side view, walking"),
    "p2s_single_cam04_f099": ((OK, OK, OK, OK), "back view, arms held out"),
    "skimage_astronaut": ((OK, PNU, PNU, OK), "waist-up portrait"),
    "mpl_grace_hopper": ((OK, PNU, PNU, OK), "head and shoulders portrait"),
    "s2d_f205_crouch": ((PNU,) * 4, "crouching, torso horizontal"),
    "p2s_single_cam02_f050": ((PNU,) * 4, "leaning far sideways, one leg up"),
    "skimage_camera": ((PNU,) * 4, "leaning over a tripod, arms up in front"),
    "p2s_multi_cam01_f000": ((MP,) * 4, "two people, one in front of the other"),
    "p2s_multi_cam03_f000": ((MP,) * 4, "two people apart"),
    "p2s_multi_cam04_f000": ((MP,) * 4, "two people apart, one from behind"),
    "s2d_f090_wide": ((MP,) * 4, "two people in a wide scene"),
    "s2d_f000_wide": ((PTS,) * 4, "one small person in a wide scene"),
    "s2d_f205_trees": ((NP,) * 4, "trees, no person"),
    "s2d_f205_hut": ((NP,) * 4, "a hut and grass, no person"),
    "skimage_coffee": ((NP,) * 4, "a cup of coffee"),
    "skimage_chelsea": ((NP,) * 4, "a cat"),
    "skimage_rocket": ((NP,) * 4, "a rocket on its pad"),
}
#: judged by eye but not met: the pose detector keys on faces, and this bystander (about three
#: quarters of the subject's height) wears a face mask and holds a hand to her face
KNOWN_MISSES: dict[str, tuple[tuple[str | None, ...], str]] = {
    "p2s_single_cam02_f000": ((MP,) * 4, "frontal full body, masked bystander beside him"),
}

#: hand-drawn torso (shirt area) boxes: the upper_body box must cover them
TORSO = {
    "s2d_f090_side": [222, 205, 300, 345],  # the side view: the box must be as deep as the body
    "s2d_f000_frontal": [180, 135, 295, 270],
    "p2s_single_cam01_f000": [89, 250, 194, 375],
}
#: hand-drawn legs (waist to ankles) boxes: the lower_body box must cover them
LEGS = {
    "s2d_f000_frontal": [183, 265, 280, 450],
    "p2s_single_cam01_f000": [74, 365, 179, 600],
    "s2d_f090_side": [205, 345, 300, 520],
}
#: hand-drawn boxes around each person who matters
PEOPLE = {
    "p2s_multi_cam01_f000": [[130, 170, 305, 615], [305, 420, 515, 940]],
    "p2s_multi_cam03_f000": [[88, 265, 188, 548], [256, 217, 431, 704]],
    "p2s_multi_cam04_f000": [[77, 256, 357, 755], [345, 213, 509, 500]],
    "s2d_f090_wide": [[328, 35, 412, 265], [618, 300, 690, 540]],
}


def _analyse(data: bytes, estimator) -> PhotoAnalysis:
    """The upload path (web/api/photos.py): the intake's one decode, reduced once to analysis
    resolution for the analyzer; results in the stored photo's pixels."""
    photo = analysis_input(normalize_upload(data).rgb)
    return analyze_photo(photo.image, pose_estimator=estimator, photo_size=photo.photo_size)


def _verdicts(a: PhotoAnalysis) -> tuple[str | None, ...]:
    return tuple(a.verdicts[c] for c in CATS)


@pytest.fixture(scope="module")
def analyses(pose_estimator) -> dict[str, PhotoAnalysis]:
    names = [*EXPECTED, *KNOWN_MISSES]
    return {n: _analyse((PHOTOS / f"{n}.jpg").read_bytes(), pose_estimator) for n in names}


def test_every_photo_is_listed_in_sources() -> None:
    sources = (PHOTOS / "SOURCES.md").read_text()
    files = sorted(p.stem for p in PHOTOS.glob("*.jpg"))
    assert sorted([*EXPECTED, *KNOWN_MISSES]) == files
    for name in files:
        assert f"{name}.jpg" in sources


@pytest.mark.parametrize("name", list(EXPECTED))
def test_verdicts_on_real_photos(analyses, name: str) -> None:
    expected, what = EXPECTED[name]
    assert _verdicts(analyses[name]) == expected, what


@pytest.mark.parametrize("name", list(KNOWN_MISSES))
@pytest.mark.xfail(strict=True, reason="masked bystander not found by the pose detector")
def test_known_misses(analyses, name: str) -> None:
    expected, what = KNOWN_MISSES[name]
    assert _verdicts(analyses[name]) == expected, what


def _covers(outer: Box, inner: list[int]) -> float:
    x1, y1, x2, y2 = inner
    ix = max(0, min(outer.x2, x2) - max(outer.x1, x1))
    iy = max(0, min(outer.y2, y2) - max(outer.y1, y1))
    return ix * iy / ((x2 - x1) * (y2 - y1))


@pytest.mark.parametrize(("name", "category", "hand"), [
    *((n, "upper_body", b) for n, b in TORSO.items()),
    *((n, "lower_body", b) for n, b in LEGS.items()),
])  # fmt: skip
def test_boxes_cover_the_hand_drawn_body_part(analyses, name, category, hand) -> None:
    box = analyses[name].placements[category].box
    assert _covers(box, hand) >= 0.9, (box.as_list(), hand)
    # ... without swallowing the photo: the body part is a fair share of the box
    hand_area = (hand[2] - hand[0]) * (hand[3] - hand[1])
    assert hand_area >= 0.3 * box.area, (box.as_list(), hand)


@pytest.mark.parametrize("name", list(PEOPLE))
def test_every_person_who_matters_is_found(analyses, name) -> None:
    a = analyses[name]
    assert a.people == len(PEOPLE[name]) == len(a.people_boxes)
    assert a.details["upper_body"]["boxes"] == a.people_boxes
    unmatched = list(a.people_boxes)
    for hx1, hy1, hx2, hy2 in PEOPLE[name]:
        match = next(
            b for b in unmatched
            if hx1 <= (b[0] + b[2]) / 2 <= hx2 and hy1 <= (b[1] + b[3]) / 2 <= hy2
            and (b[3] - b[1]) >= 0.6 * (hy2 - hy1)
        )  # fmt: skip
        unmatched.remove(match)


def test_small_person_is_told_to_come_closer(analyses) -> None:
    d = analyses["s2d_f000_wide"].details["upper_body"]
    assert d["reason"] == "person_too_far" and "closer" in d["message"]


@pytest.mark.parametrize(("name", "reasons"), [
    ("s2d_f205_crouch", {"torso_not_upright"}),
    ("p2s_single_cam02_f050", {"torso_not_upright"}),
    # leaning ~28 degrees, and the pose puts a hip on his forearm: either rule refuses it
    ("skimage_camera", {"torso_not_upright", "landmarks_inconsistent"}),
])  # fmt: skip
def test_bent_bodies_say_why(analyses, name, reasons) -> None:
    for cat in CATS:
        d = analyses[name].details[cat]
        assert d["reason"] in reasons and d["missing"] == [] and d["message"]


@pytest.mark.parametrize("name", sorted([*EXPECTED, *KNOWN_MISSES]))
def test_verdict_does_not_change_between_jpeg_quality_85_and_95(pose_estimator, name) -> None:
    with Image.open(PHOTOS / f"{name}.jpg") as im:
        rgb = np.asarray(im.convert("RGB"))
    out = []
    for quality in (85, 95):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
        out.append(_verdicts(_analyse(buf.getvalue(), pose_estimator)))
    assert out[0] == out[1]


@pytest.mark.parametrize("name", ["s2d_f090_side", "s2d_f000_frontal"])
@pytest.mark.parametrize("length", ["cropped", "long"])
def test_stored_record_recomputes_the_same_placement(analyses, name: str, length: str) -> None:
    """A try-on for another garment length recomputes the placement from the photo's record
    (worker and API: tryon.engines.request.stored_analysis); it must equal the placement the
    live analysis gives, silhouette widths included (a side view collapses without them)."""
    from tryon.engines.request import JobParams, resolve_placement, stored_analysis
    from tryon.types import Category, GarmentLength

    live = analyses[name]
    record = live.to_dict()  # what web/api/photos.py stores on the photo row
    body = {"spans": record["spans"], "on_body": record["on_body"]}
    stored = stored_analysis(record["pose"], record["verdicts"],
                             {k: v for k, v in record["placements"].items()},
                             live.image_size, body)
    params = JobParams(category=Category.UPPER_BODY, length=GarmentLength(length))
    assert resolve_placement(stored, params).box == resolve_placement(live, params).box
