"""The AnyDoor engine: a thin shell around :class:`tryon.anydoor.pipeline.AnyDoorPipeline`.

Like a cog predictor: the constructor is cheap (it only checks that the weights path exists);
weights are loaded once, on the first render, in the process that renders (a Celery child, never
the parent: CUDA does not survive a fork). torch is imported on first use too, so building the
registry or the CLI costs nothing.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from tryon.config import Settings
from tryon.engines.base import (
    CancelCheck,
    ProgressCallback,
    ReferenceCache,
    RenderOutput,
    RenderRequest,
)
from tryon.errors import CanceledError, ConfigError, InvalidInputError, WeightsNotFoundError
from tryon.types import MaskMode

if TYPE_CHECKING:
    import torch

    from tryon.anydoor.models import AnyDoorComponents
    from tryon.anydoor.pipeline import AnyDoorPipeline
    from tryon.anydoor.preprocess import ReferenceInputs

log = logging.getLogger(__name__)

ENGINE_VERSION = "1"
#: the reference crop's padding ratio (the demo's and the pipeline's default)
REFERENCE_EXPAND_RATIO = 1.2
#: bump when the byte layout of cached reference data changes (it is part of every cache name)
REFERENCE_CACHE_FORMAT = "npz1"

_T = TypeVar("_T")

_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def resolve_device_dtype(device: str, dtype: str) -> tuple[str, str]:
    """Pick ``(device, dtype)`` names from settings values.

    ``auto`` device: ``cuda`` when available, else ``cpu``. ``auto`` dtype: float16 on CUDA,
    float32 on CPU (fp16 kernels on CPU are slow or missing). Raises ConfigError when CUDA is
    asked for and absent.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"TRYON_DEVICE={device} but CUDA is not available in this process.")
    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") else "float32"
    if dtype not in _DTYPES:
        raise ConfigError(f"TRYON_DTYPE must be auto|float32|float16|bfloat16, got {dtype!r}")
    return device, dtype


