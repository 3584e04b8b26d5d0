"""Request and response schemas (marshmallow, through APIFlask): they drive validation and the
OpenAPI document."""

from __future__ import annotations

from typing import Any

from apiflask import Schema
from apiflask.fields import (
    Boolean,
    Dict,
    File,
    Float,
    Integer,
    List,
    Nested,
    Raw,
    String,
)
from apiflask.validators import Length, OneOf, Range, Regexp
from marshmallow import ValidationError

from tryon.anydoor.limits import CONTROL_STRENGTH, GUIDANCE, NUM_SAMPLES, SEED, STEPS, Bound
from tryon.types import Category, GarmentLength, JobStatus, MaskMode
from web.inputs import CURSOR_PATTERN, ID_PATTERN, unstorable_reason

CATEGORIES = [c.value for c in Category]
LENGTHS = [g.value for g in GarmentLength]
MAX_SEED = int(SEED.high)


def bound_range(bound: Bound) -> Range:
    """The marshmallow ``Range`` of a shared bound (so the schema and the OpenAPI document say
    what the pipeline checks)."""
    cast = int if bound.integer else float
    return Range(min=cast(bound.low), max=cast(bound.high), min_inclusive=not bound.low_open)


class Text(String):
    """A string the database can store: a NUL byte or a lone surrogate is a 422 naming the
    field (PostgreSQL refuses NUL in text; a surrogate cannot be encoded as UTF-8)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        out = super()._deserialize(value, attr, data, **kwargs)
        reason = unstorable_reason(out)
        if reason:
            raise ValidationError(f"Not valid text: {reason}.")
        return out


def RecordId(**kwargs: Any) -> Text:
    """A record id: 32 lowercase hex digits."""
    return Text(validate=Regexp(ID_PATTERN), metadata={"pattern": ID_PATTERN}, **kwargs)


class ErrorDetail(Schema):
    code = String(required=True, metadata={"description": "Stable machine-readable code."})
    message = String(required=True)
    details = Raw()


class ErrorOut(Schema):
    error = Nested(ErrorDetail, required=True)


class PageQuery(Schema):
    limit = Integer(load_default=20, validate=Range(1, 100))
    # the shape is checked by the view (422 invalid_cursor), the pattern documents it
    cursor = Text(load_default=None, validate=Length(max=200), metadata={
        "pattern": CURSOR_PATTERN,
        "description": "`next_cursor` of the previous page (opaque; any value of this shape "
                       "is accepted)."})


# --- garments --------------------------------------------------------------------------
class GarmentIn(Schema):
    image = File(required=True, metadata={"description": "JPEG, PNG (transparency kept) or WebP."})
    mask = File(load_default=None, metadata={"description": "Optional garment mask (white = garment)."})
    category = String(required=True, validate=OneOf(CATEGORIES))
    length = String(load_default=GarmentLength.REGULAR.value, validate=OneOf(LENGTHS))
    name = Text(load_default="", validate=Length(max=200))
    sku = Text(load_default=None, validate=Length(max=100))


class GarmentOut(Schema):
    id = String()
    name = String()
    sku = String(allow_none=True)
    category = String()
    length = String()
    width = Integer()
    height = Integer()
    mask_source = String()
    mask_score = Float()
    image_sha256 = String()
    created_at = String(allow_none=True, metadata={"format": "date-time"})


class GarmentPage(Schema):
    items = List(Nested(GarmentOut))
    next_cursor = String(allow_none=True)


# --- photos ------------------------------------------------------------------------------
class PhotoIn(Schema):
    image = File(required=True, metadata={"description": "JPEG, PNG or WebP; HEIC is refused (415)."})
    consent = Boolean(
        required=True,
        metadata={"description": "Must be true: the shopper agrees to the photo being processed."},
    )


class PhotoOut(Schema):
    id = String()
    width = Integer()
    height = Integer()
    verdicts = Dict(keys=String(), values=String(allow_none=True))
    usable_categories = List(String())
    placements = Dict(keys=String(), values=Raw())
    consent_at = String(allow_none=True, metadata={"format": "date-time"})
    created_at = String(allow_none=True, metadata={"format": "date-time"})


class PhotoPage(Schema):
    items = List(Nested(PhotoOut))
    next_cursor = String(allow_none=True)


class PlacementQuery(Schema):
    category = String(required=True, validate=OneOf(CATEGORIES))


# --- try-ons -------------------------------------------------------------------------------
class JSONFloat(Float):
    """A JSON number only: ``"4.5"`` (a string) and booleans are refused, not coerced."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError("Not a valid number.")
        return super()._deserialize(value, attr, data, **kwargs)


