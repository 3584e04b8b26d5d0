"""A job's inputs from its records: the stored photo, garment and masks decoded, the photo's
analysis rebuilt from its row, and :func:`tryon.engines.request.build_request` called on them.

Stored objects are our own re-encoded PNG/JPEG; nothing else is ever decoded here.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tryon.engines.request import (
    BuiltRequest,
    JobParams,
    PersonInputs,
    build_request,
    stored_analysis,
)
from tryon.records.models import Garment, Photo

log = logging.getLogger(__name__)

_STORED_FORMATS = ["PNG", "JPEG"]


def decode_rgb(data: bytes) -> NDArray[np.uint8]:
    with Image.open(io.BytesIO(data), formats=_STORED_FORMATS) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def decode_mask(data: bytes) -> NDArray[np.bool_]:
    """A stored mask (alpha if present, else luminance) as bool, ``> 127``."""
    with Image.open(io.BytesIO(data), formats=_STORED_FORMATS) as im:
        if "A" in im.getbands():
            plane = np.asarray(im.getchannel("A"))
        else:
            plane = np.asarray(im.convert("L"))
    return plane > 127


def load_inputs(photo: Photo, garment: Garment, params: JobParams, seeds: Sequence[int],
                get: Callable[[str], bytes]) -> BuiltRequest:
    """Decode the job's stored objects (``get`` reads a storage key) and build its request.
    The person mask is read whenever the photo has one (``mask="shape"`` builds the target
    from it; the preview engine keeps arms, hands and hair in front with it); a lost or
    unreadable one degrades to the box (transient storage errors still propagate and are retried as usual)."""
    person = decode_rgb(get(photo.image_key))
    h, w = person.shape[:2]
    garment_rgb = decode_rgb(get(garment.image_key))
    garment_mask = decode_mask(get(garment.mask_key))
    person_mask = None
    if photo.person_mask_key:
        from tryon.storage import ObjectNotFoundError

        try:
            person_mask = decode_mask(get(photo.person_mask_key))
        except (ObjectNotFoundError, OSError, ValueError) as exc:
            log.warning("photo=%s person mask %s unusable (%s); using the box", photo.id,
                        photo.person_mask_key, type(exc).__name__)
    analysis = stored_analysis(photo.pose, photo.verdicts, photo.placements, (w, h),
                               photo.body)
    return build_request(params, PersonInputs(person, analysis, person_mask), garment_rgb,
                         garment_mask, seeds)
