"""Reading weight files and copying them into modules without holding them twice in memory.

:func:`read_checkpoint` opens a ``.ckpt``/``.pth``/``.pt``/``.bin`` (``torch.load`` with
``mmap=True``, weights-only where the file allows) or a ``.safetensors`` file as a flat
``{name: tensor}`` dict whose tensors are **views of a private, read-only memory map** of the
file: nothing is read until a tensor is used. A loader copies each tensor into the model's own
memory (in the model's dtype) and then calls :meth:`Checkpoint.release` on the source, which hands
the file's pages back to the page cache. So loading peaks near one copy of the weights in the
target dtype, whatever the file's dtype (an fp32 file loaded as fp16 never has the whole fp32
file resident), and the model never depends on the file after loading.

Why not ``safetensors.safe_open``: every page its map touches stays in the process's resident
set until the handle closes, so converting a file tensor by tensor still peaks at file + model.
"""

from __future__ import annotations

import ctypes
import json
import logging
import mmap
import os
import pickle
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tryon.errors import WeightsError, WeightsNotFoundError

log = logging.getLogger(__name__)

_MAX_LISTED = 10

#: safetensors dtype names -> torch dtypes (the subset weight files use)
_ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass
class Checkpoint:
    """A flat state dict read from one file.

    ``spans``: the address ranges of the file's private memory map(s) (empty when the file had
    to be read into ordinary memory, as the legacy ``torch.save`` format is). :meth:`release`
    drops pages only inside them: there they are clean file pages, which the kernel re-reads
    if they are touched again, so releasing changes memory use, never values. On ordinary
    memory the same call would zero data, hence the check.
    """

    tensors: dict[str, Tensor]
    spans: tuple[tuple[int, int], ...] = ()

    @property
    def mapped(self) -> bool:
        return bool(self.spans)

    def release(self, tensors: Iterable[Tensor]) -> None:
        """Hand the resident pages behind those of ``tensors`` that are views of this file's
        map back to the page cache (Linux; elsewhere a no-op). Others are left alone."""
        for t in tensors:
            if t.device.type != "cpu":
                continue
            begin = t.data_ptr()
            end = begin + t.numel() * t.element_size()
            if any(lo <= begin and end <= hi for lo, hi in self.spans):
                _drop_pages(begin, end)


# --- pickle-based files ------------------------------------------------------------------------


