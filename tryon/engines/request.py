"""One try-on request: the typed job parameters and the one builder of a :class:`RenderRequest`.

The API validates a body into :class:`JobParams` and stores :meth:`JobParams.to_dict` on the job
row; the worker reads it back with :meth:`JobParams.from_dict`; ``tryon render`` builds one from
its options. All three then call :func:`build_request`, so the service and the CLI render the
same inputs the same way:

1. Placement: :func:`resolve_placement` recomputes it from the photo's pose with the garment's
   category and length (the stored placement is the ``regular`` one), or takes an explicit box.
2. Target mask: the box, or (``mask="shape"``) the person's pixels inside it, dilated; a photo
   without a usable person mask falls back to the box (``BuiltRequest.mask_used`` says which).
3. Render parameters: steps, guidance, control strength, one seed per sample.

An explicit box is authoritative by ``RenderRequest.explicit_box``; the landmarks still travel
with it (engines may use them for masks and shading, never to move the garment).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from tryon.anydoor.limits import (
    check_sampling,
)
from tryon.engines.base import RenderParams, RenderRequest
from tryon.errors import InvalidInputError, MultiplePeopleError, NoPersonError
from tryon.types import Box, Category, GarmentLength, MaskMode

#: defaults when neither the client nor the settings give a value
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 4.5
DEFAULT_CONTROL_STRENGTH = 1.0


@dataclass(frozen=True)
class JobParams:
    """What a try-on asks for, validated on construction (:class:`InvalidInputError` naming the
    field). ``length``: a :class:`GarmentLength` value (the garment's). ``box``: an explicit
    placement ``[x1, y1, x2, y2)`` in photo pixels, authoritative when given. ``seed``: sample k
    uses ``seed + k``; None derives the seeds from the job id (:func:`job_seeds`)."""

    category: Category
    length: GarmentLength = GarmentLength.REGULAR
    box: Box | None = None
    mask: MaskMode = MaskMode.BOX
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    control_strength: float = DEFAULT_CONTROL_STRENGTH
    num_samples: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        check_sampling(steps=self.steps, guidance=self.guidance,
                       control_strength=self.control_strength, num_samples=self.num_samples,
                       seed=self.seed)
        if self.box is not None and self.box.is_empty():
            raise InvalidInputError(f"box {self.box.as_list()} is empty: need x1 < x2 and "
                                    "y1 < y2.", code="invalid_box", argument="box")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, category: str | None = None,
                  length: str | None = None) -> JobParams:
        """From a stored ``job.params`` (or an API body). Missing keys take the garment's
        ``category``/``length`` and the defaults; unknown keys are ignored. Raises
        :class:`InvalidInputError` for a bad value."""
        try:
            raw_box = data.get("box")
            return cls(
                category=Category(data.get("category") or category or ""),
                length=GarmentLength(data.get("length") or length or GarmentLength.REGULAR),
                box=None if not raw_box else Box(*(int(v) for v in raw_box)),
                mask=MaskMode(data.get("mask") or MaskMode.BOX),
                steps=_or(data.get("steps"), DEFAULT_STEPS),
                guidance=_or(data.get("guidance"), DEFAULT_GUIDANCE),
                control_strength=_or(data.get("control_strength"), DEFAULT_CONTROL_STRENGTH),
                num_samples=_or(data.get("num_samples"), 1),
                seed=data.get("seed"),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(f"Invalid job parameters: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON stored on the job row (and shown in the API's ``params``)."""
        return {
            "category": str(self.category), "length": str(self.length),
            "box": None if self.box is None else self.box.as_list(), "mask": str(self.mask),
            "steps": self.steps, "guidance": self.guidance,
            "control_strength": self.control_strength, "num_samples": self.num_samples,
            "seed": self.seed,
        }

    def seeds(self, job_id: str | None = None) -> tuple[int, ...]:
        """One seed per sample: ``seed + k`` (31 bits) when given, else derived from
        ``job_id`` (a re-run samples the same noise), else ``0 + k``."""
        if self.seed is None and job_id is not None:
            return job_seeds(job_id, self.num_samples)
        return job_seeds(job_id or "", self.num_samples, self.seed or 0)

    def render_params(self, seeds: Sequence[int]) -> RenderParams:
        return RenderParams(
            num_inference_steps=int(self.steps), guidance_scale=float(self.guidance),
            control_strength=float(self.control_strength), num_samples=int(self.num_samples),
            seeds=tuple(int(s) for s in seeds[: self.num_samples]),
        )


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def derive_seed(job_id: str, index: int) -> int:
    """The seed of sample ``index`` of job ``job_id``: a pure function of its arguments, in
    ``[0, 2**31)``. A re-run (redelivery, reaper re-queue) samples the same noise."""
    import hashlib

    digest = hashlib.sha256(f"tryon-seed:{job_id}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def job_seeds(job_id: str, num_samples: int, seed: int | None = None) -> tuple[int, ...]:
    """Seeds for ``num_samples`` samples: ``seed, seed+1, ...`` when the client gave one, else
    :func:`derive_seed` per index."""
    if seed is None:
        return tuple(derive_seed(job_id, i) for i in range(num_samples))
    return tuple((int(seed) + i) & 0x7FFF_FFFF for i in range(num_samples))


# --------------------------------------------------------------------------------------
# the builder


@dataclass(frozen=True)
class PersonInputs:
    """A decoded photo and what its analysis stored: ``rgb`` uint8 ``(H, W, 3)``; ``analysis``
    a :class:`tryon.vision.analysis.PhotoAnalysis` (pose, verdicts, default-length
    placements); ``person_mask`` bool or float ``(H, W)`` in [0, 1], None when unknown."""

    rgb: NDArray[np.uint8]
    analysis: Any
    person_mask: NDArray[Any] | None = None


@dataclass(frozen=True)
class BuiltRequest:
    """What :func:`build_request` built: the request, the placement it used (for overlays and
    records) and the target mask actually used (``box`` or ``shape``)."""

    request: RenderRequest
    placement: Any  # tryon.vision.placement.Placement
    mask_used: MaskMode


def stored_analysis(pose: Mapping[str, Any] | None, verdicts: Mapping[str, Any] | None,
                    placements: Mapping[str, Any] | None, size: tuple[int, int],
                    body: Mapping[str, Any] | None = None) -> Any:
    """The :class:`~tryon.vision.analysis.PhotoAnalysis` a photo's record keeps (its ``pose``,
    ``verdicts``, default-length ``placements`` and ``body`` measurements — silhouette
    ``spans`` and ``on_body`` landmarks — as stored JSON) for an image of ``size == (W, H)``:
    what :func:`resolve_placement` needs, without re-running the pose. Without ``body`` (older
    photos) a recomputed placement falls back to the landmark widths."""
    from tryon.vision.analysis import PhotoAnalysis
    from tryon.vision.placement import Placement
    from tryon.vision.pose import PoseResult

    return PhotoAnalysis(
        pose=PoseResult.from_dict(dict(pose)) if pose else None,
        person_mask_coverage=float("nan"), people=1,
        placements={cat: Placement.from_dict({"rule": "stored", "category": cat, **dict(p)})
                    for cat, p in (placements or {}).items() if p and p.get("box")},
        verdicts={k: (None if v is None else str(v)) for k, v in (verdicts or {}).items()},
        image_size=(int(size[0]), int(size[1])),
        spans={k: list(v) for k, v in dict((body or {}).get("spans") or {}).items()},
        on_body=[int(i) for i in (body or {}).get("on_body") or []],
    )


def resolve_placement(analysis: Any, params: JobParams) -> Any:
    """The :class:`~tryon.vision.placement.Placement` for ``params`` on an analysed photo.

    With an explicit box: that box, clipped (a photo without a stored pose still gets it, unless
    its analysis found no person or several). Else the stored placement for the ``regular``
    length, or one recomputed from the pose for another length. Raises the typed pre-flight
    errors, or :class:`InvalidInputError` ``no_placement`` when the photo has neither a
    placement for the category nor a pose, and ``invalid_box`` for a box outside the photo.
    """
    from tryon.vision.analysis import check_photo
    from tryon.vision.placement import Placement

    cat = params.category
    w, h = analysis.image_size
    if params.box is not None:
        box = params.box.clip(w, h)
        if box.is_empty():
            raise InvalidInputError(f"The box {params.box.as_list()} is outside the {w}x{h} "
                                    "photo.", code="invalid_box", argument="box")
        if analysis.pose is None and analysis.verdicts.get(cat.value) not in (
                NoPersonError.code, MultiplePeopleError.code):
            return Placement(box, cat, "explicit", str(params.length), box != params.box)
    elif analysis.pose is None and cat.value not in analysis.placements:
        raise InvalidInputError(f"The photo has no placement for {cat}: pass a box.",
                                code="no_placement")
    return check_photo(analysis, cat, length=str(params.length), explicit_box=params.box)


def target_mask_for(box: Box, size: tuple[int, int], mode: MaskMode,
                    person_mask: NDArray[Any] | None) -> tuple[NDArray[np.bool_], MaskMode]:
    """The region to repaint, bool ``(H, W)`` for ``size == (W, H)``, and the mode used:
    ``shape`` is the person's pixels inside ``box`` dilated and cut back to the box
    (:func:`tryon.vision.masks.target_mask`); it falls back to ``box`` when ``person_mask`` is
    None, has another shape, or holds no person pixel inside the box."""
    w, h = size
    plain = np.zeros((h, w), dtype=bool)
    plain[box.y1:box.y2, box.x1:box.x2] = True
    if mode is not MaskMode.SHAPE or person_mask is None or person_mask.shape != (h, w):
        return plain, MaskMode.BOX
    person = person_mask if person_mask.dtype == np.bool_ else person_mask >= 0.5
    if not person[box.y1:box.y2, box.x1:box.x2].any():
        return plain, MaskMode.BOX
    from tryon.vision.masks import target_mask  # OpenCV: only when asked for

    return target_mask(box, size, person_mask=person), MaskMode.SHAPE


def build_request(
    params: JobParams,
    person: PersonInputs,
    garment: NDArray[np.uint8],
    garment_mask: NDArray[np.bool_],
    seeds: Sequence[int],
) -> BuiltRequest:
    """The :class:`RenderRequest` for ``params`` on ``person`` with ``garment`` (uint8
    ``(h, w, 3)``) and its bool mask (same ``(h, w)``). Raises :class:`InvalidInputError`
    (``invalid_mask``, ``invalid_box``, ``no_placement``) and the typed pre-flight errors."""
    if garment_mask.shape != garment.shape[:2]:
        raise InvalidInputError("The garment mask does not match the garment image.",
                                code="invalid_mask")
    # 1. placement
    placement = resolve_placement(person.analysis, params)
    # 2. target mask
    h, w = person.rgb.shape[:2]
    target, mask_used = target_mask_for(placement.box, (w, h), params.mask, person.person_mask)
    # 3. render parameters
    pose = person.analysis.pose
    request = RenderRequest(
        person=person.rgb, garment=garment, garment_mask=garment_mask, box=placement.box,
        target_mask=target, category=params.category, params=params.render_params(seeds),
        landmarks=None if pose is None else np.asarray(pose.landmarks, dtype=np.float32),
        explicit_box=params.box is not None, mask_mode=mask_used,
        person_mask=person.person_mask,
    )
    return BuiltRequest(request=request, placement=placement, mask_used=mask_used)
