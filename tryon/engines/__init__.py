"""Try-on engines: the interface (:mod:`~tryon.engines.base`), the registry, and the engines
(``preview``: CPU, no weights; ``anydoor``: the diffusion model). Importing this package loads
neither torch nor OpenCV; an engine module is imported when it is first asked for."""

from tryon.engines.base import Engine, RenderOutput, RenderParams, RenderRequest
from tryon.engines.registry import available_engines, default_engine_name, get_engine

__all__ = [
    "Engine",
    "RenderOutput",
    "RenderParams",
    "RenderRequest",
    "available_engines",
    "default_engine_name",
    "get_engine",
]