class _Stub:
    """Stands in for any class a pickle names that is not on the tensor allowlist."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Stub:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _restricted_pickle_module() -> Any:
    """A ``pickle_module`` for ``torch.load`` that never executes code from the file.

    Lightning checkpoints may pickle callback or hyper-parameter objects that
    ``weights_only=True`` refuses. Instead of trusting the file, every global outside torch's
    own weights-only allowlist is replaced by an inert stub class: the tensors come back, the
    rest becomes harmless placeholders we never look at.
    """
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed: dict[str, Any] = dict(_get_allowed_globals())
    except (ImportError, AttributeError):  # private API moved: fall back to the essentials
        import collections

        allowed = {
            "collections.OrderedDict": collections.OrderedDict,
            "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
            "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
        }
    stubs: dict[str, type] = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            full = f"{module}.{name}"
            if full in allowed:
                return allowed[full]
            if full not in stubs:
                stubs[full] = type(name, (_Stub,), {"__module__": "tryon._stub." + module})
            return stubs[full]

    class Module:
        __name__ = "tryon_restricted_pickle"

    Module.Unpickler = Unpickler  # type: ignore[attr-defined]
    Module.load = staticmethod(lambda f, **kw: Unpickler(f, **kw).load())  # type: ignore[attr-defined]
    return Module


def _torch_load(path: Path) -> tuple[Any, bool]:
    """``(object, mapped)``: mmap first (the optimizer states a Lightning file carries are
    never read), then without mmap for the legacy format, which cannot be mapped."""
    attempts: list[dict[str, Any]] = [
        {"weights_only": True, "mmap": True},
        {"weights_only": True},
        {"weights_only": False, "pickle_module": _restricted_pickle_module(), "mmap": True},
        {"weights_only": False, "pickle_module": _restricted_pickle_module()},
    ]
    last: Exception | None = None
    for kwargs in attempts:
        try:
            obj = torch.load(path, map_location="cpu", **kwargs)
        except (
            pickle.UnpicklingError,
            RuntimeError,
            ValueError,
            TypeError,
            AttributeError,
            EOFError,
        ) as exc:
            last = exc
            continue
        if not kwargs["weights_only"]:
            log.warning(
                "%s holds non-tensor objects that weights-only loading refuses; read it with "
                "a restricted unpickler (non-tensor objects replaced by inert stubs)",
                path,
            )
        return obj, bool(kwargs.get("mmap"))
    raise WeightsError(f"{path} is not a readable PyTorch checkpoint: {last}")


# --- safetensors -------------------------------------------------------------------------------


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], tuple[int, int]]:
    """Tensors of a safetensors file as views of one private memory map (nothing read yet).

    The format: 8-byte little-endian header length, a JSON header ``{name: {dtype, shape,
    data_offsets}}``, then the data. Parsed here (instead of ``safe_open``) so each tensor's
    pages can be released after conversion; see the module docstring.
    """
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ValueError("file shorter than its header length")
            n = int.from_bytes(head, "little")
            if n <= 0 or 8 + n > size:
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        start = 8 + n
        # shared=False: a private map, so nothing we do can write to the file
        storage: Any = torch.UntypedStorage.from_file(str(path), shared=False, nbytes=size)
        whole = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (size,), (1,))
        out: dict[str, Tensor] = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = _ST_DTYPES.get(info["dtype"])
            if dtype is None:
                raise ValueError(f"{name}: dtype {info['dtype']} is not supported")
            begin, end = (int(x) for x in info["data_offsets"])
            shape = tuple(int(x) for x in info["shape"])
            itemsize = torch.empty(0, dtype=dtype).element_size()
            numel = 1
            for s in shape:
                numel *= s
            if end - begin != numel * itemsize or start + end > size or begin < 0:
                raise ValueError(f"{name}: data offsets {begin}..{end} do not fit shape {shape}")
            raw = whole[start + begin : start + end]
            if (start + begin) % itemsize:  # unaligned (not written by safetensors): copy
                raw = raw.clone()
            out[name] = raw.view(dtype).reshape(shape)
        return out, (whole.data_ptr(), whole.data_ptr() + size)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise WeightsError(f"{path} is not a readable safetensors file: {exc}") from exc


# --- public ------------------------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """A flat ``{name: tensor}`` state dict from a ``.ckpt``/``.pth``/``.pt``/``.bin`` or
    ``.safetensors`` file, memory-mapped where the format allows (see :class:`Checkpoint`).

    A Lightning checkpoint's ``state_dict`` entry is used when present (the optimizer states
    and other entries are ignored); otherwise the file must be a bare state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"No weights file at {path}.")
    obj: Any
    spans: tuple[tuple[int, int], ...] = ()
    if path.suffix == ".safetensors":
        obj, span = _read_safetensors(path)
        spans, mapped = (span,), True
    else:
        obj, mapped = _torch_load(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} does not hold a state dict (found {type(obj).__name__}).")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(
            f"{path}: state dict entries that are not tensors: {bad[:_MAX_LISTED]}",
            bad_entries=[str(k) for k in bad[:_MAX_LISTED]],
        )
    tensors = dict(obj)
    if path.suffix != ".safetensors" and mapped and tensors:
        # torch.load(mmap=True) maps the whole file once; every storage is a slice of it
        storages = [t.untyped_storage() for t in tensors.values()]
        lo = min(s.data_ptr() for s in storages)
        hi = max(s.data_ptr() + s.nbytes() for s in storages)
        spans = ((lo, hi),)
    return Checkpoint(tensors=tensors, spans=spans)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """:func:`read_checkpoint`'s tensors (memory-mapped where possible; copy before writing)."""
    return read_checkpoint(path).tensors


def _madvise() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _madvise()
_MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE


def _drop_pages(begin: int, end: int) -> None:
    if _MADVISE is None:
        return
    # whole pages inside the range only: a neighbour's page stays resident
    first = (begin + _PAGE - 1) // _PAGE * _PAGE
    last = end // _PAGE * _PAGE
    if last > first and _MADVISE(first, last - first, _MADV_DONTNEED) != 0:
        log.debug("madvise failed (errno %d); pages stay resident", ctypes.get_errno())


# --- into modules ------------------------------------------------------------------------------


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``None`` -> float32; a name (``"float16"``) -> the torch dtype; WeightsError otherwise."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise WeightsError(f"unknown dtype {dtype!r}: use float32, float16 or bfloat16")
        return resolved
    return dtype


def assign_state_dicts(
    modules: Mapping[str, nn.Module],
    state_dicts: Mapping[str, Mapping[str, Tensor]],
    dtype: torch.dtype,
    sources: Sequence[Checkpoint] = (),
) -> None:
    """Give every module of ``modules`` (built empty) its tensors ``state_dicts[name]``
    (names checked beforehand).

    Tensor by tensor: each is copied into fresh memory of its own, floating-point ones in
    ``dtype``, then its file pages are released (``sources``: the memory-mapped files it may
    come from). So the peak is one copy of the weights in ``dtype`` plus one tensor, and the
    modules never share memory with the file or with each other (split views become separate
    tensors, which safetensors can write).
    """
    for name, module in modules.items():
        owned: dict[str, Tensor] = {}
        for key, value in state_dicts[name].items():
            want = dtype if value.is_floating_point() else value.dtype
            copy = torch.empty(value.shape, dtype=want)
            copy.copy_(value)
            owned[key] = copy
            for source in sources:
                source.release((value,))
        try:
            # assign=True adopts the copies instead of copying again into (meta) parameters
            module.load_state_dict(owned, strict=True, assign=True)
        except RuntimeError as exc:  # shapes were checked; this is a last-resort guard
            raise WeightsError(f"loading weights failed: {exc}") from exc
        del owned
