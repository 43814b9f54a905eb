"""The pack inside a real ComfyUI (COMFYUI_DIR), started with --cpu: a graph queued
through POST /prompt runs our nodes on tiny files, /history carries their outputs,
ComfyUI's memory manager lists our networks, and POST /free releases them.

COMFYUI_PYTHON names the Python that has ComfyUI's requirements (default: this one).
Skips when COMFYUI_DIR is not set."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory, cf_root, openpose_root):
    base = tmp_path_factory.mktemp("comfy")
    (base / "custom_nodes").mkdir()
    os.symlink(ROOT, base / "custom_nodes" / "PoseForge")
    for folder in ("openpose", "facerestore_models", "facedetection"):
        shutil.copytree(cf_root / folder, base / "models" / folder)
    (base / "input").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(base / "input" / "photo.png")
    port = _free_port()
    env = dict(os.environ, SEGMIND_API_KEY="", POSEFORGE_OFFLINE="1")
    log = open(base / "comfyui.log", "w")
    proc = subprocess.Popen([PYTHON, "main.py", "--cpu", "--base-directory", str(base), "--listen", "127.0.0.1",
                             "--port", str(port), "--disable-auto-launch"], cwd=COMFYUI_DIR, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail("ComfyUI exited:\n" + (base / "comfyui.log").read_text()[-4000:])
            try:
                _call(url + "/system_stats")
                break
            except OSError:
                time.sleep(0.5)
        yield url, base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _run(url, graph):
    queued = _call(url + "/prompt", {"prompt": graph, "client_id": "poseforge-test"})
    assert not queued.get("node_errors"), queued["node_errors"]  # else ComfyUI silently skips those nodes
    prompt_id = queued["prompt_id"]
    for _ in range(1200):
        history = _call(f"{url}/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            entry = history[prompt_id]
            assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
            return entry["outputs"]
        time.sleep(0.5)
    pytest.fail("the graph did not finish")


def test_pack_loads_and_registers_its_nodes(comfyui):
    url, base = comfyui
    info = _call(url + "/object_info")
    for node in ("PF_OpenPoseExtract", "PF_PoseRender", "PF_SDXLLoader", "PF_SDXLText2Image", "PF_SDXLOpenPose",
                 "PF_CodeFormer"):
        assert node in info, node
    log = (base / "comfyui.log").read_text()
    assert "IMPORT FAILED" not in "".join(l for l in log.splitlines() if "PoseForge" in l), log[-3000:]
    assert _call(url + "/poseforge/status")["segmind_key"] is False
    scripts = [e for e in _call(url + "/extensions") if e.startswith("/extensions/PoseForge/")]
    assert scripts == ["/extensions/PoseForge/poseforge.js"]
    with urllib.request.urlopen(url + scripts[0], timeout=30) as resp:
        assert b"PoseForge.status" in resp.read()


def test_graph_runs_and_free_releases_our_models(comfyui):
    url, base = comfyui
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
        "2": {"class_type": "PF_OpenPoseExtract", "inputs": {"image": ["1", 0], "detect_body": True,
                                                             "detect_hands": False, "detect_face": False,
                                                             "resolution": 128, "stick_width": 4}},
        "3": {"class_type": "PF_CodeFormer", "inputs": {"image": ["1", 0], "model": "codeformer.pth",
                                                        "fidelity": 0.5, "upscale": 1, "background_enhance": False,
                                                        "face_upsample": False, "only_center_face": True,
                                                        "detection_threshold": 0.05, "backend": "local",
                                                        "upscale_model": "none", "paste_mask": "parse",
                                                        "visibility": 1.0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "pf_face"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "pf_pose"}},
    }
    outputs = _run(url, graph)
    frames = json.loads(outputs["2"]["openpose_json"][0])
    assert frames[0]["canvas_width"] == 128 and frames[0]["canvas_height"] == 96
    assert outputs["2"]["backend"] == ["local"] and outputs["3"]["backend"] == ["local"]
    assert outputs["3"]["faces"] == [1]
    saved = outputs["4"]["images"][0]
    with Image.open(base / "output" / saved["subfolder"] / saved["filename"]) as img:
        assert img.size == (128, 96)
    loaded = {m["model"]: m["bytes"] for m in _call(url + "/poseforge/status")["loaded"]}
    assert {"openpose/body", "codeformer", "retinaface", "parsenet"} <= set(loaded)
    assert all(size > 1_000_000 for size in loaded.values())
    _call(url + "/free", {"unload_models": True, "free_memory": True})
    for _ in range(60):
        if not _call(url + "/poseforge/status")["loaded"]:
            break
        time.sleep(0.5)
    assert _call(url + "/poseforge/status")["loaded"] == []
