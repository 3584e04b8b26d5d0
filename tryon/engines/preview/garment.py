"""Keypoints of a flat garment, found from its mask alone.

A product shot of a garment lies flat and upright: collar or waistband at the top, hem or leg
openings at the bottom. From the mask's row spans this module finds what the preview engine pins
to the body: the neckline, the shoulder corners, the armpits and the cuffs of each sleeve, the
waist and the hem corners of a top or dress; the waistband corners, the crotch and the two leg
openings of trousers. All points are ``(x, y)`` float pixels of the garment image; "left" means
image left.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from tryon.errors import InvalidMaskError

Point = tuple[float, float]

#: the smallest garment (mask bounding box side, pixels) whose keypoints mean anything
MIN_SIDE = 8
#: a sleeve smaller than this share of the garment's area is ignored (a seam allowance, noise)
MIN_SLEEVE_AREA = 0.015
#: columns this share of the garment width beyond the torso edge start a sleeve
SLEEVE_MARGIN = 0.02


@dataclass(frozen=True)
class Sleeve:
    """``shoulder``: where the sleeve's top edge meets the torso; ``armpit``: where its under
    edge does; ``cuff``: centre of the opening; ``cuff_a``/``cuff_b``: the opening's two ends
    (``cuff_a`` on the shoulder's side of the sleeve axis)."""

    shoulder: Point
    armpit: Point
    cuff: Point
    cuff_a: Point
    cuff_b: Point

    @property
    def length(self) -> float:
        """From the sleeve's root (between shoulder and armpit) to the cuff's centre."""
        rx = 0.5 * (self.shoulder[0] + self.armpit[0])
        ry = 0.5 * (self.shoulder[1] + self.armpit[1])
        return float(np.hypot(self.cuff[0] - rx, self.cuff[1] - ry))

    @property
    def cuff_half_width(self) -> float:
        return 0.5 * float(np.hypot(self.cuff_a[0] - self.cuff_b[0], self.cuff_a[1] - self.cuff_b[1]))


@dataclass(frozen=True)
class TopKeypoints:
    """A top or a dress. ``torso``: (left, right) x of the body part below the sleeves;
    ``waist``: (left, right) points of the narrowest row of a dress, None for a top; ``hem``:
    (left, right) bottom corners; sleeves None when the garment has none on that side."""

    neck: Point
    neck_width: float
    shoulders: tuple[Point, Point]
    armpits: tuple[Point, Point]
    torso: tuple[float, float]
    waist: tuple[Point, Point] | None
    hem: tuple[Point, Point]
    sleeves: tuple[Sleeve | None, Sleeve | None]

    @property
    def shoulder_width(self) -> float:
        (ax, ay), (bx, by) = self.shoulders
        return float(np.hypot(bx - ax, by - ay))


@dataclass(frozen=True)
class BottomKeypoints:
    """Trousers (``legs`` set) or a skirt (``legs`` None: one tube from waist to hem).
    ``legs``: per leg (outer, inner) points of the opening, image-left leg first."""

    waist: tuple[Point, Point]
    #: the outer edges level with the crotch (the seat), or at 30% of the height for a skirt
    hips: tuple[Point, Point]
    crotch: Point | None
    legs: tuple[tuple[Point, Point], tuple[Point, Point]] | None
    hem: tuple[Point, Point]

    @property
    def waist_width(self) -> float:
        return float(self.waist[1][0] - self.waist[0][0])


def _spans(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Per row the first and last True column (-1 where the row is empty)."""
    any_row = mask.any(axis=1)
    first = np.where(any_row, mask.argmax(axis=1), -1)
    last = np.where(any_row, mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1), -1)
    return first.astype(np.int64), last.astype(np.int64)


def _bbox(mask: NDArray[np.bool_]) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise InvalidMaskError("garment_mask is empty")
    x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    if min(x2 - x1, y2 - y1) < MIN_SIDE:
        raise InvalidMaskError(
            f"garment_mask covers only {x2 - x1}x{y2 - y1} pixels: the garment must be at least "
            f"{MIN_SIDE} pixels wide and high"
        )
    return x1, y1, x2, y2


def _median_edges(first: NDArray[np.int64], last: NDArray[np.int64], y0: int,
                  y1: int) -> tuple[float, float]:
    rows = np.arange(y0, max(y1, y0 + 1))
    rows = rows[first[rows] >= 0]
    if rows.size == 0:
        raise InvalidMaskError("garment_mask has no pixels where the garment's body should be")
    return float(np.median(first[rows])), float(np.median(last[rows]) + 1)


def _central_edges(mask: NDArray[np.bool_], cx: float, y0: int, y1: int) -> tuple[float, float]:
    """(left, right) edges of the run of garment pixels holding column ``cx``, median over rows
    ``[y0, y1)``: the body of a top, without sleeves that hang beside it."""
    c = int(np.clip(round(cx), 0, mask.shape[1] - 1))
    lefts, rights = [], []
    for y in range(y0, max(y1, y0 + 1)):
        row = mask[y]
        if not row[c]:
            continue
        gaps_l = np.flatnonzero(~row[:c])
        gaps_r = np.flatnonzero(~row[c:])
        lefts.append(int(gaps_l.max()) + 1 if gaps_l.size else 0)
        rights.append(c + int(gaps_r.min()) if gaps_r.size else mask.shape[1])
    if not lefts:
        raise InvalidMaskError("garment_mask has no pixels where the garment's body should be")
    return float(np.median(lefts)), float(np.median(rights))


def _upper_pieces(part: NDArray[np.bool_], limit: int) -> NDArray[np.bool_]:
    """The connected pieces of ``part`` whose top lies above row ``limit``."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(part.astype(np.uint8), connectivity=8)
    keep = [i for i in range(1, n) if stats[i, cv2.CC_STAT_TOP] < limit]
    return np.isin(labels, keep) if keep else np.zeros_like(part)


def _top_y(mask: NDArray[np.bool_], x: float) -> float:
    col = mask[:, int(np.clip(round(x), 0, mask.shape[1] - 1))]
    return float(col.argmax()) if col.any() else 0.0


def _sleeve(mask: NDArray[np.bool_], part: NDArray[np.bool_], edge_x: float,
            armpit_y: float) -> Sleeve | None:
    """The sleeve in ``part`` (mask pixels beyond the torso edge ``edge_x``), joined to the body
    from the shoulder down to row ``armpit_y``."""
    if part.sum() < MIN_SLEEVE_AREA * mask.sum():
        return None
    ys, xs = np.nonzero(part)
    shoulder = (edge_x, _top_y(mask, edge_x))
    armpit = (edge_x, armpit_y)
    # the sleeve's axis: from its root (between shoulder and armpit) to the centroid of its
    # outer part (pixels beyond 60% of the largest distance from the root)
    root = np.array([edge_x, (shoulder[1] + armpit_y) / 2.0])
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    dist = np.hypot(*(pts - root).T)
    centre = pts[dist >= 0.6 * dist.max()].mean(axis=0)
    axis = (centre - root) / max(float(np.hypot(*(centre - root))), 1e-6)
    perp = np.array([-axis[1], axis[0]])
    # the cuff: the outermost tenth along the axis; its ends: the extremes across it
    along = (pts - root) @ axis
    band = along >= along.max() - max(3.0, 0.1 * along.max())
    cuff_pts = pts[band]
    across = (cuff_pts - centre) @ perp
    mid_across = 0.5 * (across.min() + across.max())
    cuff = root + axis * float(along[band].mean()) + perp * mid_across
    lo = cuff + (across.min() - mid_across) * perp
    hi = cuff + (across.max() - mid_across) * perp
    # cuff_a: the end on the same side of the axis as the shoulder (the sleeve's top edge),
    # whichever way the sleeve points in the flat lay
    shoulder_side = float((np.array(shoulder) - root) @ perp)
    a, b = (hi, lo) if shoulder_side > 0 else (lo, hi)
    return Sleeve(
        shoulder=shoulder, armpit=armpit, cuff=(float(cuff[0]), float(cuff[1])),
        cuff_a=(float(a[0]), float(a[1])), cuff_b=(float(b[0]), float(b[1])),
    )


def top_keypoints(mask: NDArray[np.bool_], *, dress: bool = False) -> TopKeypoints:
    """Keypoints of a top (``dress=False``) or a dress, from a bool ``(H, W)`` garment mask."""
    x1, y1, x2, y2 = _bbox(mask)
    h = y2 - y1
    first, last = _spans(mask)
    waist = None
    if dress:
        widths = np.where(first >= 0, last - first, 10**9)
        lo, hi = y1 + int(0.2 * h), max(y1 + int(0.55 * h), y1 + int(0.2 * h) + 1)
        wy = lo + int(np.argmin(widths[lo:hi]))
        waist = ((float(first[wy]), float(wy)), (float(last[wy] + 1), float(wy)))
        left, right = _median_edges(first, last, max(y1, wy - int(0.12 * h)), wy)
    else:
        left, right = _central_edges(mask, (x1 + x2) / 2.0, y1 + int(0.55 * h), y1 + int(0.85 * h))
    cx = (left + right) / 2.0
    margin = SLEEVE_MARGIN * (x2 - x1)
    cols = np.arange(mask.shape[1])
    # sleeves: pieces beyond the body's edges that start in the upper half (a long sleeve may
    # hang down to the hem; a flared hem starts low and is not a sleeve)
    limit = y1 + h // 2
    left_part = _upper_pieces(mask & (cols < left - margin)[None, :], limit)
    right_part = _upper_pieces(mask & (cols >= right + margin)[None, :], limit)
    if waist is not None:
        # below the waist a dress's skirt is wider than its bodice: never a sleeve
        left_part[int(waist[0][1]) :] = False
        right_part[int(waist[0][1]) :] = False
    # the armpits: the lowest row (of the top run) where the sleeve still joins the body
    c = int(np.clip(round(cx), 0, mask.shape[1] - 1))
    joined_l, joined_r = [], []
    for y in range(y1, y1 + int(0.7 * h)):
        row = mask[y]
        if not row[c]:
            continue
        gl, gr = np.flatnonzero(~row[:c]), np.flatnonzero(~row[c:])
        run_l = int(gl.max()) + 1 if gl.size else 0
        run_r = c + int(gr.min()) if gr.size else mask.shape[1]
        if run_l < left - margin:
            joined_l.append(y)
        if run_r > right + margin:
            joined_r.append(y)
    pit_l = float(max(joined_l)) if joined_l else y1 + 0.3 * h
    pit_r = float(max(joined_r)) if joined_r else y1 + 0.3 * h
    sleeves = (_sleeve(mask, left_part, left, pit_l), _sleeve(mask, right_part, right, pit_r))
    shoulders = (
        sleeves[0].shoulder if sleeves[0] else (left, _top_y(mask, left)),
        sleeves[1].shoulder if sleeves[1] else (right, _top_y(mask, right)),
    )
    # the armpit of a sleeveless side: where the row reaches the torso width
    def armpit(side: int) -> tuple[float, float]:
        sleeve = sleeves[side]
        if sleeve is not None:
            return sleeve.armpit
        edge = left if side == 0 else right
        rows = np.arange(y1, y1 + int(0.5 * h))
        reach = (first[rows] <= edge + 2) if side == 0 else (last[rows] + 1 >= edge - 2)
        y = float(rows[reach.argmax()]) if reach.any() else y1 + 0.3 * h
        return (edge, max(y, shoulders[side][1] + 0.15 * h))
    neck_y = _top_y(mask, cx)
    # the neck opening: between the highest points of the top edge on each side of the centre
    tops = np.array([_top_y(mask, x) for x in range(int(left), int(right))])
    xs_top = np.arange(int(left), int(right))
    lo_side, hi_side = xs_top < cx, xs_top >= cx
    if lo_side.any() and hi_side.any():
        a = xs_top[lo_side][tops[lo_side] == tops[lo_side].min()].max()
        b = xs_top[hi_side][tops[hi_side] == tops[hi_side].min()].min()
        neck_width = float(b - a)
    else:
        neck_width = 0.3 * (right - left)
    hem_row = y2 - 1 - max(1, int(0.01 * h))
    hem = ((float(first[hem_row]), float(y2)), (float(last[hem_row] + 1), float(y2)))
    return TopKeypoints(
        neck=(cx, neck_y), neck_width=neck_width, shoulders=shoulders,
        armpits=(armpit(0), armpit(1)), torso=(left, right), waist=waist, hem=hem,
        sleeves=sleeves,
    )


def bottom_keypoints(mask: NDArray[np.bool_]) -> BottomKeypoints:
    """Keypoints of trousers or a skirt, from a bool ``(H, W)`` garment mask."""
    x1, y1, x2, y2 = _bbox(mask)
    h = y2 - y1
    first, last = _spans(mask)
    wl, wr = _median_edges(first, last, y1, y1 + max(1, int(0.05 * h)))
    waist = ((wl, float(y1)), (wr, float(y1)))
    hem_row = y2 - 1 - max(1, int(0.01 * h))
    hem = ((float(first[hem_row]), float(y2)), (float(last[hem_row] + 1), float(y2)))
    # the crotch: the first row, from the top, with a gap between two legs
    crotch = None
    legs = None
    mid = (wl + wr) / 2.0
    for y in range(y1 + int(0.15 * h), y2):
        row = mask[y, int(first[y]) : int(last[y]) + 1]
        if row.size and not row.all():
            holes = np.flatnonzero(~row) + int(first[y])
            centre = holes[np.argmin(np.abs(holes - mid))]
            if abs(centre - mid) < 0.25 * (wr - wl):
                crotch = (float(centre), float(y))
                break
    if crotch is not None:
        row = mask[hem_row].astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(row[None, :], connectivity=4)
        runs = sorted((int(stats[i, cv2.CC_STAT_LEFT]), int(stats[i, cv2.CC_STAT_LEFT]
                       + stats[i, cv2.CC_STAT_WIDTH])) for i in range(1, n))
        if len(runs) >= 2:
            (a0, a1), (b0, b1) = runs[0], runs[-1]
            legs = (((float(a0), float(y2)), (float(a1), float(y2))),
                    ((float(b1), float(y2)), (float(b0), float(y2))))
        else:
            crotch = None
    hy = int(crotch[1]) if crotch is not None else y1 + int(0.3 * h)
    hips = ((float(first[hy]), float(hy)), (float(last[hy] + 1), float(hy)))
    return BottomKeypoints(waist=waist, hips=hips, crotch=crotch, legs=legs, hem=hem)
