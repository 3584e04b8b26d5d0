"""The Flask API (``/v1``), its OpenAPI document, and the operator CLI (`web.cli`).

``create_app`` is imported lazily so that `tryon db ...` (which imports ``web.cli``) and the
analysis process pool (which imports ``web.analyzer``) do not pay for Flask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from web.app import create_app as create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from web.app import create_app

        return create_app
    raise AttributeError(name)
