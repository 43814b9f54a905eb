"""DWPose in PF_OpenPoseExtract on tiny networks with the real files' signatures, exported as
ONNX and as TorchScript (tests/tiny_dwpose.py), with the network disabled: crafted detector
and estimator outputs give exactly the expected POSE_KEYPOINT (body in OpenPose order, hands,
face with its indices), map and openpose_json, people in order; each person's box is the crop
the estimator receives; files are found where users have them and named when missing."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

import tiny_dwpose as tiny
from conftest import PACK, pf

dwpose = pf("local.dwpose")
render = pf("local.pose_render")
models = pf("host.models")
residency = pf("host.residency")
Extract = PACK.NODE_CLASS_MAPPINGS["PF_OpenPoseExtract"]
# OpenPose-18 index <- COCO-17 index of DWPose's body ("neck": the shoulders' mean), as OpenPose names them
OPENPOSE_FROM_COCO = {0: 0, 1: "neck", 2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16, 11: 11, 12: 13,
                      13: 15, 14: 2, 15: 1, 16: 4, 17: 3}


@pytest.fixture(params=["onnx", "torchscript"])
def dwpose_root(request, dwpose_files, tmp_path, no_network, monkeypatch):
    """A models root whose openpose folder holds one kind of the two DWPose files (TorchScript: opted in)."""
    _, files = dwpose_files
    if request.param == "torchscript":
        monkeypatch.setenv(dwpose.OPT_IN, "1")
    folder = tmp_path / "openpose"
    folder.mkdir()
    for path in files[request.param]:
        os.link(path, folder / os.path.basename(path))
    models.set_models_root(tmp_path)
    residency.release_all()
    yield request.param
    models.set_models_root(None)


def photo():
    """Person A's region red, B's green, the rest blue (640 x 640)."""
    img = np.zeros((tiny.SIZE, tiny.SIZE, 3), np.float32)
    img[..., 2] = 1.0
    for (left, top, _), colour in zip(tiny.PEOPLE, ((1.0, 0, 0), (0, 1.0, 0))):
        img[top:top + 384, left:left + 288] = colour
    return torch.from_numpy(img)[None]


def expected_people():
    """[(body 18, left hand 21, right hand 21, face 70)] of (x, y) normalized | None, from tiny's crafted points."""
    out = []
    for index, (left, top, _) in enumerate(tiny.PEOPLE):
        def at(k):
            if k in tiny.LOW or (k == 0 and index == 1):  # B's crop is green: its nose is not sure
                return None
            x, y = tiny.point(k)
            return ((x + left) / tiny.SIZE, (y + top) / tiny.SIZE)

        def neck():
            (x5, y5), (x6, y6) = tiny.point(5), tiny.point(6)
            return ((x5 + x6) / 2 + left) / tiny.SIZE, ((y5 + y6) / 2 + top) / tiny.SIZE

        body = [neck() if k == "neck" else at(k) for k in OPENPOSE_FROM_COCO.values()]
        face = [at(k) for k in range(23, 91)] + [body[14], body[15]]  # the eyes as pupils 68, 69
        out.append((body, [at(k) for k in range(91, 112)], [at(k) for k in range(112, 133)], face))
    return out


def triplets(flat):
    return [None if c == 0 else (x, y) for x, y, c in (flat[i:i + 3] for i in range(0, len(flat), 3))]


def test_crafted_outputs_give_exactly_the_expected_pose(dwpose_root):
    out = Extract().extract(photo(), detect_hands=True, detect_face=True, resolution=512, detector="dwpose")
    pose_map, frames, bundle = out["result"]
    people = frames[0]["people"]
    assert len(people) == 2, "two people: the weaker copy of A suppressed, the non-person left out"
    for person, (body, left, right, face) in zip(people, expected_people()):  # in order: A (0.9) before B (0.7)
        for name, truth in (("pose_keypoints_2d", body), ("hand_left_keypoints_2d", left),
                            ("hand_right_keypoints_2d", right), ("face_keypoints_2d", face)):
            got = triplets(person[name])
            assert len(got) == len(truth), name
            for index, (g, t) in enumerate(zip(got, truth)):
                assert (g is None) == (t is None), (name, index)
                if t is not None:
                    assert g == pytest.approx(t, abs=1e-6), (name, index)
    assert frames[0]["canvas_width"] == frames[0]["canvas_height"] == 640
    assert torch.equal(pose_map[0], torch.from_numpy(render.render_frame(frames[0], short_side=512)) / 255.0)
    assert json.loads(out["ui"]["openpose_json"][0]) == frames and out["ui"]["people"] == [2]
    assert out["ui"]["detector"] == ["dwpose"] and bundle["keypoints"] is frames


