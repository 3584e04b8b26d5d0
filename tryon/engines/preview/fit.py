"""Where each garment keypoint goes on the body: pairs of (garment point, photo point).

The photo points come from the pose landmarks (MediaPipe's 33, pixels) and the placement box:
the neckline to the base of the neck, the shoulder corners just outside the shoulder joints,
the armpits to the chest's sides, each sleeve along its arm (shoulder, elbow, wrist), the hem to
the box's bottom edge; trousers' waistband to the box's top edge over the hips, each leg down its
hip, knee and ankle. Widths are the body's (shoulder and hip distances, bounded below by the
torso's and thigh's lengths for a person turned away from the camera) times the ease; the
garment's own shape enters through its ratios (a flared hem, a dress's waist, a sleeve's length
and opening, a leg's opening). A :class:`FitVariation` (drawn from a sample's seed) loosens or
tightens the fit and moves the hem and cuffs a little: samples differ the way two sizes do.

Each function returns :class:`~tryon.engines.preview.warp.Part` s, back to front.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tryon.engines.preview.garment import BottomKeypoints, Sleeve, TopKeypoints
from tryon.engines.preview.warp import Part
from tryon.errors import PoseNotUsableError
from tryon.types import Box
from tryon.vision.pose import LANDMARK_NAMES

L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 23, 24, 25, 26, 27, 28
MIN_VISIBILITY = 0.5

#: the garment's shoulder corner sits this many shoulder widths outside the joint, this many above
SHOULDER_REACH, SHOULDER_LIFT = 0.16, 0.10
#: the neckline's centre sits this many shoulder widths above the shoulder line
NECK_LIFT = 0.10
#: armpits: this far down the torso (shoulder line to hip line)
ARMPIT_DOWN = 0.28
#: the smallest shoulder width (joint to joint) per torso length (shoulder mid to hip mid)
SHOULDERS_PER_TORSO = 0.62
#: half the chest's width below the armpits, in shoulder-joint distances (the arms hang outside)
CHEST_HALF = 0.47
#: the body is this many hip-joint distances wide at the hips (pelvis and seat)
HIP_BODY_WIDTH = 1.9
#: an arm with a hidden elbow hangs this far (radians) outwards from straight down
DEFAULT_ARM_ANGLE = 0.2
#: a sleeve reaches at most this share of the arm's length (shoulder-elbow-wrist)
SLEEVE_PAST_WRIST = 1.0
#: a sleeve's or a leg opening's half width is at least this share of the shoulder / hip width
MIN_SLEEVE_HALF, MIN_LEG_HALF = 0.11, 0.22
#: a leg is at least this share of the thigh's length wide (half width)
MIN_LEG_HALF_PER_THIGH = 0.15
#: the body at the hips is at least this share of the thigh's length wide (half width)
HIP_HALF_PER_THIGH = 0.36


class _Pairs:
    """Accumulates (garment point, photo point) pairs of one part."""

    def __init__(self, cols: tuple[int, int]) -> None:
        self.cols = cols
        self.src: list[tuple[float, float]] = []
        self.dst: list[NDArray[np.float64]] = []

    def __call__(self, g: tuple[float, float], p: NDArray[np.float64]) -> None:
        self.src.append((float(g[0]), float(g[1])))
        self.dst.append(np.asarray(p, dtype=np.float64))

    def part(self) -> Part:
        return Part(cols=self.cols, src=np.array(self.src, dtype=np.float64),
                    dst=np.array(self.dst, dtype=np.float64))


@dataclass(frozen=True)
class FitVariation:
    """``ease``: width factor (1.0 = true to size); ``length``: hem shift as a share of the
    garment's length on the body; ``sleeve``: sleeve length factor."""

    ease: float = 1.0
    length: float = 0.0
    sleeve: float = 1.0

    @classmethod
    def from_seed(cls, seed: int) -> FitVariation:
        rng = np.random.default_rng(seed)
        return cls(ease=float(rng.uniform(0.96, 1.08)), length=float(rng.uniform(-0.04, 0.04)),
                   sleeve=float(rng.uniform(0.92, 1.08)))


