"""Bounds of the numeric render parameters, defined once.

The pipeline's ``check_inputs`` (:mod:`tryon.anydoor.pipeline`), the typed job parameters
(:class:`tryon.engines.request.JobParams`), ``tryon render``'s options and the API schema
(:mod:`web.schemas`) all read these values, so a request the API accepts is never refused by the
pipeline later (guidance 0 was). No torch here: the web app imports this module.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from tryon.errors import InvalidInputError


@dataclass(frozen=True)
class Bound:
    """``low <= value <= high`` (``low < value`` when ``low_open``); ``integer``: an int."""

    low: float
    high: float
    low_open: bool = False
    integer: bool = False

    def describe(self) -> str:
        return f"{'(' if self.low_open else '['}{_fmt(self.low)}, {_fmt(self.high)}]"

    def contains(self, value: Any) -> bool:
        kind = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind):
            return False
        v = float(value)
        too_low = v <= self.low if self.low_open else v < self.low
        return math.isfinite(v) and not too_low and v <= self.high

    def check(self, name: str, value: Any) -> None:
        """Raise :class:`InvalidInputError` naming ``name`` unless ``value`` is in the bound."""
        if not self.contains(value):
            kind = "an integer" if self.integer else "a number"
            raise InvalidInputError(f"{name} must be {kind} in {self.describe()}, got {value!r}",
                                    argument=name)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) >= 1 else str(v)


#: denoising steps a job may ask for (the pipeline also caps them at the model's
#: ``num_train_timesteps``, 1000 for AnyDoor)
STEPS = Bound(1, 200, integer=True)
#: classifier-free guidance scale: 0 is not "no guidance" in this pipeline, it is refused
#: (the reference demo's slider range is 0.1..30)
GUIDANCE = Bound(0.0, 30.0, low_open=True)
#: ControlNet residual scale
CONTROL_STRENGTH = Bound(0.0, 2.0)
#: samples per job (one seed each)
NUM_SAMPLES = Bound(1, 4, integer=True)
#: a client seed (sample k uses seed + k, wrapped to 31 bits)
SEED = Bound(0, 2**31 - 1, integer=True)
#: reference crop padding and target crop expansion ratios (pipeline arguments only)
EXPAND_RATIO = Bound(1.0, 4.0)
CROP_RATIO = Bound(1.0, 4.0)


def check_sampling(*, steps: Any, guidance: Any, control_strength: Any, num_samples: Any,
                   seed: Any = None) -> None:
    """Check a job's sampling parameters against the bounds above (seed None: derived later).
    Raises :class:`~tryon.errors.InvalidInputError` naming the first one out of range."""
    STEPS.check("steps", steps)
    GUIDANCE.check("guidance", guidance)
    CONTROL_STRENGTH.check("control_strength", control_strength)
    NUM_SAMPLES.check("num_samples", num_samples)
    if seed is not None:
        SEED.check("seed", seed)
