"""Issue 11.4: the OpenAPI document describes the API. Every error status references the one
error body (ErrorOut), the statuses the pipeline answers are declared, and requests valid under
the document are accepted (``num_samples: 4.0``, any cursor of the documented shape)."""

from __future__ import annotations

import json
import re
from typing import Any

from webapi_support import Ctx

ERROR_REF = "#/components/schemas/ErrorOut"


def _spec(ctx: Ctx) -> dict[str, Any]:
    spec: dict[str, Any] = ctx.client.get("/openapi.json").get_json()
    return spec


def _ops(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, item in spec["paths"].items() for m, op in item.items()]


def test_every_error_status_references_error_out(ctx: Ctx) -> None:
    spec = _spec(ctx)
    assert "HTTPError" not in spec["components"]["schemas"]
    assert "ValidationError" not in spec["components"]["schemas"]
    required = spec["components"]["schemas"]["ErrorOut"]["required"]
    assert required == ["error"]
    for method, path, op in _ops(spec):
        for status, resp in op["responses"].items():
            if int(status) >= 400 and int(status) not in (414, 431):
                ref = resp["content"]["application/json"]["schema"]["$ref"]
                # /readyz answers 503 with its usual health body
                want = ("#/components/schemas/HealthOut" if (path, status) == ("/readyz", "503")
                        else ERROR_REF)
                assert ref == want, (method, path, status)
    # non-JSON success bodies are declared as what they are
    assert list(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]


def test_statuses_the_pipeline_answers_are_declared(ctx: Ctx) -> None:
    spec = _spec(ctx)
    for method, path, op in _ops(spec):
        have = set(op["responses"])
        assert {"400", "414", "431"} <= have, (method, path)
        if op.get("security"):
            assert {"401", "404", "429", "503"} <= have, (method, path)
        if "requestBody" in op:
            assert op["requestBody"]["required"] is True
            assert {"413", "415", "422"} <= have, (method, path)
    for path in ("/v1/photos", "/v1/garments", "/v1/tryons"):
        assert "429" in spec["paths"][path]["post"]["responses"]
        assert "Retry-After" in spec["paths"][path]["post"]["responses"]["429"]["headers"]
    # a role-guarded route answers 404 to another role: declared
    assert "404" in spec["paths"]["/v1/ops/queues"]["get"]["responses"]
    r = ctx.client.get("/v1/ops/queues", headers=ctx.h("shopper_a"))
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "not_found"


def test_integral_float_is_a_valid_integer(ctx: Ctx) -> None:
    """JSON Schema counts 4.0 as an integer; it was a 422."""
    photo, garment = ctx.add_photo("shopper_a"), ctx.add_garment("merchant_x")
    body = {"photo_id": photo, "garment_id": garment, "num_samples": 4.0, "steps": 20.0,
            "seed": 7.0, "box": [10.0, 10, 100, 200]}
    r = ctx.client.post("/v1/tryons", data=json.dumps(body),
                        headers=ctx.h("shopper_a", **{"Content-Type": "application/json"}))
    assert r.status_code == 202, r.get_json()
    got = r.get_json()["params"]
    assert got["num_samples"] == 4 and isinstance(got["num_samples"], int)


def test_every_cursor_of_the_documented_shape_is_accepted(ctx: Ctx) -> None:
    spec = _spec(ctx)
    params = {p["name"]: p for p in spec["paths"]["/v1/photos"]["get"]["parameters"]}
    pattern = params["cursor"]["schema"]["pattern"]
    ids = {ctx.add_photo("shopper_a") for _ in range(3)}
    page = ctx.client.get("/v1/photos?limit=2", headers=ctx.h("shopper_a")).get_json()
    assert re.fullmatch(pattern, page["next_cursor"])
    rest = ctx.client.get(f"/v1/photos?limit=2&cursor={page['next_cursor']}",
                          headers=ctx.h("shopper_a")).get_json()
    assert {p["id"] for p in page["items"] + rest["items"]} == ids
    for cursor in ("0" * 48, "f" * 48, "7" * 16 + "0" * 32):
        assert re.fullmatch(pattern, cursor)
        r = ctx.client.get(f"/v1/photos?cursor={cursor}", headers=ctx.h("shopper_a"))
        assert r.status_code == 200, (cursor, r.get_json())
    # all rows were created after the epoch: nothing is older than a cursor of zeros
    assert ctx.client.get("/v1/photos?cursor=" + "0" * 48,
                          headers=ctx.h("shopper_a")).get_json()["items"] == []
    # the end of the calendar: everything is older
    assert len(ctx.client.get("/v1/photos?cursor=" + "f" * 48,
                              headers=ctx.h("shopper_a")).get_json()["items"]) == 3