class Body:
    """Landmarks of one photo, with sides ordered by image x (``a`` = image left)."""

    def __init__(self, landmarks: NDArray[np.float32], size: tuple[int, int]) -> None:
        self.lm = np.asarray(landmarks, dtype=np.float64)
        self.size = size

    def visible(self, idx: int) -> bool:
        x, y, _, vis = self.lm[idx]
        w, h = self.size
        return vis >= MIN_VISIBILITY and 0.0 <= x < w and 0.0 <= y < h

    def pt(self, idx: int) -> NDArray[np.float64]:
        return self.lm[idx, :2].copy()

    def require(self, indices: tuple[int, ...], what: str) -> None:
        missing = [i for i in indices if not self.visible(i)]
        if missing:
            raise PoseNotUsableError(
                f"The {what} are not clearly visible in the photo: stand facing the camera with "
                f"your {what} in view, or give an explicit box.",
                missing=[LANDMARK_NAMES[i] for i in missing],
            )

    def sides(self, left: int, right: int) -> tuple[int, int]:
        """(image-left index, image-right index) of a pair, e.g. the shoulders; a photo from
        behind must not mirror the garment."""
        return (left, right) if self.lm[left, 0] <= self.lm[right, 0] else (right, left)

    def pair_frame(self, left: int, right: int, what: str, min_length: float) -> tuple[
            int, int, NDArray[np.float64], NDArray[np.float64], float, NDArray[np.float64],
            NDArray[np.float64]]:
        """The frame a pair of joints (shoulders, hips) sets: ``(a, b, pa, pb, length, u, n)``
        with ``a``/``b`` the image-left/right indices and their points, the distance between
        them, ``u`` the unit vector from a to b and ``n`` its normal pointing down the body.
        PoseNotUsableError when a joint is not visible or they are under ``min_length`` apart."""
        self.require((left, right), what)
        a, b = self.sides(left, right)
        pa, pb = self.pt(a), self.pt(b)
        length = float(np.hypot(*(pb - pa)))
        if length < min_length:
            raise PoseNotUsableError("The body is too small or seen side-on in the photo.")
        u = (pb - pa) / length
        n = np.array([-u[1], u[0]])
        if n[1] < 0:
            n = -n
        return a, b, pa, pb, length, u, n


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    return v / max(float(np.hypot(*v)), 1e-6)


def along_polyline(points: list[NDArray[np.float64]], length: float) -> tuple[
        NDArray[np.float64], NDArray[np.float64]]:
    """The point ``length`` pixels along ``points`` (extrapolating the last segment) and the
    direction there."""
    for p, q in zip(points, points[1:], strict=False):
        seg = float(np.hypot(*(q - p)))
        if length <= seg or q is points[-1]:
            d = _unit(q - p)
            return p + d * length, d
        length -= seg
    raise AssertionError("polyline needs two points")


def _rot90(v: NDArray[np.float64]) -> NDArray[np.float64]:
    return np.array([-v[1], v[0]])


