"""The real ComfyUI (COMFYUI_DIR) the integration and editor tests share: one server a session,
started with --cpu on a base directory of the tiny models (hard links, no copies), the example
photos and a fake Segmind it reaches with a sentinel key; helpers to queue graphs as
tools/queue_example.py does and to drive its editor in headless Chromium (selenium).

COMFYUI_PYTHON names the Python that has ComfyUI's requirements (default: this one)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import queue_example
import workflows
from fake_segmind import FakeSegmind

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
PYTHON = os.environ.get("COMFYUI_PYTHON", sys.executable)
SENTINEL = "SG_sentinel_0f1e2d3c4b5a6978"
INPUT = os.path.join(workflows.FOLDER, "input")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


call = queue_example.call


@pytest.fixture(scope="session")
def segmind():
    server = FakeSegmind(keys=(SENTINEL,), image_format="PNG").start()
    yield server
    server.stop()


# The newest frontend on the registry (comfyui-frontend-package's static/ folder: .ci/run downloads
# its wheel and unpacks it in .venv), served by a second ComfyUI with --front-end-root: the editor
# tests run on it too, in its classic canvas and its Vue node rendering.
NEWEST_FRONTEND = os.environ.get("POSEFORGE_NEWEST_FRONTEND")


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory, comfy_files):
    """The ComfyUI of COMFYUI_DIR with the frontend it pins: (url, base directory)."""
    yield from _serve(tmp_path_factory.mktemp("comfy"), comfy_files)


@pytest.fixture(scope="session")
def comfyui_newest(tmp_path_factory, comfy_files):
    """The same ComfyUI serving the newest frontend (POSEFORGE_NEWEST_FRONTEND): (url, base directory)."""
    if not NEWEST_FRONTEND or not os.path.isfile(os.path.join(NEWEST_FRONTEND, "index.html")):
        pytest.skip("set POSEFORGE_NEWEST_FRONTEND to comfyui-frontend-package's static/ folder (.ci/run does)")
    yield from _serve(tmp_path_factory.mktemp("comfy_newest"), comfy_files, ["--front-end-root", NEWEST_FRONTEND])


@pytest.fixture(scope="session")
def comfy_files(cf_root, openpose_root, sdxl_files, ip_files, lora_files, dwpose_files, core_files, tiny_root,
                segmind):
    """What a base directory holds: the tiny models' folders, DWPose's TorchScript files, the fake Segmind."""
    return tiny_root, dwpose_files, segmind


def _serve(base, files, extra=()):
    tiny_root, dwpose_files, segmind = files
    (base / "custom_nodes").mkdir()
    os.symlink(ROOT, base / "custom_nodes" / "PoseForge")
    os.symlink(os.path.join(ROOT, "tests", "tiny_comfy"), base / "custom_nodes" / "tiny_comfy")  # core loads the tiny SDXL
    for folder in ("openpose", "facerestore_models", "facedetection", "checkpoints", "controlnet", "ipadapter",
                   "clip_vision", "loras"):
        shutil.copytree(tiny_root / folder, base / "models" / folder, copy_function=os.link)  # no 1 GB copy
    for path in dwpose_files[1]["torchscript"]:  # DWPose beside OpenPose, as TorchScript: Residents ComfyUI sees
        os.link(path, base / "models" / "openpose" / os.path.basename(path))
    for spec in workflows.MODELS.values():  # the examples' file names, listed as a user's would be
        (base / "models" / spec["directory"] / spec["name"]).write_bytes(b"")
    shutil.copytree(INPUT, base / "input")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(base / "input" / "photo.png")
    port = _free_port()
    env = dict(os.environ, SEGMIND_API_KEY=SENTINEL, SEGMIND_API_BASE=segmind.base_url, HF_HUB_OFFLINE="1",
               POSEFORGE_ALLOW_TORCHSCRIPT="1")  # our own TorchScript files, trusted
    env.pop("POSEFORGE_OFFLINE", None)
    log = open(base / "comfyui.log", "w")
    proc = subprocess.Popen([PYTHON, "main.py", "--cpu", "--base-directory", str(base), "--listen", "127.0.0.1",
                             "--port", str(port), "--disable-auto-launch", *extra], cwd=COMFYUI_DIR, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                pytest.fail("ComfyUI exited:\n" + (base / "comfyui.log").read_text()[-4000:])
            try:
                call(url + "/system_stats")
                break
            except OSError:
                time.sleep(0.5)
        else:  # never answered: fail here, not in every test that would use it
            pytest.fail("ComfyUI did not answer in 300 s:\n" + (base / "comfyui.log").read_text()[-4000:])
        yield url, base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def run(url, graph, workflow=None):
    """Queue `graph` and wait, as tools/queue_example.py (the README's API-mode script) does."""
    entry = queue_example.wait(url, queue_example.queue(url, graph, workflow), timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-3000:]
    return entry["outputs"]


def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian's chromium and chromium-driver are needed for the editor check")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    return webdriver.Chrome(options=options, service=service)


LOAD = """const done = arguments[arguments.length - 1];
(async () => {
  await window.app.loadGraphData(arguments[0]);
  const types = window.app.graph._nodes.map((n) => n.type);
  done({missing: types.filter((t) => !LiteGraph.registered_node_types[t]), count: types.length});
})().catch((e) => done({error: String(e)}));"""


