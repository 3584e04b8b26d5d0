"""Issue 9's seams, end to end in one process: a photo uploaded through the API with a REAL
pose and person mask (the shipped astronaut through MediaPipe), a try-on created through the
API, then run by the worker's :class:`JobRunner` with the preview engine. The worker must render
what ``tryon render`` renders for the same inputs: the garment's length moves the box, an
explicit box is authoritative, ``mask: shape`` paints only the person, and every numeric limit
the API accepts is one the pipeline accepts."""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from webapi_support import Ctx, garment_png, make_ctx

from tryon.anydoor.limits import CONTROL_STRENGTH, GUIDANCE, NUM_SAMPLES, SEED, STEPS
from tryon.engines.preview import PreviewEngine
from tryon.engines.request import JobParams, PersonInputs, build_request, stored_analysis
from tryon.records.models import Garment, Photo, TryOnResult
from tryon.types import Box, Category, MaskMode
from workers.inputs import decode_mask, decode_rgb
from workers.runner import JobRunner

ASTRONAUT = (resources.files("tryon") / "assets" / "person_astronaut.png").read_bytes()


@pytest.fixture(scope="module")
def real_analysis() -> dict[str, Any]:
    """The analysis the API's MediaPipe pool returns for the astronaut (computed once)."""
    from tryon.images import IntakeLimits, normalize_upload
    from tryon.vision.analysis import analyze_photo_json

    encoded = normalize_upload(ASTRONAUT, IntakeLimits()).encoded
    out = analyze_photo_json(encoded, None, with_person_mask=True)
    assert out["pose"] is not None and out["person_mask_png"] is not None
    return out


@pytest.fixture
def seam(tmp_path: Path, real_analysis: dict[str, Any]) -> Ctx:
    ctx = make_ctx(tmp_path, TRYON_PHOTO_ANALYZER=lambda data, cats=None: dict(real_analysis))
    yield ctx
    ctx.factory.kw["bind"].dispose()


def _photo(ctx: Ctx) -> str:
    r = ctx.client.post("/v1/photos", headers=ctx.h("shopper_a"),
                        content_type="multipart/form-data",
                        data={"image": (io.BytesIO(ASTRONAUT), "me.png", "image/png"),
                              "consent": "true"})
    assert r.status_code == 201, r.get_json()
    return str(r.get_json()["id"])


def _garment(ctx: Ctx, length: str = "regular", category: str = "upper_body") -> str:
    gid = ctx.add_garment("merchant_x", category=category)
    with ctx.factory() as s:
        s.get(Garment, gid).length = length
        s.commit()
    return gid


def _run(ctx: Ctx, body: dict[str, Any]) -> TryOnResult:
    r = ctx.client.post("/v1/tryons", json={"engine": "preview", **body},
                        headers=ctx.h("shopper_a"))
    assert r.status_code == 202, r.get_json()
    job_id = r.get_json()["id"]
    runner = JobRunner(settings=ctx.settings, session_factory=ctx.factory, storage=ctx.storage,
                       engine_loader=lambda name, s: PreviewEngine(), sleep=lambda s: None)
    outcome = runner.run(job_id)
    assert outcome.status == "succeeded", outcome
    with ctx.factory() as s:
        return s.query(TryOnResult).filter_by(job_id=job_id).one()


def _png(ctx: Ctx, key: str) -> np.ndarray:
    with Image.open(io.BytesIO(ctx.storage.get(key))) as im:
        return np.asarray(im.convert("RGB"))


def _cli_request(ctx: Ctx, photo_id: str, params: JobParams) -> Any:
    """What ``tryon render`` builds for the same photo (same analysis, same builder)."""
    with ctx.factory() as s:
        p = s.get(Photo, photo_id)
        rgb = decode_rgb(ctx.storage.get(p.image_key))
        mask = decode_mask(ctx.storage.get(p.person_mask_key)) if p.person_mask_key else None
        analysis = stored_analysis(p.pose, p.verdicts, p.placements, (p.width, p.height),
                                   p.body)
    garment = np.zeros((40, 30, 3), np.uint8)
    return build_request(params, PersonInputs(rgb, analysis, mask), garment,
                         np.ones((40, 30), bool), params.seeds())


def test_the_photo_fixture_carries_a_real_pose(seam: Ctx) -> None:
    photo = _photo(seam)
    with seam.factory() as s:
        p = s.get(Photo, photo)
        assert p.pose is not None and len(p.pose["landmarks"]) == 33
        assert p.person_mask_key


def test_garment_length_moves_the_box_through_the_api(seam: Ctx) -> None:
    photo = _photo(seam)
    boxes = {}
    for length in ("cropped", "regular"):
        result = _run(seam, {"photo_id": photo, "garment_id": _garment(seam, length)})
        inputs = result.record["inputs"]
        assert inputs["length"] == length
        boxes[length] = inputs["box"]
        # the service renders what the CLI renders for the same inputs
        cli = _cli_request(seam, photo, JobParams(Category.UPPER_BODY, length=length))
        assert cli.request.box.as_list() == inputs["box"]
    assert boxes["cropped"][3] < boxes["regular"][3]
    assert boxes["cropped"][:3] == boxes["regular"][:3]


