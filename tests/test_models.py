"""Model folders: registration inside the real ComfyUI keeps the paths a user's
extra_model_paths.yaml added (read by ComfyUI's own loader); lookups outside ComfyUI."""
import copy
import sys

import pytest

from conftest import pf

models = pf("host.models")


def test_registration_keeps_user_paths(comfy_modules, tmp_path, monkeypatch):
    fp = comfy_modules["folder_paths"]
    monkeypatch.setattr(fp, "folder_names_and_paths", copy.deepcopy(fp.folder_names_and_paths))
    monkeypatch.setattr(fp, "filename_list_cache", {})
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    shared = tmp_path / "shared"
    yaml = tmp_path / "extra_model_paths.yaml"
    yaml.write_text(f"mine:\n  base_path: {shared}\n  ipadapter: ipadapter\n  controlnet: cn\n")
    comfy_modules["utils.extra_config"].load_extra_path_config(str(yaml))  # as ComfyUI does at start-up
    core_controlnet = fp.get_folder_paths("controlnet")
    models.register_folders()
    models.register_folders()  # idempotent
    assert fp.folder_names_and_paths["ipadapter"][0] == [str(shared / "ipadapter")]
    assert ".safetensors" in fp.folder_names_and_paths["ipadapter"][1]
    assert fp.get_folder_paths("controlnet") == core_controlnet and str(shared / "cn") in core_controlnet
    assert {".pth", ".safetensors"} <= fp.folder_names_and_paths["controlnet"][1]
    for name in models.FOLDERS:
        assert name in fp.folder_names_and_paths
    assert fp.get_folder_paths("openpose") == [f"{fp.models_dir}/openpose"]
    # lookups go through folder_paths, the user's folder included
    (shared / "ipadapter").mkdir(parents=True)
    (shared / "ipadapter" / "ip.safetensors").write_bytes(b"x")
    (shared / "ipadapter" / "notes.txt").write_text("x")
    assert models.list_files("ipadapter") == ["ip.safetensors"]
    assert models.find("ipadapter", "ip.safetensors") == str(shared / "ipadapter" / "ip.safetensors")


def test_standalone_root_and_env(tmp_path, monkeypatch):
    models.set_models_root(None)
    monkeypatch.setenv("POSEFORGE_MODELS", str(tmp_path))
    (tmp_path / "openpose" / "sub").mkdir(parents=True)
    (tmp_path / "openpose" / "sub" / "body_pose_model.pth").write_bytes(b"x")
    assert models.list_files("openpose") == ["sub/body_pose_model.pth"]
    assert models.find("openpose", "sub/body_pose_model.pth")
    (tmp_path / "outside.pth").write_bytes(b"x")
    assert models.find("openpose", "../outside.pth") is None  # a graph cannot reach outside the folder


def test_missing_files_error_names_file_and_folder(models_root):
    wanted = {"body": ("openpose", "body_pose_model.pth", "https://huggingface.co/lllyasviel/Annotators"),
              "detector": ("facedetection", "detection_Resnet50_Final.pth", None)}
    with pytest.raises(models.MissingModelFiles) as err:
        models.require(wanted)
    text = str(err.value)
    assert "body_pose_model.pth" in text and str(models_root / "openpose") in text
    assert "lllyasviel/Annotators" in text
    assert "detection_Resnet50_Final.pth" in text and "facedetection" in text
    (models_root / "openpose").mkdir(parents=True)
    (models_root / "openpose" / "body_pose_model.pth").write_bytes(b"x")
    assert [m[1] for m in models.missing(list(wanted.values()))] == ["detection_Resnet50_Final.pth"]
    (models_root / "facedetection").mkdir(parents=True)
    (models_root / "facedetection" / "detection_Resnet50_Final.pth").write_bytes(b"x")
    assert models.require(wanted) == {"body": str(models_root / "openpose" / "body_pose_model.pth"),
                                      "detector": str(models_root / "facedetection" / "detection_Resnet50_Final.pth")}
