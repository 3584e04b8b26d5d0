"""A compose job's inputs from its records: the scene (an uploaded scene stored under the job,
or a photo), the reference (an upload with its mask, or a garment) and the region and object
masks, decoded and turned into a :class:`tryon.compose.ComposePlan`.

Stored objects are our own re-encoded PNG/JPEG (the API wrote them through the intake).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from tryon.compose import ComposeInputs, ComposeParams, ComposePlan, plan
from tryon.errors import InvalidInputError
from tryon.records.models import Garment, Photo
from workers.inputs import decode_mask, decode_rgb


def load_compose(params: ComposeParams, photo: Photo | None, garment: Garment | None,
                 get: Callable[[str], bytes]) -> tuple[ComposePlan, dict[str, Any]]:
    """The plan of a compose job and the record of what went in (ids, checksums, keys)."""
    keys = dict(params.inputs)
    inputs: dict[str, Any] = {"op": str(params.op),
                              "box": None if params.box is None else params.box.as_list()}
    # 1. the scene
    if photo is not None:
        scene = decode_rgb(get(photo.image_key))
        inputs.update(photo_id=photo.id, photo_sha256=photo.image_sha256)
    elif "scene" in keys:
        data = get(keys["scene"])
        scene = decode_rgb(data)
        inputs.update(scene_key=keys["scene"], scene_sha256=hashlib.sha256(data).hexdigest())
    else:
        raise InvalidInputError("The job has no scene.", code="inputs_missing")
    # 2. the reference and its mask
    reference = ref_mask = None
    if garment is not None:
        reference = decode_rgb(get(garment.image_key))
        ref_mask = decode_mask(get(garment.mask_key))
        inputs.update(garment_id=garment.id, garment_sha256=garment.image_sha256)
    elif "reference" in keys:
        data, mask_data = get(keys["reference"]), get(keys["reference_mask"])
        reference, ref_mask = decode_rgb(data), decode_mask(mask_data)
        inputs.update(reference_key=keys["reference"],
                      reference_sha256=hashlib.sha256(data).hexdigest(),
                      reference_mask_sha256=hashlib.sha256(mask_data).hexdigest())

    # 3. the masks in the scene
    def mask(name: str) -> Any:
        return decode_mask(get(keys[name])) if name in keys else None

    for name in ("region_mask", "object_mask", "object_mask_b"):
        if name in keys:
            inputs[f"{name}_key"] = keys[name]
    the_plan = plan(params.op, ComposeInputs(
        scene=scene, reference=reference, reference_mask=ref_mask,
        region_mask=mask("region_mask"), object_mask=mask("object_mask"),
        object_mask_b=mask("object_mask_b")), params.box)
    inputs["boxes"] = the_plan.record.get("boxes")
    return the_plan, inputs