def _sleeve_pairs(sleeve: Sleeve, body: Body, shoulder_idx: int, elbow_idx: int, wrist_idx: int,
                  anchor: NDArray[np.float64], outward: float, scale: float, sw: float,
                  var: FitVariation) -> list[tuple[tuple[float, float], NDArray[np.float64]]]:
    """Sleeve points carried along the arm.

    Each garment point is written in the frame of the sleeve's top edge (distance ``t`` from
    the shoulder corner towards the cuff's top end, offset ``d`` across) and placed at the same
    ``t`` along the arm (shoulder, elbow, wrist, translated so that the corner lands on
    ``anchor``, just outside the shoulder) and the same ``d`` across it: the top edge runs down
    the outside of the arm, the sleeve turns with the upper arm and bends at the elbow, keeping
    its orientation. The sleeve's root then lies over the chest: the body layer, drawn after
    the sleeves, covers it, as a sewn-in sleeve disappears into the armhole."""
    root = np.array(sleeve.shoulder, dtype=np.float64)
    axis = _unit(np.array(sleeve.cuff_a) - root)
    across = _rot90(axis)
    joint = body.pt(shoulder_idx)
    arm = [joint]
    if body.visible(elbow_idx):
        arm.append(body.pt(elbow_idx))
        if body.visible(wrist_idx):
            arm.append(body.pt(wrist_idx))
    else:
        a = DEFAULT_ARM_ANGLE * outward
        arm.append(joint + np.array([np.sin(a), np.cos(a)]) * sw)
    d0 = _unit(arm[1] - arm[0])
    half = sleeve.cuff_half_width * scale * var.ease
    widen = max(1.0, MIN_SLEEVE_HALF * sw / max(half, 1e-6))
    stretch = scale * var.sleeve

    def frame(g: NDArray[np.float64]) -> tuple[float, float]:
        return float((g - root) @ axis), float((g - root) @ across)

    if len(arm) == 3:
        # a long sleeve ends at the wrist, not past the hand
        arm_len = sum(float(np.hypot(*(q - p))) for p, q in zip(arm, arm[1:], strict=False))
        stretch = min(stretch, SLEEVE_PAST_WRIST * arm_len / max(frame(np.array(sleeve.cuff_a))[0],
                                                                1.0))

    # the arm's polyline, moved so the sleeve's top corner lands on the anchor
    t_s, d_s = frame(np.array(sleeve.shoulder))
    start = anchor - d0 * t_s * stretch - _rot90(d0) * d_s * scale * widen
    chain = [start + (p - joint) for p in arm]

    def place(g: NDArray[np.float64]) -> NDArray[np.float64]:
        t, d = frame(g)
        p, direction = along_polyline(chain, max(t * stretch, 0.0))
        if t < 0:
            p = p + direction * t * stretch
        return p + _rot90(direction) * d * scale * widen

    out: list[tuple[tuple[float, float], NDArray[np.float64]]] = []
    named = [sleeve.shoulder, sleeve.armpit, sleeve.cuff, sleeve.cuff_a, sleeve.cuff_b]
    root_half = 0.5 * float(np.hypot(*(np.array(sleeve.shoulder) - np.array(sleeve.armpit))))
    centre = 0.5 * (np.array(sleeve.shoulder) + np.array(sleeve.armpit))
    extra = []
    for f in (0.35, 0.7):
        w_f = (1 - f) * root_half + f * sleeve.cuff_half_width
        c = centre + (np.array(sleeve.cuff) - centre) * f
        side = _rot90(_unit(np.array(sleeve.cuff) - centre))
        extra += [tuple(c), tuple(c + side * w_f), tuple(c - side * w_f)]
    for g in named + extra:
        ga = np.array(g, dtype=np.float64)
        out.append(((float(ga[0]), float(ga[1])), place(ga)))
    return out


