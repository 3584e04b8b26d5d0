"""Server-rendered pages for shoppers, merchants and ops (Jinja templates in ``web/templates``).

Sign-in exchanges an API key for a signed session cookie (HttpOnly, SameSite=Lax, Secure when the
request came over https). The cookie holds the key's id, never the key: every request re-checks
that key (revoked, expired, account erased -> signed out). Every POST must carry the session's
CSRF token. Views reuse the /v1 internals (``own_photo``, ``start_tryon``, ``prepare_garment``...),
so ownership answers 404 exactly as the API does. No asset comes from another host: scripts and
styles are served from ``web/static`` and Swagger UI from the pinned ``swagger-ui-py``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException

from tryon.errors import TryOnError
from tryon.types import Role
from web.auth import Principal
from web.inputs import check_path_ids, first_unstorable_field

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[1]
bp = Blueprint("pages", __name__, template_folder=str(WEB_DIR / "templates"),
               static_folder=str(WEB_DIR / "static"), static_url_path="/static")
# APIFlask reads this on every blueprint when it builds the spec: the pages are not API
bp.enable_openapi = False  # type: ignore[attr-defined]

#: page endpoints reachable without a session
PUBLIC_PAGES = frozenset({"pages.static", "pages.swagger_asset", "pages.sign_in",
                          "pages.sign_in_form", "pages.sign_out", "pages.index"})
SESSION_LIFETIME = timedelta(hours=12)
CSRF_FIELD = "csrf_token"
#: the page each role lands on after signing in
HOME = {Role.SHOPPER: "pages.my_photos", Role.MERCHANT: "pages.shop_garments",
        Role.OPS: "pages.ops_home"}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, with ``Secure`` set when the request came over https."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure) or bool(app.config.get("SESSION_COOKIE_SECURE"))


def install(app: Flask, secret_key: str) -> None:
    """Register the pages, the session cookie and the offline API docs on ``app``."""
    # a key of its own for the session cookie, derived from the app secret
    app.secret_key = hmac.new(secret_key.encode(), b"tryon-pages-session",
                              hashlib.sha256).hexdigest()
    app.session_interface = _SessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="tryon_session", SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax", PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    # /docs: Swagger UI from the pinned swagger-ui-bundle package, served by this app
    for name, asset in (("SWAGGER_UI_CSS", "swagger-ui.css"),
                        ("SWAGGER_UI_BUNDLE_JS", "swagger-ui-bundle.js"),
                        ("SWAGGER_UI_STANDALONE_PRESET_JS", "swagger-ui-standalone-preset.js"),
                        ("DOCS_FAVICON", "favicon-32x32.png")):
        app.config[name] = f"/static/swagger-ui/{asset}"
    # no validator badge: Swagger UI would fetch it from its public validator
    app.config["SWAGGER_UI_CONFIG"] = {"validatorUrl": None,
                                       **(app.config.get("SWAGGER_UI_CONFIG") or {})}
    app.jinja_env.globals["csrf_token"] = csrf_token  # also inside imported macros
    from web.pages import merchant, ops, shopper  # noqa: F401 - register the views

    app.register_blueprint(bp)


#: the Swagger UI files /docs needs, from the pinned ``swagger-ui-py`` package (Swagger UI 5,
#: which reads OpenAPI 3.1; Apache-2.0, its LICENSE ships beside them)
SWAGGER_FILES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js",
                           "swagger-ui-standalone-preset.js", "favicon-32x32.png",
                           "favicon-16x16.png", "LICENSE"})


def swagger_ui_dir() -> Path:
    """``swagger_ui/static`` of the installed package, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (see pyproject.toml)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@bp.get("/static/swagger-ui/<path:filename>")
def swagger_asset(filename: str) -> Response:
    """Swagger UI's files for ``/docs``, served by this app (no CDN)."""
    from flask import send_from_directory

    if filename not in SWAGGER_FILES:
        abort(404)
    resp = send_from_directory(swagger_ui_dir(), filename, max_age=3600)
    if filename == "LICENSE":
        resp.mimetype = "text/plain"
    return resp


# --- authentication and CSRF ------------------------------------------------------------------
def csrf_token() -> str:
    token: str | None = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _load_principal() -> Principal | None:
    from tryon.records.accounts import key_is_valid
    from tryon.records.models import ApiKey
    from web.services import db_session

    key_id = session.get("kid")
    if not isinstance(key_id, str):
        return None
    row = db_session().get(ApiKey, key_id)
    if row is None or not key_is_valid(row):
        session.clear()
        return None
    account = row.account
    return Principal(account.id, Role(account.role), account.name)


