"""tryon.compose: regions, objects, the hole fill, the plans and the driver on the preview
engine."""

from __future__ import annotations

import numpy as np
import pytest

from tryon.compose import (
    MIN_REGION_SIDE,
    ComposeInputs,
    ComposeOp,
    ComposeParams,
    check_region,
    fill_hole,
    mask_box,
    plan,
    render_plan,
)
from tryon.engines.preview import PreviewEngine
from tryon.errors import (
    EmptyRegionError,
    InvalidInputError,
    ObjectNotSeparableError,
    RegionTooSmallError,
)
from tryon.types import Box

H, W = 200, 240


def scene() -> np.ndarray:
    s = np.full((H, W, 3), 180, np.uint8)
    s[30:80, 40:100] = (220, 20, 20)
    s[120:180, 150:220] = (20, 20, 220)
    return s


def mask(y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y1:y2, x1:x2] = True
    return m


def test_regions() -> None:
    assert check_region(Box(-10, -10, 50, 60), (W, H)) == Box(0, 0, 50, 60)
    with pytest.raises(EmptyRegionError):
        check_region(Box(300, 300, 400, 400), (W, H))
    with pytest.raises(RegionTooSmallError):
        check_region(Box(0, 0, MIN_REGION_SIDE - 1, 100), (W, H))
    assert mask_box(mask(10, 40, 20, 60)) == Box(20, 10, 60, 40)
    with pytest.raises(EmptyRegionError):
        mask_box(np.zeros((H, W), bool))
    with pytest.raises(EmptyRegionError):
        ComposeParams(box=Box(5, 5, 5, 9))


def test_fill_hole_removes_the_object_and_keeps_the_rest() -> None:
    s = scene()
    out = fill_hole(s, mask(30, 80, 40, 100))
    assert np.abs(out[35:75, 45:95].astype(int) - 180).max() < 20
    assert (out[120:180, 150:220] == s[120:180, 150:220]).all()


def test_plans_name_what_they_need_and_check_objects() -> None:
    with pytest.raises(InvalidInputError, match="needs object_mask"):
        plan(ComposeOp.MOVE, ComposeInputs(scene()), Box(0, 0, 50, 50))
    with pytest.raises(ObjectNotSeparableError):
        plan(ComposeOp.MOVE, ComposeInputs(scene(), object_mask=np.ones((H, W), bool)),
             Box(0, 0, 50, 50))
    with pytest.raises(InvalidInputError, match="needs reference"):
        plan(ComposeOp.INSERT, ComposeInputs(scene()), Box(0, 0, 50, 50))
    p = plan(ComposeOp.SWAP, ComposeInputs(scene(), object_mask=mask(30, 80, 40, 100),
                                           object_mask_b=mask(120, 180, 150, 220)), None)
    assert [pl.box for pl in p.placements] == [Box(150, 120, 220, 180), Box(40, 30, 100, 80)]
    assert p.placements[0].reference.shape == (50, 60, 3)
    assert p.record["fill"] == "opencv_telea"


def test_insert_with_a_region_mask_paints_only_inside_it_and_is_deterministic() -> None:
    ref = np.full((60, 50, 3), 250, np.uint8)
    ref[10:50, 10:40] = (10, 200, 10)
    ref_mask = np.zeros((60, 50), bool)
    ref_mask[10:50, 10:40] = True
    region = mask(100, 190, 10, 120)
    region[100:130, 10:40] = False  # an L shape: its bounding box is larger than it
    p = plan(ComposeOp.INSERT, ComposeInputs(scene(), reference=ref, reference_mask=ref_mask,
                                             region_mask=region), None)
    params = ComposeParams(num_samples=2)
    steps: list[tuple[int, int]] = []
    a = render_plan(PreviewEngine(), p, params, [3, 4], callback=lambda i, n: steps.append((i, n)))
    b = render_plan(PreviewEngine(), p, params, [3, 4])
    assert [np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True)] == [True, True]
    changed = np.any(a.images[0] != scene(), axis=2)
    assert changed.any() and not (changed & ~region).any()
    assert a.seeds == [3, 4] and a.record["compose"]["region"] == "mask"
    assert steps[-1][0] == steps[-1][1]  # progress reaches the total


def test_a_swap_runs_on_a_tiny_random_anydoor_engine() -> None:
    """AnyDoor needs nothing new for compose: explicit-box requests with a target mask."""
    torch = pytest.importorskip("torch")
    from tryon.anydoor.config import AnyDoorConfig
    from tryon.anydoor.models import build_components
    from tryon.engines.anydoor import AnyDoorEngine

    torch.manual_seed(0)
    engine = AnyDoorEngine.from_components(build_components(AnyDoorConfig.tiny()))
    p = plan(ComposeOp.SWAP, ComposeInputs(scene(), object_mask=mask(30, 80, 40, 100),
                                           object_mask_b=mask(120, 180, 150, 220)), None)
    params = ComposeParams(op=ComposeOp.SWAP, steps=2)
    steps: list[tuple[int, int]] = []
    a = render_plan(engine, p, params, [11], callback=lambda i, n: steps.append((i, n)))
    b = render_plan(engine, p, params, [11])
    assert a.images[0].shape == (H, W, 3) and np.array_equal(a.images[0], b.images[0])
    assert a.record["engine"] == "anydoor" and a.record["compose"]["op"] == "swap"
    assert steps == [(i, 4) for i in range(1, 5)]  # two passes of two steps
