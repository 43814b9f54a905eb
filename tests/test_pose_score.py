"""Pose-true images: the pose-match score (COCO's OKS per person, matched person to person) with exact expected
values, end to end through the crafted DWPose networks (tests/tiny_dwpose.py), and the pose sampler's best-of-N
(score, sort, best K, reseed) on the tiny SDXL."""
import json
import math
import os

import pytest
import torch

import tiny_dwpose as tiny
from conftest import PACK, pf
from test_dwpose import photo
from test_sdxl import FAST

pose_score = pf("local.pose_score")
render = pf("local.pose_render")
models = pf("host.models")
residency = pf("host.residency")
Extract = PACK.NODE_CLASS_MAPPINGS["PF_OpenPoseExtract"]
Score = PACK.NODE_CLASS_MAPPINGS["PF_PoseScore"]
OpenPose = PACK.NODE_CLASS_MAPPINGS["PF_SDXLOpenPose"]
W, H = 200, 400


def standing():
    """18 body points (normalized) of a person standing on a 200 x 400 canvas."""
    pixels = [(100, 40), (100, 80), (70, 80), (60, 140), (55, 200), (130, 80), (140, 140), (145, 200), (80, 200),
              (80, 280), (80, 360), (120, 200), (120, 280), (120, 360), (92, 32), (108, 32), (85, 36), (115, 36)]
    return [(x / W, y / H) for x, y in pixels]


def moved(points, index, dx, dy):
    out = list(points)
    out[index] = (points[index][0] + dx / W, points[index][1] + dy / H)
    return out


def expected_oks(displacements):
    """COCO's OKS by its formula for the standing person with joint i moved by displacements[i] pixels."""
    xs, ys = [p[0] * W for p in standing()], [p[1] * H for p in standing()]
    area = (max(xs) - min(xs)) * (max(ys) - min(ys))
    sims = [math.exp(-(displacements.get(i, 0.0) ** 2) / (2 * area * (2 * sigma) ** 2))
            for i, sigma in enumerate(pose_score.SIGMAS)]
    return sum(sims) / len(sims)


def test_the_score_falls_with_the_displacement_as_oks_says():
    target = standing()
    assert pose_score.frame([target], [target], W, H)["score"] == 1.0
    last = 1.0
    for d in (2, 5, 10, 20, 40):  # the right wrist moved d pixels along x
        got = pose_score.frame([target], [moved(target, 4, d, 0)], W, H)
        assert got["score"] == pytest.approx(expected_oks({4: d}), abs=1e-6) and got["score"] < last
        joint = got["people"][0]["joints"]["right_wrist"]
        area = (145 - 55) * (360 - 32)
        assert joint["distance"] == pytest.approx(d / math.sqrt(area), abs=1e-6)
        last = got["score"]
    both = moved(moved(target, 0, 3, 4), 10, 0, -12)  # nose by 5 px, right ankle by 12 px
    assert pose_score.frame([target], [both], W, H)["score"] == pytest.approx(expected_oks({0: 5, 10: 12}),
                                                                                abs=1e-6)
    lost = list(target)
    lost[7] = None  # the image lost the left wrist
    assert pose_score.frame([target], [lost], W, H)["score"] == pytest.approx(17 / 18, abs=1e-6)


def test_people_are_matched_one_to_one_whatever_their_order():
    a, b = standing(), [(x + 0.3, y) for x, y in standing()]
    near_b = moved(b, 4, 6, 0)
    one = pose_score.frame([a, b], [near_b, a], W, H)
    other = pose_score.frame([b, a], [a, near_b], W, H)
    assert one["score"] == other["score"] == pytest.approx((1.0 + expected_oks({4: 6})) / 2, abs=1e-6)
    assert [(p["target"], p["found"]) for p in one["people"]] == [(0, 1), (1, 0)]
    missing = pose_score.frame([a, b], [a], W, H)
    assert missing["score"] == pytest.approx(0.5) and missing["missing"] == 1
    extra = pose_score.frame([a], [a, b], W, H)
    assert extra["score"] == pytest.approx(0.5) and extra["extra"] == 1


def test_an_image_with_nobody_scores_zero():
    assert pose_score.frame([standing()], [], W, H)["score"] == 0.0
    assert pose_score.frame([], [], W, H)["score"] == 1.0 and pose_score.frame([], [standing()], W, H)["score"] == 0.0


# -- end to end: the crafted DWPose finds its two people in every image ------------------------------------
@pytest.fixture
def scored_root(dwpose_files, sdxl_files, ip_files, tiny_root, tmp_path, no_network):
    """A models root with the tiny SDXL and IP-Adapter files and the ONNX DWPose files in openpose/ (the
    scoring detector)."""
    _, files = dwpose_files
    for folder in ("checkpoints", "controlnet", "ipadapter", "clip_vision"):
        os.symlink(tiny_root / folder, tmp_path / folder)
    (tmp_path / "openpose").mkdir()
    for path in files["onnx"]:
        os.link(path, tmp_path / "openpose" / os.path.basename(path))
    models.set_models_root(tmp_path)
    residency.release_all()
    yield tmp_path
    models.set_models_root(None)