def garment_fingerprint(garment: NDArray[np.uint8], mask: NDArray[Any]) -> str:
    """sha256 hex of a garment's pixels and mask: uint8 ``(H, W, 3)`` RGB and ``(H, W)`` mask
    (any dtype; nonzero = garment). Shapes are hashed too, so a reshaped buffer differs."""
    h = hashlib.sha256()
    g = np.ascontiguousarray(garment, dtype=np.uint8)
    m = np.ascontiguousarray(np.asarray(mask) != 0)
    for tag, arr in ((b"rgb", g), (b"mask", m)):
        h.update(tag + repr(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class ReferenceCacheNames:
    """Cache names of one garment's derived data under one model version.

    ``version``: weights checksum, preprocessing version, dtype and device type (what the
    tokens depend on bit for bit); ``reference``/``tokens``: the names given to
    :class:`~tryon.engines.base.ReferenceCache` (``ref-``/``tok-`` + 40 hex).
    """

    version: str
    reference: str
    tokens: str


def reference_cache_names(
    fingerprint: str,
    *,
    weights_checksum: str,
    reference_size: int,
    dtype: str,
    device_type: str,
    expand_ratio: float = REFERENCE_EXPAND_RATIO,
) -> ReferenceCacheNames:
    """Names for a garment with :func:`garment_fingerprint` ``fingerprint``.

    The prepared reference depends on the pixels, the preprocessing version, the expand ratio
    and the reference size; the tokens additionally on the weights, the dtype and the device
    type (GPU kernels round differently from CPU ones), so each name hashes all of them and a
    name never changes meaning. The weights checksum is in the reference's name too, so the
    pair is a unit per model version.
    """
    from tryon.anydoor.preprocess import PREPROCESS_VERSION

    base = "|".join([REFERENCE_CACHE_FORMAT, fingerprint, weights_checksum, PREPROCESS_VERSION,
                     repr(float(expand_ratio)), str(int(reference_size))])
    ref = hashlib.sha256(f"ref|{base}".encode()).hexdigest()[:40]
    tok = hashlib.sha256(f"tok|{base}|{dtype}|{device_type}".encode()).hexdigest()[:40]
    version = f"{weights_checksum}:{PREPROCESS_VERSION}:{dtype}:{device_type}"
    return ReferenceCacheNames(version=version, reference=f"ref-{ref}", tokens=f"tok-{tok}")


def _npz(**arrays: NDArray[Any]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load_npz(data: bytes, names: tuple[str, ...]) -> dict[str, NDArray[Any]]:
    """The arrays ``names`` of npz ``data``; ValueError when one is missing (never unpickles)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        missing = [n for n in names if n not in z.files]
        if missing:
            raise ValueError(f"cached data lacks {missing}")
        return {n: z[n] for n in names}


def encode_reference_inputs(ref: ReferenceInputs) -> bytes:
    """:class:`ReferenceInputs` -> npz bytes (image float32, mask and hf_map uint8, exact)."""
    return _npz(image=ref.image, mask=ref.mask, hf_map=ref.hf_map)


def decode_reference_inputs(data: bytes, size: int) -> ReferenceInputs:
    """Inverse of :func:`encode_reference_inputs`; ValueError unless the arrays have the
    shapes and dtypes of a reference prepared at side ``size``."""
    from tryon.anydoor.preprocess import ReferenceInputs

    arrays = _load_npz(data, ("image", "mask", "hf_map"))
    want = {"image": ((size, size, 3), np.float32), "mask": ((size, size), np.uint8),
            "hf_map": ((size, size, 3), np.uint8)}
    for name, (shape, dtype) in want.items():
        if arrays[name].shape != shape or arrays[name].dtype != dtype:
            raise ValueError(f"cached {name} is {arrays[name].dtype} {arrays[name].shape}")
    return ReferenceInputs(image=arrays["image"], mask=arrays["mask"], hf_map=arrays["hf_map"])


def encode_tokens(tokens: torch.Tensor) -> bytes:
    """ID tokens ``(1, N, D)`` -> npz bytes of float32 (exact for fp16/bf16/fp32 tokens)."""
    return _npz(tokens=tokens.detach().float().cpu().numpy())


def decode_tokens(data: bytes, shape: tuple[int, ...]) -> NDArray[np.float32]:
    """Inverse of :func:`encode_tokens`; ValueError unless float32 of ``shape`` and finite."""
    arr = _load_npz(data, ("tokens",))["tokens"]
    if arr.dtype != np.float32 or tuple(arr.shape) != tuple(shape) or not np.isfinite(arr).all():
        raise ValueError(f"cached tokens are {arr.dtype} {arr.shape}, expected float32 {shape}")
    return arr


class AnyDoorEngine:
    """AnyDoor on the configured weights. One instance per process (see the registry);
    renders are serialised by a lock (one GPU, one model)."""

    name = "anydoor"
    version = ENGINE_VERSION

    def __init__(self, settings: Settings) -> None:
        if not settings.weights:
            raise WeightsNotFoundError()
        if not Path(settings.weights).exists():
            raise WeightsNotFoundError(
                f"No weights at {settings.weights}: set TRYON_WEIGHTS to a directory written by "
                "`tryon weights convert` or to the released AnyDoor checkpoint."
            )
        self.settings: Settings | None = settings
        self._components: AnyDoorComponents | None = None
        self._pipeline: AnyDoorPipeline | None = None
        self._checksum: str | None = None
        self._device = ""
        self._dtype = ""
        self._lock = threading.Lock()

    @classmethod
    def from_components(
        cls,
        components: AnyDoorComponents,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        weights_checksum: str | None = None,
    ) -> AnyDoorEngine:
        """An engine on already-built components (tests, notebooks); nothing is loaded."""
        self = cls.__new__(cls)
        self.settings = None
        self._components = components
        self._pipeline = None
        self._checksum = weights_checksum
        self._device, self._dtype = resolve_device_dtype(device, dtype)
        self._lock = threading.Lock()
        return self

    # ------------------------------------------------------------------------------------
    def _ensure_pipeline(self) -> AnyDoorPipeline:
        if self._pipeline is not None:
            return self._pipeline
        import torch

        from tryon.anydoor.pipeline import AnyDoorPipeline

        if self._components is None:
            from tryon.anydoor.weights import load_weights, weights_checksum

            assert self.settings is not None
            s = self.settings
            self._device, self._dtype = resolve_device_dtype(s.device, s.dtype)
            log.info("loading AnyDoor weights=%s device=%s dtype=%s", s.weights, self._device,
                     self._dtype)
            self._components = load_weights(
                s.weights, dinov2_path=s.dinov2_weights or None, dtype=self._dtype, device="cpu"
            )
            self._checksum = weights_checksum(s.weights)
        self._pipeline = AnyDoorPipeline(
            self._components,
            device=self._device,
            dtype=getattr(torch, self._dtype),
            # DINOv2-g is the biggest part; keeping it on the CPU between encodes is what the
            # offload setting buys (see tryon.anydoor.pipeline)
            offload_id_extractor=bool(self.settings and self.settings.cpu_offload),
        )
        return self._pipeline

    def load(self) -> None:
        """Load the weights now (a worker may warm up before its first job)."""
        with self._lock:
            self._ensure_pipeline()

    @property
    def weights_checksum(self) -> str | None:
        return self._checksum

    def render(
        self,
        request: RenderRequest,
        *,
        callback: ProgressCallback | None = None,
        should_cancel: CancelCheck | None = None,
    ) -> RenderOutput:
        """One AnyDoor sample per seed (``torch.Generator().manual_seed(seed)`` on the CPU, so a
        seed gives the same noise on any device).

        Progress is reported over all samples: ``callback(k * steps + i + 1, samples * steps)``.
        ``should_cancel`` is polled before loading and between steps; CanceledError stops it.
        """
        import torch

        from tryon.anydoor.preprocess import PREPROCESS_VERSION

        p = request.params
        if p.num_samples < 1 or len(p.seeds) != p.num_samples:
            raise InvalidInputError(
                f"params.seeds must hold one seed per sample: num_samples={p.num_samples}, "
                f"seeds={list(p.seeds)}"
            )
        if should_cancel is not None and should_cancel():
            raise CanceledError()
        steps = p.num_inference_steps
        total = steps * p.num_samples
        images = []
        with self._lock:
            pipe = self._ensure_pipeline()
            # once per render, not per sample: the DINOv2 pass is the costliest part to repeat
            reference, tokens, cache_record = self._reference(pipe, request)
            for k, seed in enumerate(p.seeds):

                def on_step(i: int, t: int, latents: torch.Tensor, k: int = k) -> None:
                    if callback is not None:
                        callback(k * steps + i + 1, total)

                out = pipe(
                    reference_image=request.garment,
                    reference_mask=request.garment_mask,
                    target_image=request.person,
                    target_mask=request.target_mask,
                    num_inference_steps=steps,
                    guidance_scale=p.guidance_scale,
                    control_strength=p.control_strength,
                    generator=torch.Generator().manual_seed(int(seed)),
                    callback_on_step_end=on_step,
                    interrupt=should_cancel,
                    expand_ratio=REFERENCE_EXPAND_RATIO,
                    # the official demo's shape control: the hint's mask channel is the
                    # person's shape instead of the box (the HF map still fills the box)
                    shape_mask=request.mask_mode is MaskMode.SHAPE,
                    reference=reference,
                    reference_tokens=tokens,
                )
                images.append(out.image)
        record: dict[str, Any] = {
            "engine": self.name,
            "engine_version": self.version,
            "weights_checksum": self._checksum,
            "preprocess_version": PREPROCESS_VERSION,
            "params": {
                "num_inference_steps": steps,
                "guidance_scale": p.guidance_scale,
                "control_strength": p.control_strength,
                "num_samples": p.num_samples,
                "seeds": [int(s) for s in p.seeds],
                "mask": str(request.mask_mode),
            },
            "device": self._device,
            "dtype": self._dtype,
            "reference_cache": cache_record,
        }
        return RenderOutput(images=images, seeds=[int(s) for s in p.seeds], record=record)

    # -- derived garment data ---------------------------------------------------------------
    def _reference(
        self, pipe: AnyDoorPipeline, request: RenderRequest
    ) -> tuple[ReferenceInputs, torch.Tensor, dict[str, Any]]:
        """Prepared reference and ID tokens for ``request``'s garment, from
        ``request.reference_cache`` when it holds them (else computed and offered to it).

        Returns them with the record entry: ``{"status": "hit" | "partial" | "miss" | "off",
        "version", "reference", "tokens"}`` ("off": no cache given, or weights without a
        checksum, whose data could not be told apart from other weights')."""
        import torch

        cache = request.reference_cache
        names = None
        if cache is not None and self._checksum:
            names = reference_cache_names(
                garment_fingerprint(request.garment, request.garment_mask),
                weights_checksum=self._checksum,
                reference_size=pipe.config.reference_size,
                dtype=self._dtype,
                device_type=torch.device(self._device).type,
            )
        size = pipe.config.reference_size
        reference = tokens = None
        hits = 0
        if cache is not None and names is not None:
            reference = _cache_get(cache, names.reference,
                                   lambda b: decode_reference_inputs(b, size))
            want = tuple(pipe.unconditional_tokens(1).shape)
            cached = _cache_get(cache, names.tokens, lambda b: decode_tokens(b, want))
            if cached is not None:
                tokens = torch.from_numpy(cached).to(device=pipe.device, dtype=pipe.dtype)
            hits = (reference is not None) + (tokens is not None)
        if reference is None:
            reference = pipe.prepare_reference_inputs(
                request.garment, request.garment_mask, REFERENCE_EXPAND_RATIO)
            if cache is not None and names is not None:
                _cache_put(cache, names.reference, encode_reference_inputs(reference))
        if tokens is None:
            tokens = pipe.reference_tokens(reference)
            if cache is not None and names is not None:
                _cache_put(cache, names.tokens, encode_tokens(tokens))
        if names is None:
            return reference, tokens, {"status": "off"}
        status = {0: "miss", 1: "partial", 2: "hit"}[hits]
        log.info("reference cache %s version=%s", status, names.version)
        return reference, tokens, {"status": status, "version": names.version,
                                   "reference": names.reference, "tokens": names.tokens}


def _cache_get(cache: ReferenceCache, name: str, decode: Callable[[bytes], _T]) -> _T | None:
    """``decode(cache.get(name))``, or None when absent, unreadable or malformed: a cache
    problem costs a recomputation, never the render."""
    try:
        data = cache.get(name)
        return None if data is None else decode(data)
    except Exception as exc:  # noqa: BLE001 - any cache failure is a miss
        log.warning("reference cache entry %s unusable (%s: %s); recomputing", name,
                    type(exc).__name__, exc)
        return None


def _cache_put(cache: ReferenceCache, name: str, data: bytes) -> None:
    try:
        cache.put(name, data)
    except Exception as exc:  # noqa: BLE001 - the render goes on without caching
        log.warning("reference cache put %s failed (%s: %s)", name, type(exc).__name__, exc)
