"""Issue 9 end to end with a real Celery worker (Redis + PostgreSQL): a photo uploaded through
the API with a REAL pose (the shipped astronaut through MediaPipe), try-ons created through the
API (admitted because the worker advertised ``preview`` in the registry), rendered by the worker.
The garment's length moves the box, an explicit box is authoritative, ``mask: shape`` is used."""

from __future__ import annotations

import io
from importlib import resources
from typing import Any

import pytest

from tryon.records.models import Garment, TryOnResult

pytestmark = pytest.mark.integration

ASTRONAUT = (resources.files("tryon") / "assets" / "person_astronaut.png").read_bytes()


def test_length_box_and_shape_reach_a_real_worker(stack_factory) -> None:  # type: ignore[no-untyped-def]
    from tryon.records.accounts import create_api_key
    from tryon.records.workers import live_engines
    from tryon.vision.analysis import analyze_photo_input
    from web.app import create_app
    from web.services import ServiceOverrides

    st = stack_factory()
    st.start_worker()
    def advertised() -> bool:
        with st.factory() as s:
            return live_engines(s, st.settings.stale_after_s).get("preview") is True

    st.wait_until(advertised, 60, "the worker advertising preview")
    ids = st.seed()
    app = create_app(st.settings, ServiceOverrides(analyzer=lambda data, cats=None:
                     analyze_photo_input(data, cats, with_person_mask=True)))
    client = app.test_client()
    with st.factory() as s:
        key = create_api_key(s, account_id=ids["owner"]).plaintext
        s.commit()
    headers = {"Authorization": f"Bearer {key}"}
    r = client.post("/v1/photos", headers=headers, content_type="multipart/form-data",
                    data={"image": (io.BytesIO(ASTRONAUT), "me.png", "image/png"),
                          "consent": "true"})
    assert r.status_code == 201, r.get_json()
    photo = r.get_json()["id"]

    def run(length: str, **body: Any) -> dict[str, Any]:
        with st.factory() as s:
            s.get(Garment, ids["garment"]).length = length
            s.commit()
        r = client.post("/v1/tryons", headers=headers,
                        json={"photo_id": photo, "garment_id": ids["garment"],
                              "engine": "preview", **body})
        assert r.status_code == 202, r.get_json()
        job = st.wait_status(r.get_json()["id"], {"succeeded", "failed"}, 60)
        assert job.status == "succeeded", (job.error_code, st.logs())
        with st.factory() as s:
            res = s.query(TryOnResult).filter_by(job_id=job.id).one()
            return dict(res.record)

    cropped, regular = run("cropped"), run("regular")
    assert cropped["inputs"]["length"] == "cropped" and regular["inputs"]["length"] == "regular"
    assert cropped["inputs"]["box"][3] < regular["inputs"]["box"][3]
    assert regular["fit"] == "landmarks"
    boxed = run("regular", box=[40, 60, 200, 220])
    assert boxed["inputs"]["box"] == [40, 60, 200, 220] and boxed["fit"] == "box"
    shaped = run("regular", mask="shape")
    assert shaped["inputs"]["mask"] == "shape"
