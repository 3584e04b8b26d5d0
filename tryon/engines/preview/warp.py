"""Garment-to-photo warps: a thin-plate spline through keypoint pairs, or one affine box map.

A :class:`Warp` maps photo pixels back to garment pixels (a backward map, so every photo pixel
gets exactly one garment sample) and resamples the premultiplied RGBA garment into a rectangle
of the photo with :func:`cv2.remap`. The spline is evaluated on a grid of :data:`GRID_STEP` pixels
and interpolated bilinearly in between: a few dozen control points cost well under a
millisecond, where a per-pixel evaluation of a 1024-px photo costs tens.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.types import Box

#: spacing of the grid the spline is evaluated on (pixels of the photo)
GRID_STEP = 6
#: bending regulariser of the spline, in units of the control points' mean squared spacing:
#: a little smoothing keeps two close, disagreeing pairs from folding the garment
REGULARISATION = 1e-3


def _tps_kernel(r2: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        k = 0.5 * r2 * np.log(r2)
    return np.nan_to_num(k, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True)
class ThinPlateSpline:
    """A 2-D thin-plate spline ``f`` with ``f(ctrl[i]) ≈ values[i]``; float64 throughout."""

    ctrl: NDArray[np.float64]
    weights: NDArray[np.float64]  # (N + 3, 2): N radial weights, then the affine part

    @classmethod
    def fit(cls, ctrl: NDArray[np.float64], values: NDArray[np.float64]) -> ThinPlateSpline:
        n = ctrl.shape[0]
        d2 = ((ctrl[:, None, :] - ctrl[None, :, :]) ** 2).sum(-1)
        k = _tps_kernel(d2)
        scale = float(d2.mean()) or 1.0
        k = k + np.eye(n) * REGULARISATION * scale
        p = np.hstack([np.ones((n, 1)), ctrl])
        a = np.zeros((n + 3, n + 3))
        a[:n, :n], a[:n, n:], a[n:, :n] = k, p, p.T
        b = np.zeros((n + 3, 2))
        b[:n] = values
        weights = np.linalg.lstsq(a, b, rcond=None)[0]
        return cls(ctrl=ctrl, weights=weights)

    def __call__(self, pts: NDArray[np.float64]) -> NDArray[np.float64]:
        d2 = ((pts[:, None, :] - self.ctrl[None, :, :]) ** 2).sum(-1)
        n = self.ctrl.shape[0]
        out: NDArray[np.float64] = _tps_kernel(d2) @ self.weights[:n]
        out += self.weights[n] + pts @ self.weights[n + 1 :]
        return out


@dataclass(frozen=True)
class Layer:
    """One part of the garment (the columns ``cols`` = [x0, x1) of the garment image) and its
    photo-to-garment map: a spline, or an affine garment-to-photo ``matrix`` (2, 3)."""

    cols: tuple[int, int]
    backward: ThinPlateSpline | None
    matrix: NDArray[np.float64] | None = None

    def maps(self, rect: tuple[int, int, int, int]) -> tuple[NDArray[np.float32],
                                                             NDArray[np.float32]]:
        """Garment coordinates (map_x, map_y), float32 ``(h, w)``, for each photo pixel of
        ``rect`` = (x1, y1, x2, y2)."""
        x1, y1, x2, y2 = rect
        w, h = x2 - x1, y2 - y1
        if self.backward is None:
            assert self.matrix is not None
            inv = cv2.invertAffineTransform(self.matrix)
            xx, yy = np.meshgrid(np.arange(x1, x2, dtype=np.float64),
                                 np.arange(y1, y2, dtype=np.float64))
            mx = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
            my = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
            return mx.astype(np.float32), my.astype(np.float32)
        gw, gh = -(-w // GRID_STEP) + 1, -(-h // GRID_STEP) + 1
        gx = x1 + np.arange(gw, dtype=np.float64) * GRID_STEP
        gy = y1 + np.arange(gh, dtype=np.float64) * GRID_STEP
        xx, yy = np.meshgrid(gx, gy)
        src = self.backward(np.stack([xx.ravel(), yy.ravel()], axis=1)).astype(np.float32)
        coarse_x = src[:, 0].reshape(gh, gw)
        coarse_y = src[:, 1].reshape(gh, gw)
        # grid node k sits at pixel k * GRID_STEP: resize the node lattice so that nodes land on
        # their pixels, then crop to the rectangle
        full = ((gw - 1) * GRID_STEP + 1, (gh - 1) * GRID_STEP + 1)
        mx = cv2.resize(coarse_x, full, interpolation=cv2.INTER_LINEAR)[:h, :w]
        my = cv2.resize(coarse_y, full, interpolation=cv2.INTER_LINEAR)[:h, :w]
        return np.ascontiguousarray(mx), np.ascontiguousarray(my)


@dataclass(frozen=True)
class Warp:
    """The garment's layers, back to front. ``kind``: ``"tps"`` or ``"box"``; ``dst_points``:
    where the fit put the garment's keypoints in the photo (empty for ``"box"``)."""

    kind: str
    layers: tuple[Layer, ...]
    dst_points: NDArray[np.float64]

    def apply(self, rgba: NDArray[np.float32], rect: tuple[int, int, int, int]
              ) -> NDArray[np.float32]:
        """The premultiplied garment ``rgba`` (float32 ``(H, W, 4)``) resampled into ``rect``,
        each layer composited over the ones before it."""
        x1, y1, x2, y2 = rect
        out = np.zeros((y2 - y1, x2 - x1, 4), dtype=np.float32)
        for layer in self.layers:
            c0, c1 = layer.cols
            part = rgba if (c0, c1) == (0, rgba.shape[1]) else np.zeros_like(rgba)
            if part is not rgba:
                part[:, c0:c1] = rgba[:, c0:c1]
            mx, my = layer.maps(rect)
            warped = np.asarray(cv2.remap(part, mx, my, interpolation=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_CONSTANT,
                                          borderValue=(0.0, 0.0, 0.0, 0.0)), dtype=np.float32)
            out = warped + out * (1.0 - warped[..., 3:4])
        return out


