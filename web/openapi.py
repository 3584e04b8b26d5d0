"""Make the OpenAPI document say what the API does (issue 11.4).

APIFlask declares the statuses a view names and its own error schemas. This spec processor
adds, to every operation, each error status the request pipeline can answer, all with the one
error body (:class:`web.schemas.ErrorOut`):

* any keyed route: 401 (no or bad key), 404 (role checks answer 404, ids of the wrong shape),
  429 (failed-authentication limit), 503 (database or storage down);
* a route with a body: 400 (malformed JSON), 413 (too large), 415 (wrong Content-Type), 422,
  and the body is marked required (without one the request is refused with 415);
* a route with query or path parameters: 422 / 404;
* the rate-limited routes (:data:`web.ratelimit.LIMITED_ENDPOINTS`): 429;
* every route: 400, 414 and 431 from gunicorn (request line or headers too large), which answers
  them itself in ``text/html`` before the app sees the request.
"""

from __future__ import annotations

from typing import Any

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
_JSON_ERROR = {"application/json": {"schema": ERROR_REF}}
_DESCRIPTIONS = {
    400: "Malformed request (e.g. invalid JSON)",
    401: "Missing or invalid API key",
    403: "Forbidden",
    404: "Not found (or not yours, or not for your role)",
    409: "Conflict",
    413: "Request body too large",
    414: "Request line too long (answered by the WSGI server)",
    415: "Unsupported Content-Type or image format",
    422: "Invalid input",
    429: "Rate limited (see Retry-After)",
    431: "Request headers too large (answered by the WSGI server)",
    503: "Service temporarily unavailable (see Retry-After)",
}
_HTML = {"text/html": {"schema": {"type": "string"}}}
#: statuses gunicorn answers itself, with an HTML body
_SERVER_STATUSES = (414, 431)
_METHODS = {"get", "put", "post", "delete", "patch"}


def _add(responses: dict[str, Any], status: int, content: dict[str, Any] | None = None) -> None:
    entry = responses.setdefault(str(status), {"description": _DESCRIPTIONS.get(status, "")})
    if content is not None:
        entry["content"] = content
    else:
        entry.setdefault("content", _JSON_ERROR)
    if status in (429, 503):
        entry.setdefault("headers", {})["Retry-After"] = {
            "description": "Seconds to wait before retrying", "schema": {"type": "integer"}}


def make_truthful(spec: dict[str, Any], limited_paths: set[tuple[str, str]]) -> dict[str, Any]:
    """Complete ``spec`` in place (see the module docstring) and return it. ``limited_paths``:
    ``(method, openapi path)`` pairs under a rate limit."""
    for path, item in spec.get("paths", {}).items():
        for method, op in item.items():
            if method not in _METHODS:
                continue
            responses: dict[str, Any] = op.setdefault("responses", {})
            # an error a view declared by description only gets the one real body (a view
            # that answers something else, like /readyz, declares its own content)
            for code, entry in responses.items():
                if code.isdigit() and int(code) >= 400:
                    entry.setdefault("content", _JSON_ERROR)
            keyed = bool(op.get("security"))
            params = op.get("parameters", [])
            if keyed:
                for st in (401, 404, 429, 503):
                    _add(responses, st)
            if any(p.get("in") == "path" for p in params):
                _add(responses, 404)
                _add(responses, 503)
            if any(p.get("in") == "query" for p in params):
                _add(responses, 422)
            if "requestBody" in op:
                op["requestBody"]["required"] = True
                for st in (400, 413, 415, 422):
                    _add(responses, st)
            if (method, path) in limited_paths:
                _add(responses, 429)
            for st in _SERVER_STATUSES:
                _add(responses, st, _HTML)
            # gunicorn also answers a request it cannot parse with an HTML 400
            _add(responses, 400, {**responses.get("400", {}).get("content", _JSON_ERROR),
                                  **_HTML})
    return spec