def top_parts(kp: TopKeypoints, landmarks: NDArray[np.float32], box: Box,
              size: tuple[int, int], var: FitVariation, width: int) -> list[Part]:
    """Parts of a top or a dress, back to front: the body, then each sleeve along its arm.
    ``width``: the garment image's width."""
    body = Body(landmarks, size)
    sa, sb, pa, pb, sw, u, n = body.pair_frame(L_SHOULDER, R_SHOULDER, "shoulders", 4.0)
    mid_s = (pa + pb) / 2.0
    hips_seen = body.visible(L_HIP) and body.visible(R_HIP)
    if hips_seen:
        ha, hb = body.sides(L_HIP, R_HIP)
        mid_h = (body.pt(ha) + body.pt(hb)) / 2.0
        hip_w = float(np.hypot(*(body.pt(hb) - body.pt(ha))))
    else:
        mid_h = mid_s + n * 1.4 * sw
        hip_w = 0.75 * sw
    axis = _unit(mid_h - mid_s)
    torso = float(np.hypot(*(mid_h - mid_s)))
    if hips_seen:
        # turned away from the camera the shoulder joints close up; the torso's length bounds
        # the body's width from below (frontal, the two agree)
        sw = max(sw, SHOULDERS_PER_TORSO * torso)
        pa, pb = mid_s - u * 0.5 * sw, mid_s + u * 0.5 * sw
    # garment scale: its shoulder corners onto points just outside the joints
    top_a = pa - u * SHOULDER_REACH * sw * var.ease - n * SHOULDER_LIFT * sw
    top_b = pb + u * SHOULDER_REACH * sw * var.ease - n * SHOULDER_LIFT * sw
    scale = float(np.hypot(*(top_b - top_a))) / max(kp.shoulder_width, 1.0)

    # widths: the body's (chest at the armpits, then the larger of chest and hips) times the
    # ease; the garment's own shape changes them only by its ratios (a flared hem, a dress waist)
    chest_half = CHEST_HALF * sw * var.ease
    hip_half = max(chest_half, 0.5 * HIP_BODY_WIDTH * hip_w * var.ease * 1.04)
    torso_w = max(kp.torso[1] - kp.torso[0], 1.0)
    has = [sl is not None for sl in kp.sleeves]
    c0 = int(kp.torso[0]) if has[0] else 0
    c1 = int(np.ceil(kp.torso[1])) if has[1] else width
    pair = _Pairs((c0, c1))
    pair(kp.neck, mid_s - n * NECK_LIFT * sw)
    pair(kp.shoulders[0], top_a)
    pair(kp.shoulders[1], top_b)
    arm_at = mid_s + axis * ARMPIT_DOWN * torso
    pair(kp.armpits[0], arm_at - u * chest_half)
    pair(kp.armpits[1], arm_at + u * chest_half)
    # the hem: on the box's bottom edge, below the torso axis
    reach = (float(box.y2) - mid_s[1]) / max(axis[1], 0.2) * (1.0 + var.length)
    hem_c = mid_s + axis * reach
    g_len = max(kp.hem[0][1] - kp.neck[1], 1.0)
    if kp.waist is not None:
        waist_w = max(kp.waist[1][0] - kp.waist[0][0], 1.0)
        waist_half = 0.95 * hip_half
        waist_at = mid_s + axis * 0.78 * torso
        pair(kp.waist[0], waist_at - u * waist_half)
        pair(kp.waist[1], waist_at + u * waist_half)
        hem_half = max(waist_half * (kp.hem[1][0] - kp.hem[0][0]) / waist_w, hip_half)
    else:
        gy = kp.neck[1] + 0.55 * g_len
        at = mid_s + axis * 0.55 * reach
        pair((kp.torso[0], gy), at - u * hip_half)
        pair((kp.torso[1], gy), at + u * hip_half)
        hem_half = hip_half * max((kp.hem[1][0] - kp.hem[0][0]) / torso_w, 0.9)
    pair(kp.hem[0], hem_c - u * hem_half)
    pair(kp.hem[1], hem_c + u * hem_half)
    pair(((kp.hem[0][0] + kp.hem[1][0]) / 2.0, kp.hem[0][1]), hem_c)
    # sleeves along the arms (image-left sleeve on the image-left arm)
    parts: list[Part] = []
    arms = {sa: (L_ELBOW, L_WRIST) if sa == L_SHOULDER else (R_ELBOW, R_WRIST),
            sb: (L_ELBOW, L_WRIST) if sb == L_SHOULDER else (R_ELBOW, R_WRIST)}
    for sleeve, s_idx, anchor, outward, cols in (
            (kp.sleeves[0], sa, top_a, -1.0, (0, c0)),
            (kp.sleeves[1], sb, top_b, 1.0, (c1, width))):
        if sleeve is None:
            continue
        elbow, wrist = arms[s_idx]
        sp = _Pairs(cols)
        for g, p in _sleeve_pairs(sleeve, body, s_idx, elbow, wrist, anchor, outward,
                                  scale, sw, var):
            sp(g, p)
        parts.append(sp.part())
    # the body in front of the sleeves' roots
    parts.append(pair.part())
    return parts


