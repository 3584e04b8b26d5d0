"""The AnyDoor engine: a thin shell around :class:`tryon.anydoor.pipeline.AnyDoorPipeline`.

Like a cog predictor: the constructor is cheap (it only checks that the weights path exists);
weights are loaded once, on the first render, in the process that renders (a Celery child, never
the parent: CUDA does not survive a fork). torch is imported on first use too, so building the
registry or the CLI costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tryon.config import Settings
from tryon.engines.base import CancelCheck, ProgressCallback, RenderOutput, RenderRequest
from tryon.errors import CanceledError, ConfigError, InvalidInputError, WeightsNotFoundError

if TYPE_CHECKING:
    import torch

    from tryon.anydoor.models import AnyDoorComponents
    from tryon.anydoor.pipeline import AnyDoorPipeline

log = logging.getLogger(__name__)

ENGINE_VERSION = "1"

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


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


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
            path = Path(s.weights)
            self._checksum = weights_checksum(path) if path.is_dir() else _file_sha256(path)
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
            },
            "device": self._device,
            "dtype": self._dtype,
        }
        return RenderOutput(images=images, seeds=[int(s) for s in p.seeds], record=record)
