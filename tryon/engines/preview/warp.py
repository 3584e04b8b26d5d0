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

from tryon.engines.preview.fit import FitVariation
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
class Warp:
    """Photo-to-garment map. ``kind``: ``"tps"`` or ``"box"``; ``dst_points``: where the fit
    put the garment's keypoints in the photo (empty for ``"box"``)."""

    kind: str
    backward: ThinPlateSpline | None
    affine: NDArray[np.float64] | None  # (2, 3) garment -> photo, for "box"
    dst_points: NDArray[np.float64]

    def maps(self, rect: tuple[int, int, int, int]) -> tuple[NDArray[np.float32],
                                                             NDArray[np.float32]]:
        """Garment coordinates (map_x, map_y), float32 ``(h, w)``, for each photo pixel of
        ``rect`` = (x1, y1, x2, y2)."""
        x1, y1, x2, y2 = rect
        w, h = x2 - x1, y2 - y1
        if self.backward is None:
            assert self.affine is not None
            inv = cv2.invertAffineTransform(self.affine)
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

    def apply(self, rgba: NDArray[np.float32], rect: tuple[int, int, int, int]
              ) -> NDArray[np.float32]:
        """The premultiplied garment ``rgba`` (float32 ``(H, W, 4)``) resampled into ``rect``."""
        mx, my = self.maps(rect)
        out = cv2.remap(rgba, mx, my, interpolation=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=(0.0, 0.0, 0.0, 0.0))
        return np.asarray(out, dtype=np.float32)

    def to_photo(self, garment_pts: NDArray[np.float64]) -> NDArray[np.float64]:
        """Approximate forward map of garment points (exact for ``"box"``)."""
        if self.affine is not None:
            return garment_pts @ self.affine[:, :2].T + self.affine[:, 2]
        return garment_pts  # pragma: no cover - only box warps are mapped forward


def tps_warp(src: NDArray[np.float64], dst: NDArray[np.float64],
             garment_mask: NDArray[np.bool_]) -> Warp:
    """Thin-plate-spline warp taking garment points ``src`` to photo points ``dst`` (N, 2)."""
    del garment_mask
    return Warp(kind="tps", backward=ThinPlateSpline.fit(dst, src), affine=None, dst_points=dst)


def affine_box_warp(box: Box, garment_mask: NDArray[np.bool_], variation: FitVariation) -> Warp:
    """Stretch the garment's mask bounding box onto ``box`` (its width times the variation's
    ease, centred; its bottom moved by the variation's length)."""
    ys, xs = np.nonzero(garment_mask)
    gx1, gy1, gx2, gy2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    bw = box.width * variation.ease
    bh = box.height * (1.0 + variation.length)
    sx, sy = bw / (gx2 - gx1), bh / (gy2 - gy1)
    ox = box.x1 + 0.5 * (box.width - bw)
    matrix = np.array([[sx, 0.0, ox - sx * gx1], [0.0, sy, box.y1 - sy * gy1]])
    return Warp(kind="box", backward=None, affine=matrix, dst_points=np.zeros((0, 2)))
