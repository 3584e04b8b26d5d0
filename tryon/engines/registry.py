"""Which engines exist, and one instance of each per process.

Built-in engines are named by ``"module:Factory"`` strings so that importing the registry imports
neither torch nor OpenCV; an engine module is imported, and its factory called with the
:class:`~tryon.config.Settings`, on the first :func:`get_engine` for that name. Factories must be
cheap: heavy models are built on the first render (a Celery worker calls :func:`get_engine` in
the child process, and CUDA must not be initialised before the fork).

Plugins come from ``TRYON_EXTRA_ENGINES="name=module:Factory,name2=module:Factory"``; a plugin
with a built-in name replaces the built-in (useful for test fakes).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Collection
from typing import Any

from tryon.config import Settings
from tryon.engines.base import Engine
from tryon.errors import ConfigError, EngineUnavailableError

log = logging.getLogger(__name__)

PREVIEW = "preview"
ANYDOOR = "anydoor"

#: name -> "module:Factory"; the factory is called with the Settings
BUILTIN_ENGINES: dict[str, str] = {
    PREVIEW: "tryon.engines.preview:PreviewEngine",
    ANYDOOR: "tryon.engines.anydoor:AnyDoorEngine",
}

_cache: dict[tuple[str, Settings], Engine] = {}
_lock = threading.Lock()


def parse_extra_engines(spec: str) -> dict[str, str]:
    """Parse ``"name=module:Factory,..."`` into ``{name: "module:Factory"}``.

    Raises :class:`ConfigError` naming the first malformed entry.
    """
    out: dict[str, str] = {}
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, target = entry.partition("=")
        name, target = name.strip(), target.strip()
        module, colon, attr = target.partition(":")
        if not sep or not name or not colon or not module or not attr:
            raise ConfigError(
                f"TRYON_EXTRA_ENGINES: expected 'name=module:Factory', got {entry!r}"
            )
        out[name] = target
    return out


def _targets(settings: Settings) -> dict[str, str]:
    targets = dict(BUILTIN_ENGINES)
    targets.update(parse_extra_engines(settings.extra_engines))
    return targets


def available_engines(settings: Settings) -> list[str]:
    """Names :func:`get_engine` can serve with ``settings``: ``preview`` always, ``anydoor``
    when weights are configured, plus every plugin. Sorted, built-ins first."""
    extra = parse_extra_engines(settings.extra_engines)
    names = [PREVIEW]
    if settings.weights or ANYDOOR in extra:
        names.append(ANYDOOR)
    names += sorted(n for n in extra if n not in BUILTIN_ENGINES)
    return names


def default_engine_name(settings: Settings) -> str:
    """``TRYON_DEFAULT_ENGINE`` if set, else ``anydoor`` when weights are configured, else
    ``preview``."""
    if settings.default_engine:
        return settings.default_engine
    return ANYDOOR if settings.weights else PREVIEW


def engines_for_queues(settings: Settings, queues: Collection[str]) -> list[str]:
    """The engines a worker consuming logical ``queues`` can run with ``settings``: the
    available ones whose queue (:func:`tryon.celeryconf.queue_for_engine`) it consumes."""
    from tryon.celeryconf import queue_for_engine

    return [n for n in available_engines(settings) if queue_for_engine(n) in queues]


def choose_default_engine(configured: str, advertised: Collection[str]) -> str | None:
    """The engine of a try-on that names none, decided by the service from what its workers
    advertise (never from the API host's own weights): ``TRYON_DEFAULT_ENGINE`` when set,
    else ``anydoor`` when some worker advertises it, else ``preview`` when one does, else the
    first advertised name; None when no worker advertises anything."""
    if configured:
        return configured
    for name in (ANYDOOR, PREVIEW):
        if name in advertised:
            return name
    return min(advertised) if advertised else None


def _load_factory(name: str, target: str) -> Callable[[Settings], Any]:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise EngineUnavailableError(
            f"Engine {name!r} cannot be loaded from {target!r}: {exc}", engine=name
        ) from exc
    if not callable(factory):
        raise EngineUnavailableError(f"Engine {name!r}: {target!r} is not callable", engine=name)
    return factory


def get_engine(name: str | None, settings: Settings) -> Engine:
    """Return the process-wide instance of engine ``name`` (``None``: the default engine).

    Raises :class:`EngineUnavailableError` for an unknown name or an engine this deployment
    cannot serve (``anydoor`` without ``TRYON_WEIGHTS``); an engine's factory may raise
    :class:`~tryon.errors.WeightsError` too.
    """
    name = name or default_engine_name(settings)
    key = (name, settings)
    with _lock:
        engine = _cache.get(key)
        if engine is not None:
            return engine
        targets = _targets(settings)
        if name not in available_engines(settings):
            if name == ANYDOOR and name in targets:
                raise EngineUnavailableError(
                    "The anydoor engine needs model weights: set TRYON_WEIGHTS (or run "
                    "`tryon weights fetch`), or use --engine preview.",
                    engine=name,
                )
            raise EngineUnavailableError(
                f"Unknown engine {name!r}; available: {', '.join(available_engines(settings))}.",
                engine=name,
            )
        factory = _load_factory(name, targets[name])
        engine = factory(settings)
        if not getattr(engine, "name", None):
            raise EngineUnavailableError(f"Engine {name!r} has no name attribute", engine=name)
        _cache[key] = engine
        log.info("engine=%s created", name)
        return engine


def clear_cache() -> None:
    """Forget every engine instance (tests; a worker never needs this)."""
    with _lock:
        _cache.clear()