@bp.before_request
def _authenticate() -> Any:
    # NUL or a lone surrogate in a query or form value: PostgreSQL would answer 500 (and the
    # CSRF comparison below could not even encode it)
    bad = first_unstorable_field()
    if bad is not None:
        return _error_page(422, "invalid_input", f"The field {bad!r} contains characters that "
                           "cannot be stored (NUL or an unpaired surrogate).")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        sent = request.form.get(CSRF_FIELD, "")
        expected = session.get("csrf") or ""
        if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
            log.info("page %s refused: CSRF token missing or wrong", request.endpoint)
            return _error_page(400, "csrf_failed", "The form expired or did not come from this "
                               "site. Reload the page and try again.")
    if request.endpoint in PUBLIC_PAGES:
        check_path_ids()
        return None
    principal = _load_principal()
    if principal is None:
        if request.method == "GET" and not request.path.endswith(".json"):
            return redirect(url_for("pages.sign_in_form", next=request.full_path.rstrip("?")))
        return _error_page(401, "unauthorized", "Sign in first.")
    g.principal = principal
    check_path_ids()  # after the session check, as the API checks them after the key
    return None


@bp.after_request
def _page_headers(resp: Response) -> Response:
    if request.endpoint != "pages.swagger_asset":
        resp.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "same-origin"
    return resp


@bp.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"principal": g.get("principal"), "Role": Role}


# --- errors as pages -------------------------------------------------------------------------
def _error_page(status: int, code: str, message: str) -> Response:
    html = render_template("error.html", status=status, code=code, message=message)
    return Response(html, status=status, mimetype="text/html")


@bp.errorhandler(TryOnError)
def _tryon_error(exc: TryOnError) -> Response:
    status = exc.http_status if 400 <= exc.http_status < 600 else 500
    if status >= 500 and status != 503:
        log.error("page error %s: %s", exc.code, exc.message)
        return _error_page(status, exc.code, exc.default_message)
    resp = _error_page(status, exc.code, exc.message)
    if status == 503:
        resp.headers["Retry-After"] = "5"
    return resp


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    from web.errors import _HTTP_CODES

    code, message = _HTTP_CODES.get(exc.code or 500, ("http_error", "HTTP error."))
    resp = _error_page(exc.code or 500, code, message)
    for name, value in exc.get_headers():  # a rate limit's Retry-After, a 405's Allow
        if name.lower() in {"allow", "retry-after"}:
            resp.headers[name] = value
    return resp


# --- sign-in -----------------------------------------------------------------------------------
def _safe_next(target: str | None) -> str | None:
    """Only a local path (never ``//host`` or a scheme): no open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


@bp.get("/")
def index() -> Any:
    principal = _load_principal()
    if principal is None:
        return redirect(url_for("pages.sign_in_form"))
    return redirect(url_for(HOME[principal.role]))


@bp.get("/sign-in")
def sign_in_form() -> str:
    return render_template("sign_in.html", next=_safe_next(request.args.get("next")))


@bp.post("/sign-in")
def sign_in() -> Any:
    from tryon.records.accounts import authenticate_key
    from web.ratelimit import auth_failure_wait, record_auth_failure
    from web.services import db_session

    wait = auth_failure_wait()
    if wait is not None:
        resp = _error_page(429, "rate_limited", "Too many failed sign-ins from this address: "
                           "retry later.")
        resp.headers["Retry-After"] = str(wait)
        return resp
    row = authenticate_key(db_session(), request.form.get("api_key", "").strip())
    if row is None:
        record_auth_failure()  # the same per-address budget as a wrong bearer key
        return render_template("sign_in.html", error="That API key is invalid, expired or "
                               "revoked.", next=_safe_next(request.form.get("next"))), 401
    role = Role(row.account.role)
    # a fresh session (and CSRF token) at every sign-in: no session fixation
    session.clear()
    session.permanent = True
    session["kid"] = row.id
    session["csrf"] = secrets.token_urlsafe(32)
    log.info("account=%s signed in to the pages", row.account_id)
    return redirect(_safe_next(request.form.get("next")) or url_for(HOME[role]))


@bp.post("/sign-out")
def sign_out() -> Any:
    session.clear()
    return redirect(url_for("pages.sign_in_form"))