@dataclass(frozen=True)
class Part:
    """Keypoint pairs of one garment part: garment columns [x0, x1), garment points ``src`` and
    photo points ``dst`` (float64 (N, 2), N >= 3)."""

    cols: tuple[int, int]
    src: NDArray[np.float64]
    dst: NDArray[np.float64]


def tps_warp(parts: list[Part]) -> Warp:
    """One thin-plate spline per part (back to front), each taking its garment points to its
    photo points."""
    layers = tuple(Layer(cols=p.cols, backward=ThinPlateSpline.fit(p.dst, p.src)) for p in parts)
    dst = np.concatenate([p.dst for p in parts]) if parts else np.zeros((0, 2))
    return Warp(kind="tps", layers=layers, dst_points=dst)


def affine_box_warp(box: Box, garment_mask: NDArray[np.bool_], ease: float = 1.0,
                    length: float = 0.0) -> Warp:
    """Stretch the garment's mask bounding box onto ``box`` (its width times ``ease``, centred;
    its height times ``1 + length``)."""
    ys, xs = np.nonzero(garment_mask)
    gx1, gy1, gx2, gy2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    bw = box.width * ease
    bh = box.height * (1.0 + length)
    sx, sy = bw / (gx2 - gx1), bh / (gy2 - gy1)
    ox = box.x1 + 0.5 * (box.width - bw)
    matrix = np.array([[sx, 0.0, ox - sx * gx1], [0.0, sy, box.y1 - sy * gy1]])
    layer = Layer(cols=(0, garment_mask.shape[1]), backward=None, matrix=matrix)
    return Warp(kind="box", layers=(layer,), dst_points=np.zeros((0, 2)))
