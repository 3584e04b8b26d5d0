"""Small value types shared by every stage (no heavy imports here)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Category(enum.StrEnum):
    """Garment category; decides which body parts the placement box covers."""

    UPPER_BODY = "upper_body"
    LOWER_BODY = "lower_body"
    DRESS = "dress"
    OUTERWEAR = "outerwear"


class GarmentLength(enum.StrEnum):
    """Coarse garment length; adjusts the lower edge of the placement box."""

    CROPPED = "cropped"
    REGULAR = "regular"
    LONG = "long"


class MaskMode(enum.StrEnum):
    """The region a render repaints: the whole placement ``box``, or the person's ``shape``
    inside it (the AnyDoor demo's shape control: the mask channel from the target mask)."""

    BOX = "box"
    SHAPE = "shape"


class JobKind(enum.StrEnum):
    """What a job row runs: a try-on, a composition (``/v1/compose``), or a batch (a parent
    whose children are try-on or compose jobs; no worker ever runs the parent itself)."""

    TRYON = "tryon"
    COMPOSE = "compose"
    BATCH = "batch"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}


class Role(enum.StrEnum):
    SHOPPER = "shopper"
    MERCHANT = "merchant"
    OPS = "ops"


@dataclass(frozen=True)
class Box:
    """Pixel box ``[x1, x2) x [y1, y2)`` (end-exclusive), in the image's pixel coordinates.

    Note: the AnyDoor reference code uses ``(y1, y2, x1, x2)`` tuples; convert with
    :meth:`to_yyxx` / :meth:`from_yyxx` at that boundary only.
    """

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)

    def is_empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    def clip(self, width: int, height: int) -> Box:
        return Box(
            min(max(self.x1, 0), width),
            min(max(self.y1, 0), height),
            min(max(self.x2, 0), width),
            min(max(self.y2, 0), height),
        )

    def to_yyxx(self) -> tuple[int, int, int, int]:
        return (self.y1, self.y2, self.x1, self.x2)

    @classmethod
    def from_yyxx(cls, yyxx: tuple[int, int, int, int]) -> Box:
        y1, y2, x1, x2 = yyxx
        return cls(int(x1), int(y1), int(x2), int(y2))

    def as_list(self) -> list[int]:
        return [self.x1, self.y1, self.x2, self.y2]
