"""The pack inside a real ComfyUI (COMFYUI_DIR), started with --cpu: a graph queued
through POST /prompt runs our nodes on tiny files, /history carries their outputs,
ComfyUI's memory manager lists our networks, and POST /free releases them; every
example API graph completes (local ones on the tiny models, Segmind ones against the
fake Segmind, with a sentinel key that must not appear in /history, the log or the
PNGs); every UI example is valid against ComfyUI's own /object_info and, when
Chromium and chromedriver are installed, loads in the real editor with no missing
node and no console error from our scripts (POSEFORGE_SCREENSHOTS=<dir> keeps a
screenshot of each).

COMFYUI_PYTHON names the Python that has ComfyUI's requirements (default: this one).
Skips when COMFYUI_DIR is not set."""
import json
import os
import time
import urllib.request

import pytest
from PIL import Image

import queue_example
import workflows
from real_comfyui import COMFYUI_DIR, LOAD, SENTINEL, browser as _browser, call as _call, run as _run
from test_workflows import API, TINY, UI

pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")


def test_pack_loads_and_registers_its_nodes(comfyui):
    url, base = comfyui
    info = _call(url + "/object_info")
    for node in ("PF_OpenPoseExtract", "PF_PoseRender", "PF_IPAdapter", "PF_SDXLLoader", "PF_SDXLText2Image",
                 "PF_SDXLOpenPose", "PF_CodeFormer"):
        assert node in info, node
    log = (base / "comfyui.log").read_text()
    assert "IMPORT FAILED" not in "".join(l for l in log.splitlines() if "PoseForge" in l), log[-3000:]
    status = _call(url + "/poseforge/status")
    assert status["segmind_key"] is True and SENTINEL not in json.dumps(status)
    scripts = sorted(e for e in _call(url + "/extensions") if e.startswith("/extensions/PoseForge/"))
    assert scripts == [f"/extensions/PoseForge/{name}.js" for name in ("pose_editor", "pose_library", "pose_model",
                                                                       "poseforge")]
    for script, name in zip(scripts, (b"PoseForge.poseEditor", b"/userdata", b"export function parseFrames",
                                      b"PoseForge.status")):
        with urllib.request.urlopen(url + script, timeout=30) as resp:
            assert name in resp.read()


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
    graph["6"] = json.loads(json.dumps(graph["3"]))  # RestoreFormer++ (as released: a Lightning .ckpt)
    graph["6"]["inputs"].update(model="RestoreFormer++.ckpt", paste_mask="square")
    graph["7"] = {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "pf_face_rfpp"}}
    outputs = _run(url, graph)
    assert outputs["6"]["faces"] == [1] and outputs["6"]["backend"] == ["local"]
    frames = json.loads(outputs["2"]["openpose_json"][0])
    assert frames[0]["canvas_width"] == 128 and frames[0]["canvas_height"] == 96
    assert outputs["2"]["backend"] == ["local"] and outputs["3"]["backend"] == ["local"]
    assert outputs["3"]["faces"] == [1]
    saved = outputs["4"]["images"][0]
    with Image.open(base / "output" / saved["subfolder"] / saved["filename"]) as img:
        assert img.size == (128, 96)
    loaded = {m["model"]: m["bytes"] for m in _call(url + "/poseforge/status")["loaded"]}
    assert {"openpose/body", "restorer", "retinaface", "parsenet"} <= set(loaded)
    assert all(size > 1_000_000 for size in loaded.values())
    _call(url + "/free", {"unload_models": True, "free_memory": True})
    for _ in range(60):
        if not _call(url + "/poseforge/status")["loaded"]:
            break
        time.sleep(0.5)
    assert _call(url + "/poseforge/status")["loaded"] == []


def test_dwpose_runs_through_prompt_and_its_networks_are_comfyuis(comfyui):
    url, base = comfyui
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "poseforge_astronaut.jpg"}},
        "2": {"class_type": "PF_OpenPoseExtract", "inputs": {"image": ["1", 0], "detect_body": True,
                                                             "detect_hands": True, "detect_face": True,
                                                             "resolution": 128, "stick_width": 4,
                                                             "detector": "dwpose"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "pf_dwpose"}},
    }
    outputs = _run(url, graph)
    frames = json.loads(outputs["2"]["openpose_json"][0])
    assert outputs["2"]["detector"] == ["dwpose"] and outputs["2"]["people"] == [2]  # the crafted detector's two
    assert len(frames[0]["people"][0]["hand_left_keypoints_2d"]) == 63
    assert len(frames[0]["people"][0]["face_keypoints_2d"]) == 210
    loaded = {m["model"] for m in _call(url + "/poseforge/status")["loaded"]}
    assert "dwpose" in loaded


# -- the example workflows ------------------------------------------------------------
def test_ui_examples_are_valid_against_comfyuis_object_info(comfyui):
    url, _ = comfyui
    defs = _call(url + "/object_info")
    for name, ui in UI.items():
        assert workflows.problems(ui, defs) == [], name
    templates = _call(url + "/workflow_templates")
    assert sorted(templates["PoseForge"]) == sorted(UI)  # the API twins (api/) are not offered as templates
    with urllib.request.urlopen(f"{url}/api/workflow_templates/PoseForge/{next(iter(UI))}.jpg", timeout=30) as r:
        assert r.headers["Content-Type"] == "image/jpeg"


