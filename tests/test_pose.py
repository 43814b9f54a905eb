"""PF_OpenPoseExtract end to end on random-weight OpenPose networks saved as .pth,
and PF_PoseRender on hand-written keypoints in both coordinate styles."""
import json

import numpy as np
import pytest
import torch

from conftest import PACK, pf

models = pf("host.models")
residency = pf("host.residency")
images = pf("host.images")
render = pf("local.pose_render")
Extract = PACK.NODE_CLASS_MAPPINGS["PF_OpenPoseExtract"]
Render = PACK.NODE_CLASS_MAPPINGS["PF_PoseRender"]


def photos(n=3, h=96, w=80, c=3):
    return torch.rand(n, h, w, c, generator=torch.Generator().manual_seed(1))


def check_frames(frames, n, h, w, hands, face):
    assert len(frames) == n
    for frame in frames:
        assert frame["canvas_width"] == w and frame["canvas_height"] == h
        assert isinstance(frame["people"], list)
        for person in frame["people"]:
            assert len(person["pose_keypoints_2d"]) == 54
            for name, count in (("hand_left_keypoints_2d", 63), ("hand_right_keypoints_2d", 63),
                                ("face_keypoints_2d", 210)):
                enabled = face if name.startswith("face") else hands
                assert person[name] is None or (enabled and len(person[name]) == count)
            assert all(0 <= v <= 1 for v in person["pose_keypoints_2d"])


@pytest.mark.parametrize("body,hands,face", [(True, False, False), (True, True, False), (True, False, True),
                                             (False, True, True)])
def test_extract_batch_end_to_end(with_openpose, body, hands, face):
    batch = photos()
    out = Extract().extract(batch, detect_body=body, detect_hands=hands, detect_face=face, resolution=128)
    pose_map, frames, bundle = out["result"]
    assert pose_map.shape == (3, 96, 80, 3) and pose_map.dtype == torch.float32
    assert 0 <= pose_map.min() and pose_map.max() <= 1
    check_frames(frames, 3, 96, 80, hands, face)
    assert json.loads(out["ui"]["openpose_json"][0]) == frames
    assert bundle["keypoints"] is frames and bundle["map"] is pose_map
    assert torch.allclose(bundle["source"], batch, atol=0.5 / 255)
    # the map is exactly the keypoints drawn again
    again, _ = Render().render(frames, draw_body=body, draw_hands=hands, draw_face=face, resolution=128)["result"]
    assert torch.equal(again, pose_map)


def test_models_cached_between_runs_and_released(with_openpose):
    residency.release_all()
    Extract().extract(photos(1), resolution=64)
    keys = [k for k in residency.cached_keys() if k[0] == "openpose"]
    assert [k[1] for k in keys] == ["body"]
    Extract().extract(photos(1), resolution=64)
    assert [k for k in residency.cached_keys() if k[0] == "openpose"] == keys
    residency.release_all()
    assert residency.cached_keys() == []


@pytest.fixture
def hf_cache(models_root, monkeypatch):
    """An empty Hugging Face cache of the test's own. huggingface_hub reads HF_HUB_CACHE once,
    at import, so the path it uses is patched where it keeps it, not in the environment."""
    from huggingface_hub import constants

    cache = models_root / "hf"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_missing_weights_name_each_file(hf_cache):
    models_root = hf_cache.parent
    with pytest.raises(models.MissingModelFiles) as err:
        Extract().extract(photos(1), detect_hands=True)
    text = str(err.value)
    assert "body_pose_model.pth" in text and "hand_pose_model.pth" in text and "facenet.pth" not in text
    assert str(models_root / "openpose") in text and "lllyasviel/Annotators" in text