def bottom_parts(kp: BottomKeypoints, landmarks: NDArray[np.float32], box: Box,
                 size: tuple[int, int], var: FitVariation, width: int) -> list[Part]:
    """Parts of trousers (one per leg, the farther leg first) or a skirt (one part)."""
    body = Body(landmarks, size)
    ha, hb, pa, pb, hw, u, n = body.pair_frame(L_HIP, R_HIP, "hips", 3.0)
    knees = {L_HIP: (L_KNEE, L_ANKLE), R_HIP: (R_KNEE, R_ANKLE)}
    mid_h = (pa + pb) / 2.0
    # seen side-on the hip joints overlap: the thigh's length bounds the body's width from below
    ka, kb = knees[ha][0], knees[hb][0]
    thigh = (float(np.hypot(*(body.pt(ka) - pa))) + float(np.hypot(*(body.pt(kb) - pb)))) / 2.0 \
        if body.visible(ka) and body.visible(kb) else 2.0 * hw
    body_half = max(0.5 * HIP_BODY_WIDTH * hw, HIP_HALF_PER_THIGH * thigh) * var.ease
    waist_c = mid_h - n * max(mid_h[1] - float(box.y1), 0.0) / max(n[1], 0.2)
    scale = 2.0 * body_half / max(kp.waist_width, 1.0)
    bottom = float(box.y2) + var.length * 0.5 * float(box.height)
    gcx = (kp.waist[0][0] + kp.waist[1][0]) / 2.0
    if kp.legs is None or kp.crotch is None:
        # a skirt: a tube from the waist to the hem, widths in the garment's proportions
        pair = _Pairs((0, width))
        pair(kp.waist[0], waist_c - u * body_half)
        pair(kp.waist[1], waist_c + u * body_half)
        hem_c = waist_c + n * (bottom - waist_c[1]) / max(n[1], 0.2)
        for g in kp.hem:
            pair(g, hem_c + u * (g[0] - gcx) * scale)
        return [pair.part()]
    cx = int(round(kp.crotch[0]))
    halves = (_Pairs((0, cx)), _Pairs((cx, width)))
    depth: list[float] = []
    g_waist_y = kp.waist[0][1]
    crotch_frac = (kp.crotch[1] - g_waist_y) / max(kp.legs[0][0][1] - g_waist_y, 1.0)
    for k, (leg, hip_idx, side) in enumerate(((kp.legs[0], ha, -1.0), (kp.legs[1], hb, 1.0))):
        pair = halves[k]
        pair(kp.waist[k], waist_c + u * side * body_half)
        pair((kp.crotch[0], kp.waist[0][1]), waist_c)
        pair(kp.crotch, mid_h + n * 0.25 * hw)
        knee_idx, ankle_idx = knees[hip_idx]
        depth.append(float(body.lm[knee_idx, 2]) if body.visible(knee_idx) else 0.0)
        hip = body.pt(hip_idx)
        chain = [hip]
        if body.visible(knee_idx):
            chain.append(body.pt(knee_idx))
            if body.visible(ankle_idx):
                chain.append(body.pt(ankle_idx))
        else:
            chain.append(hip + n * 2.0 * hw)
        # walk down the leg until the box's bottom edge
        total = 0.0
        for p, q in zip(chain, chain[1:], strict=False):
            total += float(np.hypot(*(q - p)))
        drop = bottom - hip[1]
        last_dir = _unit(chain[-1] - chain[-2])
        length = total + (drop - (chain[-1][1] - hip[1])) / max(last_dir[1], 0.2)
        if chain[-1][1] > bottom:  # the box ends above the last joint
            length = total * drop / max(chain[-1][1] - hip[1], 1.0)
        end, d = along_polyline(chain, max(length, 1.0))
        perp = np.array([-d[1], d[0]])
        out_dir = perp if np.dot(perp, u * side) > 0 else -perp
        outer, inner = leg
        half = max(0.5 * abs(outer[0] - inner[0]) * scale, MIN_LEG_HALF * hw,
                   MIN_LEG_HALF_PER_THIGH * thigh)
        pair(outer, end + out_dir * half)
        pair(inner, end - out_dir * half)
        # halfway between crotch and opening, the leg's centre line stays on the leg's axis
        top_centre = 0.5 * (kp.hips[k][0] + kp.crotch[0])
        g_mid = (0.5 * (0.5 * (outer[0] + inner[0]) + top_centre), 0.5 * (outer[1] + kp.crotch[1]))
        mid_p, _ = along_polyline(chain, (0.5 + 0.5 * crotch_frac) * length)
        pair(g_mid, mid_p)
        # the seat: level with the crotch, the body's outline
        pair(kp.hips[k], mid_h + u * side * body_half)
    # the leg nearer the camera (smaller MediaPipe z) is drawn last, in front
    order = sorted(range(2), key=lambda i: -depth[i])
    return [halves[i].part() for i in order]