def extracted():
    out = Extract().extract(photo(), detector="dwpose", resolution=512)["result"]
    return out[1], out[2]  # POSE_KEYPOINT, PF_POSE


def test_pf_pose_score_through_the_detector_follows_oks(scored_root):
    frames, pose = extracted()
    assert pose["detector"] == "dwpose"
    scores, report, = Score().score(photo(), pose)["result"]
    assert scores == [1.0]  # the people found are the pose's own
    people = render.frame_parts(frames[0])
    found = [p["pose_keypoints_2d"] for p in people]
    shifted = json.loads(json.dumps(frames))  # person A's right elbow moved 16 pixels right in the target
    shifted[0]["people"][0]["pose_keypoints_2d"][3 * 3] += 16 / tiny.SIZE
    target = [p["pose_keypoints_2d"] for p in render.frame_parts(shifted[0])]
    scores, report = Score().score(photo(), dict(pose, keypoints=shifted))["result"]
    expected = pose_score.frame(target, found, tiny.SIZE, tiny.SIZE)["score"]
    assert scores == [pytest.approx(expected, abs=1e-6)] and expected < 1.0
    a = json.loads(report)[0]["people"][0]
    assert a["joints"]["right_elbow"]["similarity"] < 1 and a["joints"]["nose"]["similarity"] == 1.0
    assert "right_wrist" not in a["joints"]  # DWPose was unsure of it (tiny_dwpose.LOW): not in the target
    green = photo()
    green[0, 60:444, 20:308] = torch.tensor([0.0, 1.0, 0.0])  # A's crop is green too: its nose is lost
    scores, _ = Score().score(torch.cat([photo(), green]), pose)["result"]
    assert scores[0] == 1.0 and scores[1] == pytest.approx((16 / 17 + 1.0) / 2, abs=1e-6)  # 17 joints: 16 kept


def run(pose, **overrides):
    sdxl = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]().load(
        "tiny_sdxl.safetensors", "tiny-openpose-sdxl/diffusion_pytorch_model.safetensors", "fp32")[0]
    args = dict(FAST, controlnet_scale=0.8, control_start=0.0, control_end=1.0, samples=4)
    args.update(overrides)
    return OpenPose().generate(pose, backend="local", sdxl=sdxl, **args)


def kept_and_lost():
    """Four 64 x 64 copies of the photo to inpaint, and their masks: samples 0 and 2 draw person A's crop
    centre again (the crafted estimator then loses A's nose), 1 and 3 draw a corner (A keeps it)."""
    small = torch.nn.functional.interpolate(photo().permute(0, 3, 1, 2), size=(64, 64)).permute(0, 2, 3, 1)
    masks = torch.zeros(4, 64, 64)
    masks[0::2, 20:30, 11:22] = 1.0
    masks[1::2, 0:8, 56:64] = 1.0
    return dict(inpaint_image=small.expand(4, -1, -1, -1).contiguous(), mask=masks, mask_grow=0, mask_feather=0)


def test_best_of_n_sorts_keeps_k_and_reseeds_within_its_bound(scored_root):
    _, pose = extracted()
    plain = run(pose, pose_match="score", **kept_and_lost())
    scores, images = plain["ui"]["pose_scores"], plain["result"][0]
    assert scores == [pytest.approx(x, abs=1e-6) for x in ((16 / 17 + 1) / 2, 1.0, (16 / 17 + 1) / 2, 1.0)]
    assert plain["ui"]["seeds"] == [7, 8, 9, 10]
    again, _ = Score().score(images, pose)["result"]
    assert again == scores  # the scores reported are the scorer's on the images returned
    best = run(pose, pose_match="best", best_k=2, **kept_and_lost())
    assert best["ui"]["pose_scores"] == [1.0, 1.0] and best["ui"]["seeds"] == [8, 10]
    assert torch.equal(best["result"][0], images[[1, 3]]) and best["result"][1]["samples"].shape[0] == 2
    ordered = run(pose, pose_match="sort", **kept_and_lost())
    assert ordered["ui"]["seeds"] == [8, 10, 7, 9] and torch.equal(ordered["result"][0], images[[1, 3, 0, 2]])
    reseeded = run(pose, pose_match="reseed", min_score=1.0, max_tries=2, **kept_and_lost())
    tried, final = reseeded["ui"]["seeds_tried"], reseeded["ui"]["pose_scores"]
    assert tried[1] == [8] and tried[3] == [10] and torch.equal(reseeded["result"][0][1], images[1])
    for i in (0, 2):  # drawn again with the next batch's seeds until it scored 1, two more draws at the most
        assert tried[i] == [7 + i, 11 + i, 15 + i][:len(tried[i])] and len(tried[i]) > 1
        assert len(tried[i]) == 3 or final[i] == 1.0
        assert final[i] >= scores[i] and reseeded["ui"]["seeds"][i] in tried[i]
    stopped = run(pose, pose_match="reseed", min_score=0.9, max_tries=2, **kept_and_lost())
    assert stopped["ui"]["seeds_tried"] == [[7], [8], [9], [10]]  # every image reached it: nothing drawn again