def test_explicit_box_is_authoritative_through_the_api(seam: Ctx) -> None:
    photo = _photo(seam)
    box = [40, 60, 200, 220]
    result = _run(seam, {"photo_id": photo, "garment_id": _garment(seam), "box": box})
    assert result.record["inputs"]["box"] == box
    assert result.record["inputs"]["placement_rule"] == "explicit"
    # the preview engine fitted the garment to the box, not to the shoulders it was given
    assert result.record["fit"] == "box"
    cli = _cli_request(seam, photo, JobParams(Category.UPPER_BODY, box=Box(*box)))
    assert cli.request.explicit_box and cli.request.landmarks is not None
    # without a box the same photo is fitted to the pose
    plain = _run(seam, {"photo_id": photo, "garment_id": _garment(seam)})
    assert plain.record["fit"] == "landmarks"


def test_shape_mask_through_the_api_paints_only_the_person(seam: Ctx) -> None:
    photo = _photo(seam)
    shaped = _run(seam, {"photo_id": photo, "garment_id": _garment(seam), "mask": "shape"})
    assert shaped.record["inputs"]["mask"] == "shape"
    cli = _cli_request(seam, photo, JobParams(Category.UPPER_BODY, mask=MaskMode.SHAPE))
    assert cli.mask_used is MaskMode.SHAPE
    target = cli.request.target_mask
    box = np.zeros_like(target)
    b = cli.request.box
    box[b.y1:b.y2, b.x1:b.x2] = True
    assert (box & ~target).any(), "the shape must be smaller than the box on this photo"
    with seam.factory() as s:
        person = decode_rgb(seam.storage.get(s.get(Photo, photo).image_key))
    out = _png(seam, shaped.storage_key)
    np.testing.assert_array_equal(out[~target], person[~target])


# --- numeric limits: the API accepts exactly what the pipeline accepts ----------------------


def _cases(name: str, bound: Any, step: float) -> list[tuple[str, Any, bool]]:
    low, high = bound.low, bound.high
    cast = int if bound.integer else float
    out = [(name, cast(high), True), (name, cast(high + step), False),
           (name, cast(low - step), False)]
    if bound.low_open:
        out += [(name, cast(low), False), (name, cast(low + step), True)]
    else:
        out += [(name, cast(low), True)]
    return out


BOUNDARIES = (_cases("steps", STEPS, 1) + _cases("guidance", GUIDANCE, 0.01)
              + _cases("control_strength", CONTROL_STRENGTH, 0.01)
              + _cases("num_samples", NUM_SAMPLES, 1) + _cases("seed", SEED, 1))


@pytest.mark.parametrize(("field", "value", "accepted"), BOUNDARIES)
def test_numeric_boundaries_through_the_api(tmp_path: Path, field: str, value: Any,
                                            accepted: bool) -> None:
    ctx = make_ctx(tmp_path)
    try:
        photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
        r = ctx.client.post("/v1/tryons", headers=ctx.h("shopper_a"),
                            json={"photo_id": photo, "garment_id": garment, field: value})
        if not accepted:
            assert r.status_code == 422, (field, value, r.get_json())
            assert ctx.publisher.published == []
            return
        assert r.status_code == 202, (field, value, r.get_json())
        stored = r.get_json()["params"]
        assert stored[field] == value
        # what the worker will read back is valid, and the pipeline accepts it
        params = JobParams.from_dict(stored)
        _pipeline().check_inputs(
            _RGB, _MASK, _RGB, _MASK, params.steps, params.guidance, params.control_strength)
    finally:
        ctx.factory.kw["bind"].dispose()


_RGB = np.zeros((32, 32, 3), np.uint8)
_MASK = np.ones((32, 32), np.uint8)
_PIPE: list[Any] = []


def _pipeline() -> Any:
    if not _PIPE:
        from tryon.anydoor.config import AnyDoorConfig
        from tryon.anydoor.models import build_components
        from tryon.anydoor.pipeline import AnyDoorPipeline

        _PIPE.append(AnyDoorPipeline(build_components(AnyDoorConfig.tiny())))
    return _PIPE[0]


def test_the_cli_refuses_guidance_zero_like_the_api(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tryon.cli import cli

    p = tmp_path / "g.png"
    p.write_bytes(garment_png())
    r = CliRunner().invoke(cli, ["render", "--person", str(p), "--garment", str(p),
                                  "--category", "upper_body", "--guidance", "0",
                                  "--out", str(tmp_path / "o.png")])
    assert r.exit_code == 2 and "guidance" in r.output
