"""Engine selection, caching, plugins and unavailable engines."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tryon.config import Settings
from tryon.engines import registry
from tryon.engines.preview import PreviewEngine
from tryon.errors import ConfigError, EngineUnavailableError


class FakeEngine:
    """A plugin engine used by these tests (loaded by name through TRYON_EXTRA_ENGINES)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = "fake"

    def render(self, request, *, callback=None, should_cancel=None):  # type: ignore[no-untyped-def]
        raise NotImplementedError


PLUGIN = f"fake={__name__}:FakeEngine"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    registry.clear_cache()
    yield
    registry.clear_cache()


def test_default_is_preview_without_weights_and_anydoor_with() -> None:
    assert registry.default_engine_name(Settings()) == "preview"
    assert registry.default_engine_name(Settings(weights="/models/anydoor")) == "anydoor"
    assert registry.default_engine_name(Settings(default_engine="fake")) == "fake"


def test_available_engines() -> None:
    assert registry.available_engines(Settings()) == ["preview"]
    assert registry.available_engines(Settings(weights="/w")) == ["preview", "anydoor"]
    assert registry.available_engines(Settings(extra_engines=PLUGIN)) == ["preview", "fake"]


def test_get_engine_caches_one_instance_per_settings() -> None:
    s = Settings()
    a = registry.get_engine("preview", s)
    assert isinstance(a, PreviewEngine) and a.name == "preview"
    assert registry.get_engine(None, s) is a
    assert registry.get_engine("preview", Settings(data_dir=s.data_dir / "other")) is not a


def test_unknown_engine() -> None:
    with pytest.raises(EngineUnavailableError, match="Unknown engine 'nope'"):
        registry.get_engine("nope", Settings())


def test_anydoor_without_weights_is_unavailable() -> None:
    with pytest.raises(EngineUnavailableError, match="TRYON_WEIGHTS"):
        registry.get_engine("anydoor", Settings())


def test_plugin_engine_is_built_with_the_settings() -> None:
    s = Settings(extra_engines=f" {PLUGIN} , ")
    engine = registry.get_engine("fake", s)
    assert isinstance(engine, FakeEngine) and engine.settings is s


def test_plugin_replaces_a_builtin() -> None:
    s = Settings(extra_engines=f"anydoor={__name__}:FakeEngine")
    assert isinstance(registry.get_engine("anydoor", s), FakeEngine)


def test_plugin_that_cannot_be_imported_is_unavailable() -> None:
    s = Settings(extra_engines="ghost=no_such_module_xyz:Engine")
    with pytest.raises(EngineUnavailableError, match="ghost"):
        registry.get_engine("ghost", s)
    assert "no_such_module_xyz" not in sys.modules


@pytest.mark.parametrize("spec", ["fake", "fake=module", "=m:F", "fake=:F"])
def test_malformed_plugin_spec(spec: str) -> None:
    with pytest.raises(ConfigError):
        registry.parse_extra_engines(spec)