def test_pose_match_needs_keypoints_and_its_detector_before_anything_runs(scored_root, tmp_path):
    with pytest.raises(ValueError, match="pose_match scores the images against the pose's keypoints"):
        run(torch.zeros(1, 64, 64, 3), pose_match="sort")
    _, pose = extracted()
    for name in os.listdir(tmp_path / "openpose"):
        os.remove(tmp_path / "openpose" / name)
    with pytest.raises(models.MissingModelFiles, match="yolox_l.onnx"):
        run(pose, pose_match="best")
    with pytest.raises(ValueError, match="best_k 5 must be within 1..samples"):
        run(pose, pose_match="best", best_k=5)


def test_a_segmind_run_is_scored_here(fake, scored_root):
    """Segmind samples, this machine scores: the fake returns the photo it was sent, inverted, in which the
    crafted estimator loses person A's nose (A's crop is no longer red)."""
    _, pose = extracted()
    args = dict(FAST, num_inference_steps=30, controlnet_scale=0.7, control_start=0.0, control_end=1.0, samples=2)
    out = OpenPose().generate(pose, backend="segmind", pose_match="sort", **args)
    assert out["ui"]["backend"] == ["segmind"] and len(fake.requests) == 2
    assert out["ui"]["pose_scores"] == [pytest.approx((16 / 17 + 1) / 2, abs=1e-6)] * 2
    assert out["ui"]["detector"] == ["dwpose"] and json.loads(out["ui"]["pose_report"][0])[0]["people"]


# -- the IP-Adapter's reference cropped around its face ----------------------------------------------------
def test_face_square_is_centred_on_the_head_points():
    body = [None] * 18
    body[14], body[15] = (0.40, 0.30), (0.50, 0.30)  # the eyes only, 40 px apart on a 400 px square
    assert render.face_square(body, 400, 400) == (180 - 88, 120 - 88, 176)  # 2 x 2.2 eye distances, centred
    body[0] = None
    assert render.face_square([None] * 18, 400, 400) is None
    body[16], body[17] = (0.0, 0.30), (0.05, 0.30)  # at the edge: the square stays inside the image
    assert render.face_square(body, 400, 400)[0] == 0


def test_the_ip_adapter_receives_the_face_crop(scored_root, monkeypatch):
    """The crafted DWPose finds person A's head (nose, eyes, ears at known pixels) on the 640 x 640 photo: the
    image the CLIP encoder is given is the square around it, person B's smaller face left out."""
    from test_ipadapter import adapter

    ipadapter = pf("local.ipadapter")
    seen = []
    real = ipadapter._pixels
    monkeypatch.setattr(ipadapter, "_pixels", lambda model, images: seen.extend(images) or real(model, images))
    ipadapter.clear_cache()
    ip = adapter(image=photo(), face_crop="on")
    sdxl = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]().load("tiny_sdxl.safetensors", "none", "fp32")[0]
    out = PACK.NODE_CLASS_MAPPINGS["PF_SDXLText2Image"]().generate(sdxl=sdxl, ip_adapter=ip, backend="local", **FAST)
    heads = [(12 + 20 * k + 20, 10 + 60) for k in range(5)]  # A's nose, eyes and ears: crop pixel + A's corner
    span = max(x for x, _ in heads) - min(x for x, _ in heads)  # 80 px, all on one row
    side = round(2.0 * max(span, 2.2 * 20))
    centre = sum(x for x, _ in heads) / 5, 70
    left, top = max(0, round(centre[0] - side / 2)), max(0, round(centre[1] - side / 2))
    pixels = (photo()[0].numpy() * 255).round().astype("uint8")
    assert len(seen) == 1 and seen[0].shape == (side, side, 3)
    assert (seen[0] == pixels[top:top + side, left:left + side]).all()
    assert out["ui"]["face_crop"] == [f"face crop {side}x{side} at {left},{top}"]


def test_auto_crops_for_a_plus_face_adapter_only():
    crops = pf("engines.ipadapter").crops_faces
    assert crops({"ipadapter": "ip-adapter-plus-face_sdxl_vit-h.safetensors", "face_crop": "auto"})
    assert not crops({"ipadapter": "ip-adapter-plus_sdxl_vit-h.safetensors", "face_crop": "auto"})
    assert not crops({"ipadapter": "ip-adapter-faceid_sdxl.bin", "face_crop": "auto"})
    assert crops({"ipadapter": "ip-adapter_sdxl.safetensors", "face_crop": "on"})
    assert not crops({"ipadapter": "sub/ip-adapter-plus-face_sdxl_vit-h.safetensors", "face_crop": "off"})