class JSONInteger(Integer):
    """A JSON integer: ``4`` and ``4.0`` (the same number in JSON Schema); never a string, a
    boolean or a fractional number (``10.7`` is refused, not truncated)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, float) and not isinstance(value, bool) and value.is_integer():
            value = int(value)
        return super()._deserialize(value, attr, data, **kwargs)


class TryOnIn(Schema):
    # JSON body: integers are strict (a string "2" or 10.7 is a 422 naming the field, never
    # coerced or silently truncated); query strings (PageQuery) must stay lenient

    photo_id = RecordId(required=True)
    garment_id = RecordId(required=True)
    engine = Text(load_default=None, validate=Length(max=32))
    num_samples = JSONInteger(load_default=1, validate=bound_range(NUM_SAMPLES))
    seed = JSONInteger(load_default=None, allow_none=True, validate=bound_range(SEED))
    steps = JSONInteger(load_default=None, allow_none=True, validate=bound_range(STEPS),
                        metadata={"description": "Denoising steps (default TRYON_DEFAULT_STEPS)."})
    guidance = JSONFloat(load_default=None, allow_none=True, validate=bound_range(GUIDANCE),
                         metadata={"description": "Guidance scale, > 0 (default "
                                                  "TRYON_DEFAULT_GUIDANCE)."})
    control_strength = JSONFloat(load_default=None, allow_none=True,
                                 validate=bound_range(CONTROL_STRENGTH),
                                 metadata={"description": "ControlNet strength (default 1.0)."})
    box = List(JSONInteger(), load_default=None, allow_none=True, validate=Length(equal=4),
               metadata={"description": "Placement override [x1, y1, x2, y2), photo pixels."})
    mask = String(load_default="box", validate=OneOf([m.value for m in MaskMode]), metadata={
        "description": "Region to repaint: `box` (the whole placement box) or `shape` (the box "
                       "cut to the person's silhouette from the photo's segmentation, dilated; "
                       "falls back to the box when the photo has no usable person mask)."})
    webhook_url = Text(load_default=None, allow_none=True, validate=Length(max=2000))


class ResultOut(Schema):
    index = Integer()
    url = String(metadata={"description": "Signed URL, valid for `url_expires_in` seconds."})
    url_expires_in = Integer()
    owner_url = String(metadata={"description": "Same image, for the owner's API key."})
    seed = Integer()
    width = Integer()
    height = Integer()
    sha256 = String()


class TryOnOut(Schema):
    id = String()
    status = String(validate=OneOf([s.value for s in JobStatus]))
    stage = String()
    progress = Float(metadata={"description": "Percent, 0-100."})
    engine = String()
    queue = String()
    photo_id = String()
    garment_id = String()
    params = Dict()
    attempt = Integer()
    max_attempts = Integer()
    error = Nested(ErrorDetail, allow_none=True)
    timings = Dict()
    results = List(Nested(ResultOut))
    results_expired = Boolean(metadata={
        "description": "True when the job succeeded but its results were purged "
                       "(TRYON_RESULT_TTL_S) or deleted with its photo."})
    created_at = String(allow_none=True, metadata={"format": "date-time"})
    started_at = String(allow_none=True, metadata={"format": "date-time"})
    finished_at = String(allow_none=True, metadata={"format": "date-time"})


class TryOnPage(Schema):
    items = List(Nested(TryOnOut))
    next_cursor = String(allow_none=True)


class JobsQuery(PageQuery):
    status = String(load_default="failed", validate=OneOf([s.value for s in JobStatus]))


class QueuesOut(Schema):
    counts = Dict()
    by_queue = Dict()
    oldest_queued_age_s = Float(allow_none=True)
    oldest_running_age_s = Float(allow_none=True)
    broker = Dict()


class WorkerOut(Schema):
    id = String(metadata={"description": "`<hostname>:<pid>` of the pool process."})
    queues = List(String())
    engines = List(String())
    state = String(validate=OneOf(["loading", "ready", "failed"]))
    ready = Boolean()
    alive = Boolean(metadata={"description": "Heartbeat within `stale_after_s`."})
    error = String(allow_none=True)
    started_at = String(allow_none=True, metadata={"format": "date-time"})
    heartbeat_at = String(allow_none=True, metadata={"format": "date-time"})
    current_job = String(allow_none=True)


class WorkersOut(Schema):
    workers = List(Nested(WorkerOut))
    stale_after_s = Float()


class HealthOut(Schema):
    status = String()
    checks = Dict()