def test_each_persons_box_is_the_crop_the_estimator_receives(dwpose_root, monkeypatch):
    crops = []
    real = dwpose.crop
    monkeypatch.setattr(dwpose, "crop", lambda rgb, c, s: crops.append(real(rgb, c, s)) or crops[-1])
    Extract().extract(photo(), detector="dwpose")
    red, green = crops  # normalized: red is (255 - mean) / std in its own channel, the others below zero
    assert np.allclose(red[0], tiny.RED, atol=1e-3) and (red[1:] < 0).all()
    assert np.allclose(green[1], (255 - dwpose.MEAN[1]) / dwpose.STD[1], atol=1e-3) and (green[0] < 0).all()


def test_flags_choose_what_is_kept_and_drawn(dwpose_root):
    out = Extract().extract(photo(), detect_hands=False, detect_face=False, detector="dwpose")
    person = out["result"][1][0]["people"][0]
    assert person["hand_left_keypoints_2d"] is None and person["face_keypoints_2d"] is None
    assert len(person["pose_keypoints_2d"]) == 54


def test_a_batch_is_one_frame_per_photo_with_progress_and_nobody_found_is_nobody(dwpose_root):
    empty = torch.zeros(1, 640, 640, 3)
    pose_map, frames, _ = Extract().extract(torch.cat([photo(), empty, photo()]), detector="dwpose")["result"]
    assert pose_map.shape == (3, 640, 640, 3) and [len(f["people"]) for f in frames] == [2, 2, 2]
    boxes = dwpose.people(dwpose.networks()["detector"], np.zeros((320, 640, 3), np.uint8))  # letterboxed at 1:1
    assert np.allclose(boxes[0], tiny.box(*tiny.PEOPLE[0][:2]), atol=1e-3)
    halved = dwpose.people(dwpose.networks()["detector"], np.zeros((1280, 1280, 3), np.uint8))  # at 1:2
    assert np.allclose(halved[0], np.array(tiny.box(*tiny.PEOPLE[0][:2])) * 2, atol=1e-3)


def test_the_torchscript_networks_are_residents_and_onnx_sessions_are_not(dwpose_root):
    Extract().extract(photo(), detector="dwpose")
    kinds = [k[0] for k in residency.cached_keys()]
    assert kinds.count("dwpose") == (2 if dwpose_root == "torchscript" else 0)


def test_files_in_comfyui_controlnet_aux_folders_are_found(dwpose_files, tmp_path, monkeypatch, no_network):
    _, files = dwpose_files
    monkeypatch.setenv(dwpose.OPT_IN, "1")
    for path, repo in ((files["onnx"][0], "yzd-v/DWPose"), (files["torchscript"][1], "hr16/DWPose-TorchScript-BatchSize5")):
        folder = tmp_path / "aux" / repo
        folder.mkdir(parents=True, exist_ok=True)
        os.link(path, folder / os.path.basename(path))
    monkeypatch.setenv("AUX_ANNOTATOR_CKPTS_PATH", str(tmp_path / "aux"))
    models.set_models_root(tmp_path / "models")
    try:
        found = dwpose.files()
        assert found == {"detector": str(tmp_path / "aux/yzd-v/DWPose/yolox_l.onnx"),
                         "estimator": str(tmp_path / "aux/hr16/DWPose-TorchScript-BatchSize5/"
                                                     "dw-ll_ucoco_384_bs5.torchscript.pt")}
        assert len(Extract().extract(photo(), detector="dwpose")["result"][1][0]["people"]) == 2
    finally:
        models.set_models_root(None)


def test_missing_files_are_named_with_where_to_get_them(models_root, hf_cache):
    with pytest.raises(models.MissingModelFiles) as err:
        Extract().extract(photo(), detector="dwpose")
    text = str(err.value)
    for name in ("yolox_l.onnx", "yolox_l.torchscript.pt", "dw-ll_ucoco_384.onnx", "dw-ll_ucoco_384_bs5.torchscript.pt",
                 "huggingface.co/yzd-v/DWPose", "huggingface.co/hr16/DWPose-TorchScript-BatchSize5"):
        assert name in text, name


@pytest.fixture
def hf_cache(models_root, monkeypatch):
    from huggingface_hub import constants

    cache = models_root / "hf"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))