def test_files_in_an_existing_hf_cache_are_used(hf_cache, openpose_root):
    snapshot = hf_cache / "models--lllyasviel--Annotators" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (hf_cache / "models--lllyasviel--Annotators" / "refs").mkdir()
    (hf_cache / "models--lllyasviel--Annotators" / "refs" / "main").write_text("0123abc")
    (snapshot / "body_pose_model.pth").symlink_to(openpose_root / "openpose" / "body_pose_model.pth")
    pose_map, frames, _ = Extract().extract(photos(1), resolution=64)["result"]
    assert pose_map.shape == (1, 96, 80, 3) and len(frames) == 1


@pytest.mark.parametrize("shape", [(1, 40, 30, 1), (1, 40, 30, 4), (2, 1, 1, 3), (40, 30, 3)])
def test_odd_inputs_work(with_openpose, shape):
    img = torch.rand(*shape)
    pose_map, frames, _ = Extract().extract(img, resolution=64)["result"]
    h, w = shape[-3], shape[-2]
    assert pose_map.shape[1:] == (h, w, 3) and len(frames) == pose_map.shape[0]


def test_large_image(with_openpose):
    pose_map, frames, _ = Extract().extract(torch.rand(1, 2400, 3200, 3), resolution=128)["result"]
    assert pose_map.shape == (1, 2400, 3200, 3) and frames[0]["canvas_width"] == 3200


@pytest.mark.parametrize("bad,match", [(torch.zeros(0, 8, 8, 3), "empty"), (torch.zeros(1, 8, 8, 2), "channels"),
                                       (torch.zeros(8, 8), "shape"),
                                       (torch.zeros(1, 40, 30), "MASK"), (torch.zeros(1, 0, 8, 3), "no pixels")])
def test_bad_inputs_give_clear_errors(with_openpose, bad, match):
    with pytest.raises(images.ImageInputError, match=match):
        Extract().extract(bad)


# -- rendering ---------------------------------------------------------------
def person_px(points):
    """18 body points {index: (x, y)} in pixels -> flat triplets."""
    flat = []
    for i in range(18):
        flat += [*points[i], 1.0] if i in points else [0.0, 0.0, 0.0]
    return {"pose_keypoints_2d": flat}


BODY_PX = {0: (50, 30), 1: (50, 50), 2: (80, 50), 3: (90, 80), 5: (20, 50), 8: (70, 110), 11: (30, 110)}


def frame_px():
    return {"people": [person_px(BODY_PX)], "canvas_width": 120, "canvas_height": 160}


def frame_normalized():
    frame = frame_px()
    flat = frame["people"][0]["pose_keypoints_2d"]
    frame["people"][0]["pose_keypoints_2d"] = [v / (120 if i % 3 == 0 else 160) if i % 3 != 2 else v
                                               for i, v in enumerate(flat)]
    return frame


def test_limbs_land_on_expected_pixels_and_colours():
    frame = dict(frame_px(), canvas_width=128, canvas_height=192)
    img = render.render_frame(frame, short_side=128)  # drawn at exactly the output size: no resize
    assert tuple(img[50, 50]) == (255, 85, 0)    # neck joint (colour 1)
    assert tuple(img[50, 80]) == (255, 170, 0)   # right shoulder joint (colour 2)
    assert tuple(img[50, 65]) == (153, 0, 0)     # neck-right shoulder limb, 0.6 x colour 0
    assert tuple(img[50, 35]) == (153, 51, 0)    # neck-left shoulder limb, 0.6 x colour 1
    assert tuple(img[150, 5]) == (0, 0, 0)       # background stays black
    assert not img[:, :, :][140:, :].any()       # nothing drawn below the hips' reach


def test_pixel_and_normalized_coordinates_draw_the_same():
    a, _ = Render().render([frame_px()])["result"]
    b, _ = Render().render([frame_normalized()])["result"]
    assert torch.equal(a, b) and a.shape == (1, 160, 120, 3)
    scaled, _ = Render().render([frame_normalized()], width=240, height=320)["result"]
    assert scaled.shape == (1, 320, 240, 3)


