"""Model folders: registration inside ComfyUI keeps user paths; lookups outside."""
import pytest

from conftest import pf
import host_stubs

models = pf("host.models")


def test_registration_keeps_user_paths(tmp_path, monkeypatch):
    user_dir = str(tmp_path / "shared" / "ipadapter")
    fp = host_stubs.folder_paths(tmp_path / "models", preset={
        "ipadapter": ([user_dir], set()),                      # from extra_model_paths.yaml
        "controlnet": ([str(tmp_path / "models" / "controlnet"), "/mnt/cn"], {".safetensors"}),
    })
    monkeypatch.setitem(__import__("sys").modules, "folder_paths", fp)
    models.register_folders()
    models.register_folders()  # idempotent
    assert fp.folder_names_and_paths["ipadapter"][0] == [user_dir]
    assert ".safetensors" in fp.folder_names_and_paths["ipadapter"][1]
    assert fp.folder_names_and_paths["controlnet"][0] == [str(tmp_path / "models" / "controlnet"), "/mnt/cn"]
    assert {".pth", ".safetensors"} <= fp.folder_names_and_paths["controlnet"][1]
    for name in models.FOLDERS:
        assert name in fp.folder_names_and_paths
    assert fp.folder_names_and_paths["openpose"][0] == [str(tmp_path / "models" / "openpose")]
    # lookups go through folder_paths, user folder first
    (tmp_path / "shared" / "ipadapter").mkdir(parents=True)
    (tmp_path / "shared" / "ipadapter" / "ip.safetensors").write_bytes(b"x")
    (tmp_path / "shared" / "ipadapter" / "notes.txt").write_text("x")
    assert models.list_files("ipadapter") == ["ip.safetensors"]
    assert models.find("ipadapter", "ip.safetensors") == str(tmp_path / "shared" / "ipadapter" / "ip.safetensors")


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
    wanted = [("openpose", "body_pose_model.pth", "https://huggingface.co/lllyasviel/Annotators"),
              ("facedetection", "detection_Resnet50_Final.pth", None)]
    with pytest.raises(models.MissingModelFiles) as err:
        models.require(wanted)
    text = str(err.value)
    assert "body_pose_model.pth" in text and str(models_root / "openpose") in text
    assert "lllyasviel/Annotators" in text
    assert "detection_Resnet50_Final.pth" in text and "facedetection" in text
    (models_root / "openpose").mkdir(parents=True)
    (models_root / "openpose" / "body_pose_model.pth").write_bytes(b"x")
    assert [m[1] for m in models.missing(wanted)] == ["detection_Resnet50_Final.pth"]
