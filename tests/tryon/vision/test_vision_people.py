"""Finding every person (tryon.vision.people) with a stand-in detector: people are coloured
blocks, and the detector, like MediaPipe's, returns the largest one it can see, only if it is
at least a fraction of the image it is given (the letterboxed input hides small people)."""

from __future__ import annotations

import numpy as np
from vision_helpers import make_pose

from tryon.vision.people import find_people, people_that_matter

#: the hand-made pose's landmarks span about x 188-412, y 108-930 of a 600x1000 frame
_POSE_BOX = (188.0, 108.0, 412.0, 930.0)


class BlockDetector:
    """Sees a block of a colour listed in ``people`` (x1, y1, x2, y2, colour)."""

    def __init__(self, people, min_fraction=0.3):
        self.people = people
        self.min_fraction = min_fraction
        self.calls = 0

    def detect(self, image):
        self.calls += 1
        h, w = image.shape[:2]
        best = None
        for colour in {c for *_, c in self.people}:
            ys, xs = np.nonzero((image == colour).all(axis=2))
            if ys.size == 0 or (ys.max() - ys.min() + 1) < self.min_fraction * h:
                continue
            box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            if best is None or box[3] - box[1] > best[0][3] - best[0][1]:
                best = (box, (image == colour).all(axis=2))
        if best is None:
            return None
        (x1, y1, x2, y2), mask = best
        px1, py1, px2, py2 = _POSE_BOX
        sx, sy = (x2 - x1) / (px2 - px1), (y2 - y1) / (py2 - py1)
        pose = make_pose((600, 1000))
        lms = pose.landmarks.copy()
        lms[:, 0] = x1 + (lms[:, 0] - px1) * sx
        lms[:, 1] = y1 + (lms[:, 1] - py1) * sy
        from tryon.vision.pose import PoseResult

        return PoseResult(lms, pose.world, (w, h)), mask.astype(np.float32)


def _scene(w, h, people):
    img = np.full((h, w, 3), 90, np.uint8)
    for x1, y1, x2, y2, colour in people:
        img[y1:y2, x1:x2] = colour
    return img


def test_three_people_are_found_one_at_a_time():
    people = [(20, 100, 120, 500, (200, 0, 0)), (200, 80, 310, 520, (0, 200, 0)),
              (400, 120, 490, 480, (0, 0, 200))]  # fmt: skip
    det = BlockDetector(people)
    found = find_people(_scene(520, 600, people), det)
    assert len(found) == 3 and len(people_that_matter(found)) == 3
    assert found[0].box.x1 >= 195 and found[0].box.x2 <= 315  # the tallest first
    # one call per person and one finding nobody left; all are tall and clear: no second look
    assert det.calls == 4


def test_a_bystander_under_half_the_height_does_not_matter():
    people = [(100, 100, 300, 900, (200, 0, 0)), (400, 500, 460, 800, (0, 200, 0))]
    found = find_people(_scene(600, 1000, people), BlockDetector(people, min_fraction=0.2))
    assert len(found) == 2
    assert [p.box.x1 for p in people_that_matter(found)] == [found[0].box.x1]


def test_people_small_in_a_wide_photo_are_found_in_the_halves():
    # each person is 25 % of the height: too small for the whole-photo detector (30 %) but
    # found in a half, which the stand-in sees at the same pixels but a smaller frame
    people = [(100, 300, 160, 550, (200, 0, 0)), (1500, 300, 1560, 550, (0, 200, 0))]
    det = BlockDetector(people, min_fraction=0.3)
    img = _scene(1800, 1000, people)
    assert find_people(img, det) == []  # halves are as tall as the photo: still too small
    det.min_fraction = 0.2
    found = find_people(img, det)
    assert len(found) == 2 and {p.source for p in found} <= {"full", "tile"}


def test_a_small_person_in_a_square_photo_is_found_in_a_quadrant():
    people = [(650, 600, 750, 850, (200, 0, 0))]  # 25 % of the height, lower right
    det = BlockDetector(people, min_fraction=0.3)  # the whole photo misses them
    found = find_people(_scene(1000, 1000, people), det)
    assert len(found) == 1 and found[0].source == "tile"
    assert found[0].box.x1 >= 640 and found[0].box.y2 <= 860  # back in the photo's pixels


def test_specks_are_not_people():
    people = [(100, 100, 110, 200, (200, 0, 0))]  # 10 % of the height
    assert find_people(_scene(600, 1000, people), BlockDetector(people, min_fraction=0.0)) == []


def test_nobody():
    det = BlockDetector([])
    assert find_people(_scene(600, 1000, []), det) == [] and det.calls == 3  # photo + halves