def test_a_normalized_point_slightly_off_canvas_keeps_the_frame_normalized():
    frame = frame_normalized()
    frame["people"][0]["pose_keypoints_2d"][3 * 3:3 * 3 + 2] = [1.02, 0.5]  # right elbow just past the edge
    as_pixels = frame_px()
    as_pixels["people"][0]["pose_keypoints_2d"][3 * 3:3 * 3 + 2] = [1.02 * 120, 0.5 * 160]
    ours = render.render_frame(frame)
    assert ours.any() and np.array_equal(ours, render.render_frame(as_pixels))


def theirs(body, hand, face, width, height, short_side=512):
    """controlnet-aux's map: drawn at its detect-size canvas, resized to the image (its __call__)."""
    import cv2
    from controlnet_aux.open_pose import PoseResult, draw_poses
    from controlnet_aux.open_pose.body import BodyResult, Keypoint

    dw, dh = render.draw_size(width, height, short_side)
    canvas = draw_poses([PoseResult(BodyResult([Keypoint(*p) if p else None for p in body], 1.0, 7),
                                    [Keypoint(*p) for p in hand], None, [Keypoint(*p) for p in face])], dh, dw)
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize("width,height", [(120, 160), (512, 512), (1024, 1024), (2048, 2048), (1536, 1024)])
def test_matches_controlnet_aux_at_every_size(width, height):
    g = np.random.default_rng(3)
    body = [(x / 120, y / 160) if i in BODY_PX else None for i, (x, y) in
            ((i, BODY_PX.get(i, (0, 0))) for i in range(18))]
    hand = [tuple(p) for p in g.uniform(0.1, 0.9, (21, 2))]
    face = [tuple(p) for p in g.uniform(0.2, 0.6, (70, 2))]
    frame = {"people": [{"pose_keypoints_2d": render.encode_points(body, 18),
                         "hand_left_keypoints_2d": render.encode_points(hand, 21),
                         "hand_right_keypoints_2d": None,
                         "face_keypoints_2d": render.encode_points(face, 70)}],
             "canvas_width": width, "canvas_height": height}
    ours = render.render_frame(frame)
    assert np.array_equal(ours, theirs(body, hand, face, width, height))


def test_limb_width_is_relative_to_the_canvas():
    lit = []
    for size in (512, 1024, 2048):
        frame = dict(frame_normalized(), canvas_width=size, canvas_height=size)
        lit.append((render.render_frame(frame, hands=False, face=False).max(axis=-1) > 40).mean())
    assert max(lit) / min(lit) < 1.1  # the same share of the image at every size
    thick = render.render_frame(frame_normalized(), stick_width=10)
    assert (thick.max(axis=-1) > 40).sum() > 1.5 * (render.render_frame(frame_normalized()).max(axis=-1) > 40).sum()


def test_threshold_hides_low_confidence_points():
    frame = frame_px()
    flat = frame["people"][0]["pose_keypoints_2d"]
    flat[2 * 3 + 2] = 0.2  # right shoulder scored 0.2, as DWPose writes raw scores
    shown = render.render_frame(frame, short_side=160)
    hidden = render.render_frame(frame, threshold=0.3, short_side=160)
    assert shown[50, 80].any() and not hidden[50, 80].any()
    assert hidden[50, 50].any()  # the neck (score 1.0) still drawn


def test_body_25_is_converted_and_other_layouts_refused():
    coco = frame_px()
    flat = coco["people"][0]["pose_keypoints_2d"]
    triplets = [flat[i:i + 3] for i in range(0, 54, 3)]
    body25 = [None] * 25
    for coco_index, b25_index in enumerate(render.BODY_25_TO_COCO):
        body25[b25_index] = triplets[coco_index]
    body25[8] = [50.0, 110.0, 1.0]  # MidHip, which COCO-18 has not
    frame = dict(coco, people=[{"pose_keypoints_2d": [v for t in (p or [0.0, 0.0, 0.0] for p in body25) for v in t]}])
    assert np.array_equal(render.render_frame(frame), render.render_frame(coco))
    frame["people"][0]["pose_keypoints_2d"] = frame["people"][0]["pose_keypoints_2d"][:17 * 3]
    with pytest.raises(render.KeypointError, match="17 points"):
        render.render_frame(frame)