# ComfyUI validates widget ranges, so the tiny runs keep SDXL's 512 minimum
IN_COMFYUI = dict(TINY, width=512, height=512, resolution=128)
CORE_NODES = {"CheckpointLoaderSimple": {"ckpt_name": "tiny_sdxl_core.safetensors"},  # tests/tiny_comfy
              "ControlNetLoader": {"control_net_name": "tiny-openpose-sdxl-ldm.safetensors"},
              "KSampler": {"steps": 2}}


@pytest.mark.parametrize("name", sorted(API))
def test_api_examples_complete_through_prompt(comfyui, name, tmp_path):
    url, base = comfyui
    graph = json.loads(json.dumps(API[name]))
    if not name.endswith("_segmind"):
        for node in graph.values():
            node["inputs"].update({k: v for k, v in IN_COMFYUI.items() if k in node["inputs"]})
            node["inputs"].update(CORE_NODES.get(node["class_type"], {}))
    outputs = _run(url, graph, workflow=UI[name])
    kinds = {n: node["class_type"] for n, node in graph.items()}
    pose = next(outputs[n] for n, k in kinds.items() if k == "PF_OpenPoseExtract")
    assert json.loads(pose["openpose_json"][0])[0]["canvas_width"] > 0
    backend = "segmind" if name.endswith("_segmind") else "local"
    for n, kind in kinds.items():
        if kind in ("PF_SDXLOpenPose", "PF_SDXLText2Image", "PF_CodeFormer"):
            assert outputs[n]["backend"] == [backend], (n, kind)
        if kind == "SaveImage":
            saved = outputs[n]["images"][0]
            with Image.open(base / "output" / saved["subfolder"] / saved["filename"]) as img:
                assert img.size[0] >= 128 and "workflow" in img.info
    fetched = queue_example.download(url, outputs, str(tmp_path))  # through GET /view, as the script does
    assert len(fetched) == sum(k == "SaveImage" for k in kinds.values())


def test_segmind_examples_validate_whatever_files_the_local_folders_hold(comfyui):
    """A Segmind graph names no local file it needs: ComfyUI accepts it when the user's ipadapter,
    clip_vision and facerestore_models folders hold other files than the graph names (VALIDATE_INPUTS);
    a local CodeFormer run still asks for a file that is there."""
    url, _ = comfyui
    others = {"ipadapter": "someone-elses-adapter.safetensors", "clip_vision": "someone-elses-encoder.safetensors",
              "model": "someone-elses-restorer.pth"}
    for name in ("ipadapter_xl_openpose_segmind", "sdxl_openpose_codeformer_segmind"):
        graph = json.loads(json.dumps(API[name]))
        for node in graph.values():
            node["inputs"].update({k: v for k, v in others.items() if k in node["inputs"]})
        _run(url, graph)
    local = json.loads(json.dumps(API["sdxl_openpose_codeformer_segmind"]))
    face = next(n for n in local.values() if n["class_type"] == "PF_CodeFormer")
    face["inputs"].update(model=others["model"], backend="local")
    with pytest.raises(RuntimeError, match="not a face restorer file .* in models/facerestore_models"):
        queue_example.queue(url, local)


def test_no_segmind_key_in_history_log_or_pngs(comfyui):
    url, base = comfyui
    history = json.dumps(_call(url + "/history"))
    assert "ip-sdxl-openpose" in (base / "comfyui.log").read_text() or "segmind" in history
    places = {"/history": history, "log": (base / "comfyui.log").read_text()}
    for png in (base / "output").rglob("*.png"):
        places[str(png.name)] = png.read_bytes().decode("latin-1")
    assert len(places) > 4
    for where, text in places.items():
        assert SENTINEL not in text, f"the Segmind key leaked into {where}"


def test_ui_examples_load_in_the_real_editor(comfyui):
    url, _ = comfyui
    for setting, value in (("Comfy.TutorialCompleted", True), ("Comfy.Minimap.Visible", False)):
        _call(f"{url}/settings/{setting}", value)  # no first-run template dialog over the graph
    driver = _browser()
    shots = os.environ.get("POSEFORGE_SCREENSHOTS")
    try:
        driver.set_script_timeout(60)
        driver.get(url)
        for _ in range(120):
            if driver.execute_script("return !!(window.app && window.app.graph && window.LiteGraph "
                                     "&& LiteGraph.registered_node_types['PF_SDXLOpenPose'])"):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the editor did not register PoseForge's nodes")
        for name, ui in UI.items():
            result = driver.execute_async_script(LOAD, ui)
            assert "error" not in result, result
            assert result["missing"] == [] and result["count"] == len(ui["nodes"]), (name, result)
            time.sleep(1.5)
            if shots:
                os.makedirs(shots, exist_ok=True)
                driver.save_screenshot(os.path.join(shots, name + ".png"))
        # queue a Segmind example from the editor: our extension writes under the node what ran
        driver.execute_async_script(LOAD, UI["ipadapter_xl_openpose_segmind"])
        driver.execute_script("window.app.queuePrompt(0, 1)")
        shown = ""
        for _ in range(240):
            shown = driver.execute_script("return window.app.graph._nodes.filter((n) => "
                                          "n.type === 'PF_SDXLOpenPose').map((n) => n.pfLastRun || '')[0]")
            if shown:
                break
            time.sleep(0.5)
        assert "ran on segmind" in shown and "cost $" in shown and "credits left" in shown, shown
        ours = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
                and ("PoseForge" in e["message"] or "poseforge" in e["message"])]
        assert ours == [], ours
    finally:
        driver.quit()
