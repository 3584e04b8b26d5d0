"""Compose: place a reference object into a scene, and the editing operations built on it.

AnyDoor is object-level customisation: a reference object, a scene and a region in it. A try-on
is one use; this module is the general one, as pure functions over numpy arrays plus one driver
(:func:`render_plan`) that calls any :class:`~tryon.engines.base.Engine` with explicit-box
requests (what AnyDoor natively takes; the preview engine's box-fit path renders them on CPU).

Images are RGB uint8 ``(H, W, 3)``; masks bool ``(H, W)``; boxes ``[x1, y1, x2, y2)`` in pixels.

Operations (:class:`ComposeOp`), each one plan of engine passes on one base image:

* ``insert``: the reference into the region (a box, or a mask whose bounding box is the box
  and whose pixels are the target mask).
* ``replace``: the object under ``object_mask`` is replaced by the reference: its pixels are
  filled first (below), then the reference is placed in the object's bounding box with the
  object's mask as target mask.
* ``move``: the object under ``object_mask`` is cut out of the scene (its crop and mask become
  the reference), the hole is filled (below), then the object is placed at ``box``.
* ``swap``: two objects (``object_mask`` and ``object_mask_b``) are cut out, both holes filled,
  then object A is placed in B's bounding box and B in A's: two passes, the second on the
  first's output, with the same seed.

How a hole is filled: OpenCV's Telea inpainting (fast marching from the hole's border inward),
over the object's mask dilated by :func:`hole_margin` pixels so its fringe goes too. This is a
classical fill, deterministic and the same for every engine; it is good on smooth backgrounds
and blurs textured ones (large holes in texture show). The engine then repaints only the
destination region(s). The job's result records the operation, boxes, masks' areas and the
fill method.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tryon.anydoor.limits import (
    check_sampling,
)
from tryon.engines.base import (
    CancelCheck,
    Engine,
    ProgressCallback,
    RenderOutput,
    RenderParams,
    RenderRequest,
)
from tryon.errors import (
    EmptyRegionError,
    GarmentNotSeparableError,
    InvalidInputError,
    ObjectNotSeparableError,
    RegionTooSmallError,
)
from tryon.types import Box, Category

#: the smallest side (pixels) of a region an object can be placed in
MIN_REGION_SIDE = 16
#: an object mask covering more than this share of its scene leaves nothing to fill from
MAX_OBJECT_COVERAGE = 0.9
FILL_METHOD = "opencv_telea"
#: compose requests carry no garment category; engines receive this one, which with an
#: explicit box and no landmarks changes nothing in either engine
COMPOSE_CATEGORY = Category.UPPER_BODY


class ComposeOp(enum.StrEnum):
    INSERT = "insert"
    REPLACE = "replace"
    MOVE = "move"
    SWAP = "swap"


#: the inputs each operation needs besides the scene (``reference`` = uploaded or a garment)
NEEDS: dict[ComposeOp, frozenset[str]] = {
    ComposeOp.INSERT: frozenset({"reference", "region"}),
    ComposeOp.REPLACE: frozenset({"reference", "object_mask"}),
    ComposeOp.MOVE: frozenset({"object_mask", "box"}),
    ComposeOp.SWAP: frozenset({"object_mask", "object_mask_b"}),
}


# --------------------------------------------------------------------------------------
# parameters stored on the job row


@dataclass(frozen=True)
class ComposeParams:
    """What a compose job asks for, validated on construction (errors name the field).

    ``box``: the region (insert) or the destination (move), ``[x1, y1, x2, y2)``. ``inputs``:
    storage keys of the job's images by role (``scene``, ``reference``, ``reference_mask``,
    ``region_mask``, ``object_mask``, ``object_mask_b``); a scene or reference that is an
    existing photo or garment is named by the job's ``photo_id``/``garment_id`` instead.
    Sampling fields mean what they mean for a try-on; ``seed`` None derives seeds from the job id.
    """

    op: ComposeOp = ComposeOp.INSERT
    box: Box | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    steps: int = 50
    guidance: float = 4.5
    control_strength: float = 1.0
    num_samples: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        check_sampling(steps=self.steps, guidance=self.guidance,
                       control_strength=self.control_strength, num_samples=self.num_samples,
                       seed=self.seed)
        if self.box is not None and self.box.is_empty():
            raise EmptyRegionError(f"box {self.box.as_list()} is empty: need x1 < x2 and y1 < y2.",
                                   argument="box")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComposeParams:
        try:
            raw_box = data.get("box")
            return cls(
                op=ComposeOp(data.get("op") or ComposeOp.INSERT),
                box=None if not raw_box else Box(*(int(v) for v in raw_box)),
                inputs={str(k): str(v) for k, v in (data.get("inputs") or {}).items()},
                steps=int(_or(data.get("steps"), 50)),
                guidance=float(_or(data.get("guidance"), 4.5)),
                control_strength=float(_or(data.get("control_strength"), 1.0)),
                num_samples=int(_or(data.get("num_samples"), 1)),
                seed=None if data.get("seed") is None else int(data["seed"]),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(f"Invalid compose parameters: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": str(self.op), "box": None if self.box is None else self.box.as_list(),
            "inputs": dict(self.inputs), "steps": self.steps, "guidance": self.guidance,
            "control_strength": self.control_strength, "num_samples": self.num_samples,
            "seed": self.seed,
        }

    def seeds(self, job_id: str | None = None) -> tuple[int, ...]:
        from tryon.engines.request import job_seeds

        if self.seed is None and job_id is not None:
            return job_seeds(job_id, self.num_samples)
        return job_seeds(job_id or "", self.num_samples, self.seed or 0)


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


# --------------------------------------------------------------------------------------
# regions and objects


def check_region(box: Box, size: tuple[int, int], name: str = "box") -> Box:
    """``box`` clipped to an image of ``size == (W, H)``; :class:`EmptyRegionError` when
    nothing is left, :class:`RegionTooSmallError` when a side is under ``MIN_REGION_SIDE``."""
    w, h = size
    clipped = box.clip(w, h)
    if clipped.is_empty():
        raise EmptyRegionError(f"{name} {box.as_list()} holds no pixel of the {w}x{h} image.",
                               argument=name)
    if min(clipped.width, clipped.height) < MIN_REGION_SIDE:
        raise RegionTooSmallError(
            f"{name} {clipped.as_list()} is {clipped.width}x{clipped.height}: both sides must be "
            f"at least {MIN_REGION_SIDE} pixels.", argument=name)
    return clipped


def mask_box(mask: NDArray[np.bool_], name: str = "mask") -> Box:
    """The bounding box of a bool ``(H, W)`` mask (:class:`EmptyRegionError` when empty,
    :class:`RegionTooSmallError` when a side is under ``MIN_REGION_SIDE``)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise EmptyRegionError(f"{name} has no white pixel: mark the region.", argument=name)
    box = Box(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return check_region(box, (mask.shape[1], mask.shape[0]), name)


def region(size: tuple[int, int], box: Box | None, mask: NDArray[np.bool_] | None
           ) -> tuple[Box, NDArray[np.bool_]]:
    """The region of an insert: a mask (its bounding box, its pixels) or a box (all of it)."""
    w, h = size
    if mask is not None:
        if mask.shape != (h, w):
            raise InvalidInputError(f"region_mask is {mask.shape[1]}x{mask.shape[0]} but the "
                                    f"scene is {w}x{h}.", code="invalid_mask")
        return mask_box(mask, "region_mask"), mask.astype(bool)
    if box is None:
        raise EmptyRegionError("Give the region as a box or a mask.", argument="box")
    b = check_region(box, size)
    return b, box_mask_of(b, size)


def box_mask_of(box: Box, size: tuple[int, int]) -> NDArray[np.bool_]:
    w, h = size
    m = np.zeros((h, w), dtype=bool)
    m[box.y1:box.y2, box.x1:box.x2] = True
    return m


def reference_mask(rgb: NDArray[np.uint8], alpha: NDArray[np.uint8] | None,
                   uploaded: NDArray[np.bool_] | None) -> NDArray[np.bool_]:
    """The object's mask in an uploaded reference: the uploaded mask, else its alpha, else
    background removal (the garment intake's, :func:`tryon.vision.masks.garment_mask`).
    :class:`ObjectNotSeparableError` when none separates an object."""
    from tryon.vision.masks import garment_mask

    try:
        return garment_mask(rgb, alpha=alpha, uploaded=uploaded).mask
    except GarmentNotSeparableError as exc:
        raise ObjectNotSeparableError(**exc.details) from None


def check_object_mask(mask: NDArray[np.bool_], size: tuple[int, int], name: str) -> Box:
    """An object's mask in the scene: same size, not empty, not (nearly) the whole scene; its
    bounding box."""
    w, h = size
    if mask.shape != (h, w):
        raise InvalidInputError(f"{name} is {mask.shape[1]}x{mask.shape[0]} but the scene is "
                                f"{w}x{h}.", code="invalid_mask", argument=name)
    box = mask_box(mask, name)
    if float(mask.mean()) > MAX_OBJECT_COVERAGE:
        raise ObjectNotSeparableError(
            f"{name} covers {mask.mean():.0%} of the scene: there is no scene left around the "
            "object.", argument=name)
    return box


def cut_out(scene: NDArray[np.uint8], mask: NDArray[np.bool_], box: Box
            ) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """The object's crop at ``box`` and its mask there (the reference of a move or swap)."""
    crop = np.ascontiguousarray(scene[box.y1:box.y2, box.x1:box.x2])
    return crop, np.ascontiguousarray(mask[box.y1:box.y2, box.x1:box.x2])


def hole_margin(size: tuple[int, int]) -> int:
    """Pixels the hole is grown by before filling: 1% of the short side, at least 3."""
    return max(3, round(0.01 * min(size)))


def fill_hole(scene: NDArray[np.uint8], mask: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """``scene`` with ``mask`` (grown by :func:`hole_margin`) filled by Telea inpainting."""
    import cv2

    h, w = mask.shape
    margin = hole_margin((w, h))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    grown = cv2.dilate(mask.astype(np.uint8) * 255, kernel)
    bgr = cv2.cvtColor(scene, cv2.COLOR_RGB2BGR)
    filled = cv2.inpaint(bgr, grown, inpaintRadius=margin, flags=cv2.INPAINT_TELEA)
    return np.ascontiguousarray(cv2.cvtColor(filled, cv2.COLOR_BGR2RGB))


# --------------------------------------------------------------------------------------
# plans


@dataclass(frozen=True)
class Placement:
    """One engine pass: ``reference`` (h, w, 3) with its ``reference_mask`` into ``box`` of
    the current image, repainting ``target_mask`` (H, W)."""

    reference: NDArray[np.uint8]
    reference_mask: NDArray[np.bool_]
    box: Box
    target_mask: NDArray[np.bool_]


@dataclass(frozen=True)
class ComposePlan:
    """The base image (the scene, holes filled) and the passes to run on it, in order, plus
    ``record``: what was done, stored with every result."""

    base: NDArray[np.uint8]
    placements: tuple[Placement, ...]
    record: dict[str, Any]


@dataclass(frozen=True)
class ComposeInputs:
    """Decoded inputs of one compose request (any not needed by ``op`` may be None)."""

    scene: NDArray[np.uint8]
    reference: NDArray[np.uint8] | None = None
    reference_mask: NDArray[np.bool_] | None = None
    region_mask: NDArray[np.bool_] | None = None
    object_mask: NDArray[np.bool_] | None = None
    object_mask_b: NDArray[np.bool_] | None = None


def plan(op: ComposeOp, inputs: ComposeInputs, box: Box | None, *, fill: bool = True
         ) -> ComposePlan:
    """The plan of ``op`` (see the module docstring). ``fill=False`` skips the hole fill (the
    API checks a request with it; the worker plans with the fill). Raises :class:`InvalidInputError`
    naming a missing input, :class:`EmptyRegionError`, :class:`RegionTooSmallError`,
    :class:`ObjectNotSeparableError`."""
    scene = inputs.scene
    if scene.ndim != 3 or scene.shape[2] != 3 or scene.dtype != np.uint8:
        raise InvalidInputError(f"scene must be uint8 (H, W, 3), got {scene.dtype} {scene.shape}")
    h, w = scene.shape[:2]
    size = (w, h)

    def need(name: str, value: Any) -> Any:
        if value is None:
            raise InvalidInputError(f"{op} needs {name}.", code="missing_input", argument=name)
        return value

    record: dict[str, Any] = {"op": str(op), "scene_size": [w, h]}
    if op is ComposeOp.INSERT:
        ref, ref_mask = need("reference", inputs.reference), need("reference", inputs.reference_mask)
        b, target = region(size, box, inputs.region_mask)
        record.update(region="mask" if inputs.region_mask is not None else "box",
                      boxes=[b.as_list()])
        return ComposePlan(scene, (Placement(ref, ref_mask, b, target),), record)
    if op is ComposeOp.REPLACE:
        ref, ref_mask = need("reference", inputs.reference), need("reference", inputs.reference_mask)
        obj = need("object_mask", inputs.object_mask)
        b = check_object_mask(obj, size, "object_mask")
        base = fill_hole(scene, obj) if fill else scene
        record.update(boxes=[b.as_list()], object_area=int(obj.sum()), fill=FILL_METHOD,
                      fill_margin=hole_margin(size))
        return ComposePlan(base, (Placement(ref, ref_mask, b, obj.copy()),), record)
    if op is ComposeOp.MOVE:
        obj = need("object_mask", inputs.object_mask)
        src = check_object_mask(obj, size, "object_mask")
        dst = check_region(need("box", box), size)
        crop, crop_mask = cut_out(scene, obj, src)
        base = fill_hole(scene, obj) if fill else scene
        record.update(boxes=[dst.as_list()], moved_from=src.as_list(), moved_to=dst.as_list(),
                      object_area=int(obj.sum()), fill=FILL_METHOD, fill_margin=hole_margin(size))
        return ComposePlan(base, (Placement(crop, crop_mask, dst, box_mask_of(dst, size)),), record)
    if op is ComposeOp.SWAP:
        a = need("object_mask", inputs.object_mask)
        b_mask = need("object_mask_b", inputs.object_mask_b)
        box_a = check_object_mask(a, size, "object_mask")
        box_b = check_object_mask(b_mask, size, "object_mask_b")
        crop_a, m_a = cut_out(scene, a, box_a)
        crop_b, m_b = cut_out(scene, b_mask, box_b)
        base = fill_hole(scene, a | b_mask) if fill else scene
        record.update(boxes=[box_b.as_list(), box_a.as_list()], object_a=box_a.as_list(),
                      object_b=box_b.as_list(), fill=FILL_METHOD, fill_margin=hole_margin(size))
        return ComposePlan(base, (
            Placement(crop_a, m_a, box_b, box_mask_of(box_b, size)),
            Placement(crop_b, m_b, box_a, box_mask_of(box_a, size)),
        ), record)
    raise InvalidInputError(f"op must be one of {[o.value for o in ComposeOp]}, got {op!r}",
                            argument="op")


def render_plan(
    engine: Engine,
    the_plan: ComposePlan,
    params: ComposeParams,
    seeds: Sequence[int],
    *,
    callback: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
) -> RenderOutput:
    """Run ``the_plan`` once per seed: every placement in order, each pass on the previous
    pass's image, with explicit-box requests. The output's record is the engine's (of the
    first pass) plus ``compose`` (the plan's record)."""
    passes = len(the_plan.placements)
    total_units = passes * len(seeds)
    images: list[NDArray[np.uint8]] = []
    engine_record: dict[str, Any] = {}
    for k, seed in enumerate(seeds):
        image = the_plan.base
        for j, pl in enumerate(the_plan.placements):
            unit = k * passes + j
            step_cb = _scaled(callback, unit, total_units)
            request = RenderRequest(
                person=image, garment=pl.reference, garment_mask=pl.reference_mask, box=pl.box,
                target_mask=pl.target_mask, category=COMPOSE_CATEGORY,
                params=RenderParams(
                    num_inference_steps=params.steps, guidance_scale=params.guidance,
                    control_strength=params.control_strength, num_samples=1, seeds=(int(seed),)),
                explicit_box=True,
            )
            out = engine.render(request, callback=step_cb, should_cancel=should_cancel)
            image = out.images[0]
            if not engine_record:
                engine_record = dict(out.record)
        images.append(image)
    record = {**engine_record, "compose": the_plan.record}
    record.pop("category", None)
    return RenderOutput(images=images, seeds=[int(s) for s in seeds], record=record)


def _scaled(callback: ProgressCallback | None, unit: int, units: int
            ) -> Callable[[int, int], None] | None:
    """Pass ``unit`` of ``units`` (engine calls, same step count each) as overall steps."""
    if callback is None:
        return None

    def cb(step: int, total: int) -> None:
        callback(unit * total + step, units * total)

    return cb
