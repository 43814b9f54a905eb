"""Odd images and hostile keypoints: every resize is bounded by pixels (a thin strip does not
become a giant canvas), normal photos give exactly what they gave before, and keypoints that
are no pose give the pose nodes' own error."""
import math

import cv2
import numpy as np
import pytest
import torch

from conftest import PACK, pf
from test_codeformer import IdentityRestorer

images = pf("host.images")
openpose = pf("local.openpose")
render = pf("local.pose_render")
codeformer = pf("local.codeformer")
ipadapter = pf("local.ipadapter")
Extract = PACK.NODE_CLASS_MAPPINGS["PF_OpenPoseExtract"]
Render = PACK.NODE_CLASS_MAPPINGS["PF_PoseRender"]
BOUND = 4 * 2048 * 2048  # pixels: far more than any normal work canvas here, far less than the thin cases made


# -- OpenPose: the detect canvas --------------------------------------------------------
@pytest.mark.parametrize("h,w,res", [(96, 80, 128), (512, 512, 512), (300, 700, 256), (1080, 1920, 512),
                                     (2400, 3200, 128), (500, 2000, 512), (64, 64, 1024)])
def test_normal_photos_are_resized_exactly_as_controlnet_aux_does(h, w, res):
    from controlnet_aux.util import resize_image

    photo = np.random.default_rng(h + w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert np.array_equal(openpose.detect_resized(photo, res), resize_image(photo, res))


def test_a_thin_photo_is_detected_on_a_bounded_canvas(with_openpose, monkeypatch):
    seen = []
    real = openpose.detect_people

    def bounded(det, image, hands=False, face=False):
        seen.append(image.shape)
        assert image.shape[0] * image.shape[1] <= BOUND, f"detect canvas {image.shape}"
        return real(det, image, hands, face)

    monkeypatch.setattr(openpose, "detect_people", bounded)
    pose_map, frames, _ = Extract().extract(torch.rand(1, 48, 4000, 3), resolution=512)["result"]
    assert seen == [(64, 2048, 3)] and pose_map.shape == (1, 48, 4000, 3) and frames[0]["canvas_width"] == 4000


def test_pose_render_of_a_thin_canvas_is_bounded():
    assert render.draw_size(8, 8192, 2048) == (64, 8192)
    assert render.draw_size(1536, 1024, 512) == (768, 512)  # a normal size: as controlnet-aux
    frame = {"people": [], "canvas_width": 8, "canvas_height": 8192}
    pose_map, _ = Render().render([frame], resolution=2048)["result"]
    assert pose_map.shape == (1, 8192, 8, 3)


# -- CodeFormer: the detect canvas and the output --------------------------------------------
class RecordingDetector:
    def __init__(self):
        self.shapes = []

    def detect_faces(self, bgr, **kwargs):
        self.shapes.append(bgr.shape)
        assert bgr.shape[0] * bgr.shape[1] <= BOUND, f"detect canvas {bgr.shape}"
        return np.zeros((0, 15), np.float32)


@pytest.mark.parametrize("h,w,expected", [(4, 2000, (5, 2560)), (300, 400, (640, 853)), (1080, 1920, (640, 1138))])
def test_codeformer_detects_thin_images_on_a_bounded_canvas(h, w, expected):
    det = RecordingDetector()
    assert codeformer.detect(det, np.zeros((h, w, 3), np.uint8)) == []
    assert det.shapes == [(*expected, 3)]


def test_codeformer_refuses_an_output_larger_than_comfyui_makes(with_codeformer):
    Node = PACK.NODE_CLASS_MAPPINGS["PF_CodeFormer"]
    with pytest.raises(images.ImageInputError, match="16384"):
        Node().restore(torch.zeros(1, 8, 4200, 3), "codeformer.pth", upscale=4, backend="local")


class NearestX2(torch.nn.Module):
    """An upscale model that records what it is given."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.pf_scale, self.inputs = 2, []

    def forward(self, x):
        self.inputs.append(tuple(x.shape[-2:]))
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def test_face_upsample_alone_leaves_the_background_to_lanczos(with_codeformer):
    residency = pf("host.residency")
    up = NearestX2()
    rgb = (np.random.default_rng(1).random((96, 128, 3)) * 255).astype(np.uint8)
    det = codeformer.detector(str(with_codeformer / "facedetection" / codeformer.DETECTION_FILE))
    outs, masks, counts = codeformer.process(
        [rgb], residency.get(("identity",), IdentityRestorer), det, scale=2, upscaler_r=residency.get(("x2",), lambda: up),
        face_upsample=True, only_center=True, threshold=0.05, background_enhance=False)
    assert counts == [1] and up.inputs == [(512, 512)]  # the face only, not the 96x128 photo
    lanczos = cv2.resize(rgb, (256, 192), interpolation=cv2.INTER_LANCZOS4)
    assert np.array_equal(outs[0][masks[0] == 0], lanczos[masks[0] == 0])


# -- IP-Adapter: what CLIP's processor is given -----------------------------------------------
def test_clip_gets_the_centre_of_a_thin_image_and_normal_photos_untouched():
    strip = np.zeros((4, 2000, 3), np.uint8)
    assert ipadapter.centre(strip).shape == (4, 16, 3)
    photo = np.zeros((300, 1100, 3), np.uint8)
    assert ipadapter.centre(photo) is not None and ipadapter.centre(photo).shape == (300, 1100, 3)


# -- hostile keypoints --------------------------------------------------------------------
def person(**parts):
    return dict({"pose_keypoints_2d": [0.5, 0.5, 1.0] * 18}, **parts)


@pytest.mark.parametrize("frame,match", [
    ({"people": [person(pose_keypoints_2d=[math.inf, 0.5, 1.0] * 18)]}, "finite"),
    ({"people": [person(pose_keypoints_2d=[float("nan"), 0.5, 1.0] * 18)]}, "finite"),
    ({"people": [person(pose_keypoints_2d=[1e12, 5.0, 1.0] * 18)], "canvas_width": 64, "canvas_height": 64},
     "canvases away"),
    ({"people": [None]}, "must be a dict"),
    ({"people": ["somebody"]}, "must be a dict"),
    ({"people": [person(face_keypoints_2d="abc")]}, "must be a list"),
    ({"people": [person(pose_keypoints_2d=["1", "2", "3"] * 18)]}, "finite number"),
    ({"people": [person()], "canvas_width": "wide", "canvas_height": 64}, "canvas_width must be a number"),
    ({"people": [person()], "canvas_width": 10 ** 9, "canvas_height": 64}, "outside 0..16384"),
    ({"people": [person(hand_left_keypoints_2d=[0.1, 0.1, 1.0] * 5000)]}, "at most 21"),
    ({"people": [person()] * 101, "canvas_width": 64, "canvas_height": 64}, "at most 100"),
])
def test_hostile_keypoints_give_the_pose_nodes_own_error(frame, match):
    with pytest.raises(render.KeypointError, match=match):
        Render().render([frame], width=64, height=64)["result"]


def test_a_frame_without_people_draws_an_empty_map():
    pose_map, _ = Render().render([{"people": None, "canvas_width": 32, "canvas_height": 16}])["result"]
    assert pose_map.shape == (1, 16, 32, 3) and not pose_map.any()
