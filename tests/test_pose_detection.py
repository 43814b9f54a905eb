"""Known detections through the real conversion: random weights find nobody, so here the
body stage returns crafted candidates (as OpenPose's PAF grouping would) and the hand and
face networks return crafted heatmaps that go through controlnet-aux's own estimators; the
rest — hand/face boxes, peak extraction, normalization, POSE_KEYPOINT, the map and
openpose_json — is the code a user runs."""
import json

import numpy as np
import pytest
import torch

from conftest import PACK, pf

openpose = pf("local.openpose")
render = pf("local.pose_render")
Extract = PACK.NODE_CLASS_MAPPINGS["PF_OpenPoseExtract"]
Render = PACK.NODE_CLASS_MAPPINGS["PF_PoseRender"]

ONE = {0: (0.5, 0.2), 1: (0.5, 0.3), 2: (0.4, 0.3), 3: (0.35, 0.45), 4: (0.3, 0.58), 5: (0.6, 0.3),
       6: (0.65, 0.45), 7: (0.7, 0.58), 8: (0.45, 0.6), 9: (0.45, 0.75), 10: (0.45, 0.9), 11: (0.55, 0.6),
       12: (0.55, 0.75), 13: (0.55, 0.9), 14: (0.48, 0.18), 15: (0.52, 0.18), 16: (0.46, 0.19), 17: (0.54, 0.19)}
TWO = {i: (0.85 + (x - 0.5) * 0.3, 0.3 + (y - 0.2) * 0.5) for i, (x, y) in ONE.items() if i not in (16, 17)}
HAND = [(0.2 + 0.03 * i, 0.3 + 0.02 * i) for i in range(21)]  # relative to the hand box
FACE = [None if i == 5 else (0.25 + 0.007 * i, 0.3 + 0.005 * i) for i in range(70)]  # point 5: empty heatmap


class CraftedBody:
    """Stands in for the body network + PAF grouping: the people above, in detect pixels."""
    format_body_result = None  # set below: controlnet-aux's own

    def __init__(self, people):
        from controlnet_aux.open_pose import Body

        self.people, self.seen = people, []
        self.format_body_result = Body.format_body_result

    def __call__(self, bgr):
        self.seen.append(bgr.copy())
        H, W = bgr.shape[:2]
        candidate, subset = [], []
        for person in self.people:
            row = [-1.0] * 18 + [0.9 * len(person), float(len(person))]
            for index, (x, y) in person.items():
                row[index] = len(candidate)
                candidate.append([x * W, y * H, 0.9, len(candidate)])
            subset.append(row)
        return np.array(candidate), np.array(subset)


class BlobNet(torch.nn.Module):
    """A network whose heatmaps hold one Gaussian blob per channel at a fixed position
    relative to its input (None: an empty channel); `stages` outputs like FaceNet."""

    def __init__(self, points, channels, stages=None):
        super().__init__()
        self.points, self.channels, self.stages = points, channels, stages
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        h, w = x.shape[2] // 8, x.shape[3] // 8
        yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        maps = torch.zeros(1, self.channels, h, w)
        for c, p in enumerate(self.points):
            if p is not None:
                maps[0, c] = torch.exp(-((xx - p[0] * (w - 1)) ** 2 + (yy - p[1] * (h - 1)) ** 2) / (2 * 1.5 ** 2))
        return maps if self.stages is None else [maps] * self.stages


@pytest.fixture
def crafted(monkeypatch):
    from controlnet_aux.open_pose import OpenposeDetector

    body = CraftedBody([ONE, TWO])
    det = OpenposeDetector(body, openpose._estimator("hand", BlobNet(HAND, 22)),
                           openpose._estimator("face", BlobNet(FACE + [None], 71, stages=6)))
    monkeypatch.setattr(openpose, "detector", lambda hands=False, face=False: det)
    return body


def triplets(flat):
    return [flat[i:i + 3] for i in range(0, len(flat), 3)]


def test_known_people_become_pose_keypoints_map_and_json(crafted):
    from controlnet_aux.open_pose import util

    photo = torch.zeros(2, 512, 512, 3)
    photo[:, :, :, 0] = 1.0  # red, so the channel order the body stage sees can be checked
    out = Extract().extract(photo, detect_hands=True, detect_face=True, resolution=512)
    pose_map, frames, bundle = out["result"]
    assert len(frames) == 2 and all(len(f["people"]) == 2 for f in frames), "nobody was found"
    assert crafted.seen[0][0, 0].tolist() == [0, 0, 255]  # OpenPose gets BGR
    people = frames[0]["people"]
    for person, truth in zip(people, (ONE, TWO)):
        for index, (x, y, c) in enumerate(triplets(person["pose_keypoints_2d"])):
            if index in truth:
                assert (x, y, c) == pytest.approx((*truth[index], 1.0), abs=1e-6)
            else:
                assert (x, y, c) == (0.0, 0.0, 0.0)
    # hands: the crafted heatmap peaks, placed in the hand boxes controlnet-aux computes
    bgr = crafted.seen[0]
    body = crafted.format_body_result(*crafted(bgr))[0]
    boxes = {is_left: (bx, by, bw) for bx, by, bw, is_left in util.handDetect(body, bgr)}
    for side, is_left in (("hand_left_keypoints_2d", True), ("hand_right_keypoints_2d", False)):
        bx, by, bw = boxes[is_left]
        points = triplets(people[0][side])
        assert len(points) == 21
        for (x, y, c), (rx, ry) in zip(points, HAND):
            assert c == 1.0 and abs(x * 512 - (bx + rx * bw)) < 6 and abs(y * 512 - (by + ry * bw)) < 6
    # face: 70 points, each at its own index; the empty channel 5 is missing and 6 stays 6
    fx, fy, fw = util.faceDetect(body, bgr)
    face = triplets(people[0]["face_keypoints_2d"])
    assert len(face) == 70 and face[5] == [0.0, 0.0, 0.0]
    for index in (0, 4, 6, 69):
        x, y, c = face[index]
        assert c == 1.0 and abs(x * 512 - (fx + FACE[index][0] * fw)) < 3 and abs(y * 512 - (fy + FACE[index][1] * fw)) < 3
    # the map is these keypoints drawn, and the same list reaches API users
    assert json.loads(out["ui"]["openpose_json"][0]) == frames and out["ui"]["people"] == [2, 2]
    again, _ = Render().render(frames, resolution=512)["result"]
    assert torch.equal(again, pose_map) and pose_map[0].max() > 0.5
    assert bundle["keypoints"] is frames


def test_people_are_found_at_any_photo_size(crafted):
    photo = torch.rand(1, 300, 700, 3)
    out = Extract().extract(photo, detect_hands=False, detect_face=False, resolution=256)
    pose_map, frames, _ = out["result"]
    assert pose_map.shape == (1, 300, 700, 3) and len(frames[0]["people"]) == 2
    x, y, _ = triplets(frames[0]["people"][0]["pose_keypoints_2d"])[1]
    assert (x, y) == pytest.approx(ONE[1], abs=1e-6)  # normalized: independent of the detect size