def test_onnx_files_without_onnxruntime_say_what_to_do(dwpose_files, tmp_path, monkeypatch):
    _, files = dwpose_files
    (tmp_path / "openpose").mkdir()
    for path in files["onnx"]:
        os.link(path, tmp_path / "openpose" / os.path.basename(path))
    models.set_models_root(tmp_path)
    real = pf("local.libs").load

    def no_onnxruntime(name):
        if name == "onnxruntime":
            raise pf("local.libs").LibraryImportError("PoseForge could not import onnxruntime")
        return real(name)

    monkeypatch.setattr(pf("local.libs"), "load", no_onnxruntime)
    residency.release_all()
    try:
        with pytest.raises(dwpose.DWPoseError, match="needs onnxruntime: pip install onnxruntime .* TorchScript"):
            Extract().extract(photo(), detector="dwpose")
    finally:
        models.set_models_root(None)


def test_the_default_detector_follows_the_files(dwpose_files, openpose_root, tmp_path, hf_cache):
    assert Extract.INPUT_TYPES()["optional"]["detector"][0] == ["openpose", "dwpose"]
    models.set_models_root(openpose_root)
    assert Extract.INPUT_TYPES()["optional"]["detector"][1]["default"] == "openpose"
    (tmp_path / "only" / "openpose").mkdir(parents=True)
    for path in dwpose_files[1]["onnx"]:
        shutil.copy(path, tmp_path / "only" / "openpose")
    models.set_models_root(tmp_path / "only")
    try:
        assert Extract.INPUT_TYPES()["optional"]["detector"][1]["default"] == "dwpose"
    finally:
        models.set_models_root(None)


def test_a_torchscript_file_is_not_loaded_unless_the_user_opts_in(dwpose_files, tmp_path, monkeypatch, capfd,
                                                                  no_network):
    """A TorchScript archive runs its own code at torch.jit.load (here a `__setstate__` that prints; an
    attacker's reads and writes files): by default it is left alone, and the error says why and how."""
    monkeypatch.delenv(dwpose.OPT_IN, raising=False)
    folder = tmp_path / "openpose"
    folder.mkdir()
    shutil.copy(dwpose_files[1]["torchscript"][1], folder)

    class Loud(torch.nn.Module):
        def forward(self, x):
            return x

        @torch.jit.export
        def __getstate__(self):
            return (self.training,)

        @torch.jit.export
        def __setstate__(self, state: tuple[bool]):
            print("POSEFORGE-TORCHSCRIPT-CODE-RAN")
            self.training = state[0]

    torch.jit.script(Loud()).save(str(folder / "yolox_l.torchscript.pt"))
    models.set_models_root(tmp_path)
    residency.release_all()
    try:
        with pytest.raises(models.MissingModelFiles, match=f"yolox_l.torchscript.pt, .* are there but not loaded.*"
                                                           f"{dwpose.OPT_IN}=1"):
            Extract().extract(photo(), detector="dwpose")
        assert "POSEFORGE-TORCHSCRIPT-CODE-RAN" not in capfd.readouterr().out
        with pytest.raises(dwpose.DWPoseError, match="runs code of its own"):
            dwpose.network(str(folder / "yolox_l.torchscript.pt"))
        assert "POSEFORGE-TORCHSCRIPT-CODE-RAN" not in capfd.readouterr().out
        monkeypatch.setenv(dwpose.OPT_IN, "1")  # the user trusts the file: it loads (and its code runs)
        dwpose.network(str(folder / "yolox_l.torchscript.pt"))
        assert "POSEFORGE-TORCHSCRIPT-CODE-RAN" in capfd.readouterr().out
    finally:
        models.set_models_root(None)
        residency.release_all()


def test_onnx_sessions_are_listed_and_released_with_comfyuis_models(dwpose_files, tmp_path, comfy_host, no_network):
    (tmp_path / "openpose").mkdir()
    for path in dwpose_files[1]["onnx"]:
        os.link(path, tmp_path / "openpose" / os.path.basename(path))
    models.set_models_root(tmp_path)
    try:
        Extract().extract(photo(), detector="dwpose")
        held = [m for m in residency.registered() if m["model"].startswith("dwpose/onnxruntime")]
        assert len(held) == 2 and all(m["bytes"] > 0 for m in held)
        comfy_host.mm.unload_all_models()  # "Unload models" / POST /free
        assert not [m for m in residency.registered() if m["model"].startswith("dwpose")]
    finally:
        models.set_models_root(None)