@pytest.mark.parametrize("frames,match", [
    ([], "no pose to draw"),
    ([{"people": [{"pose_keypoints_2d": [300, 20, 1] + [0, 0, 0] * 17}]}], "canvas_width"),
    ([{"people": [{"pose_keypoints_2d": [0.3, 0.2]}], "canvas_width": 8, "canvas_height": 8}], "triplets"),
    ([{"people": []}], "no output size"),
    ([{"people": [], "canvas_width": 8, "canvas_height": 8}, {"people": [], "canvas_width": 16, "canvas_height": 8}],
     "different canvas sizes"),
])
def test_render_errors(frames, match):
    with pytest.raises(render.KeypointError, match=match):
        Render().render(frames)["result"]


def test_files_of_comfyui_controlnet_aux_are_used(hf_cache, openpose_root, monkeypatch, tmp_path):
    annotators = tmp_path / "aux" / "lllyasviel" / "Annotators"
    annotators.mkdir(parents=True)
    (annotators / "body_pose_model.pth").symlink_to(openpose_root / "openpose" / "body_pose_model.pth")
    monkeypatch.setenv("AUX_ANNOTATOR_CKPTS_PATH", str(tmp_path / "aux"))
    assert pf("local.pose_files").locate({"body": ("body_pose_model.pth", "lllyasviel/Annotators")}) == \
        {"body": str(annotators / "body_pose_model.pth")}
    pose_map, frames, _ = Extract().extract(photos(1), resolution=64)["result"]
    assert pose_map.shape == (1, 96, 80, 3)


def test_the_pose_edited_on_the_node_is_drawn_instead_of_the_keypoints():
    edited = frame_normalized()
    edited["people"][0]["pose_keypoints_2d"][3 * 3:3 * 3 + 2] = [0.9, 0.9]  # the right elbow moved
    connected = Render().render([frame_normalized()])["result"][0]
    drawn = Render().render([frame_normalized()], pose=json.dumps(edited))
    assert not torch.equal(drawn["result"][0], connected)
    assert torch.equal(drawn["result"][0], Render().render([edited])["result"][0])
    assert json.loads(drawn["ui"]["openpose_json"][0]) == [edited]
    alone = Render().render(pose=json.dumps([edited]))["result"]  # no keypoints connected: a hand-made pose
    assert torch.equal(alone[0], drawn["result"][0]) and alone[1]["keypoints"] == [edited]
    with pytest.raises(render.KeypointError, match="not POSE_KEYPOINT JSON"):
        Render().render(pose="{not json")
    with pytest.raises(render.KeypointError, match="no pose to draw"):
        Render().render(pose="  ")


@pytest.mark.timeout(30)
def test_an_edited_pose_cannot_ask_for_gigabytes():
    """A few characters may ask for big canvases or many frames: refused before any map is drawn."""
    big = '{"canvas_width":16384,"canvas_height":16384,"people":[]}'
    for text in ("[" + ",".join([big] * 3) + "]", "[" + ",".join(['{"people":[]}'] * 5000) + "]"):
        with pytest.raises(render.KeypointError, match="too many to draw"):
            Render().render(pose=text, width=0 if "16384" in text else 512, height=0 if "16384" in text else 512)
    assert Render().render(pose=big.replace("16384", "512"))["result"][0].shape == (1, 512, 512, 3)
    with pytest.raises(render.KeypointError, match="nests lists too deep"):
        Render().render(pose="[" * 100_000 + "]" * 100_000)  # RecursionError in the JSON decoder before
    with pytest.raises(pf("engines.pose").PoseRequestError, match="resolution 1000000000 must be"):
        Render().render(pose=big.replace("16384", "64"), resolution=10 ** 9)  # 2.6 EiB canvas before
