"""The example workflows (example_workflows/): valid against the live node definitions, API twins
consistent with their UI graphs, and every API graph executed end to end - locally on the tiny
random-weight models, and on the fake Segmind - with stand-ins only for ComfyUI's LoadImage and
SaveImage. No Segmind key in the example files, the outputs, the log or the saved PNGs."""
import copy
import glob
import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import workflows
from conftest import PACK, pf
from fake_segmind import FakeSegmind
from real_comfyui import INPUT, SENTINEL  # noqa: F401 - shared with the real-ComfyUI tests

UI = {os.path.basename(p)[:-5]: json.load(open(p, encoding="utf-8"))
      for p in sorted(glob.glob(os.path.join(workflows.FOLDER, "*.json")))}
API = {os.path.basename(p)[:-5]: json.load(open(p, encoding="utf-8"))
       for p in sorted(glob.glob(os.path.join(workflows.API_FOLDER, "*.json")))}
TINY = {"ckpt_name": "tiny_sdxl.safetensors", "controlnet": "tiny-openpose-sdxl/diffusion_pytorch_model.safetensors",
        "ipadapter": "tiny-plus_vit-h.bin", "clip_vision": "tiny-vit-h/model.safetensors",
        "lora_name": "tiny-kohya.safetensors",
        "width": 64, "height": 64, "num_inference_steps": 2, "resolution": 64,
        "only_center_face": True}  # a random-weight RetinaFace sees faces everywhere: restore one


@pytest.fixture
def example_files(tmp_path):
    """A models root holding (empty) files under the names the examples use, so the file
    combos list them as they would for a user who downloaded the weights."""
    for spec in workflows.MODELS.values():
        path = tmp_path / spec["directory"] / spec["name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    models = pf("host.models")
    models.set_models_root(tmp_path)
    yield
    models.set_models_root(None)


def live_defs():
    return workflows.definitions_from_classes(PACK.NODE_CLASS_MAPPINGS)


# -- the files -------------------------------------------------------------------
def test_the_examples_and_their_twins_exist():
    assert set(UI) == set(workflows.EXAMPLES) == set(API)
    for name in UI:
        assert os.path.exists(os.path.join(workflows.FOLDER, name + ".jpg")), f"{name}.jpg thumbnail"


def test_every_example_is_valid_against_the_live_nodes(example_files):
    defs = live_defs()
    for name, ui in UI.items():
        assert workflows.problems(ui, defs) == [], name


def test_api_twins_match_their_ui_graphs_and_the_spec(example_files):
    defs = live_defs()
    for name, ui in UI.items():
        assert API[name] == workflows.to_api(ui, defs), f"{name}: run python tools/workflows.py"
    assert workflows.build(defs) == UI  # the files are what the spec writes today


def test_local_and_segmind_variants(example_files):
    for name, ui in UI.items():
        types = [n["type"] for n in ui["nodes"]]
        backends = {v for n in API[name].values() for k, v in n["inputs"].items() if k == "backend"}
        models = [m for n in ui["nodes"] for m in n["properties"].get("models", [])]
        if name.endswith("_segmind"):
            assert "PF_SDXLLoader" not in types and backends == {"segmind"} and models == []
        else:
            assert {"PF_SDXLLoader", "CheckpointLoaderSimple"} & set(types) and backends <= {"local"}
            assert all(m["url"].startswith("https://huggingface.co/") and m["name"].endswith(".safetensors")
                       for m in models) and len(models) >= 2
        for node in API[name].values():
            if node["class_type"] == "LoadImage":
                assert os.path.exists(os.path.join(INPUT, node["inputs"]["image"]))


@pytest.mark.parametrize("break_it,expected", [
    (lambda ui: ui["links"][0].__setitem__(5, "MASK"), "cannot enter"),
    (lambda ui: ui["nodes"][1]["widgets_values"].__setitem__(4, 99999), "outside"),
    (lambda ui: ui["nodes"][1]["widgets_values"].pop(), "widget values"),
    (lambda ui: ui["nodes"][0].__setitem__("type", "PF_Nope"), "no such node type"),
    (lambda ui: next(s for n in ui["nodes"] for s in n["inputs"] if s["name"] == "pose").__setitem__("link", None),
     "not connected"),
    (lambda ui: next(n for n in ui["nodes"] if n["type"] == "PF_SDXLOpenPose")["widgets_values"]
     .__setitem__(6, "Fast"), "is not one of"),
])
def test_the_checks_catch_broken_graphs(example_files, break_it, expected):
    ui = copy.deepcopy(UI["ipadapter_xl_openpose"])
    break_it(ui)
    assert any(expected in p for p in workflows.problems(ui, live_defs()))


# -- running the API graphs --------------------------------------------------------
class LoadImage:
    """ComfyUI's LoadImage, reduced: RGB -> IMAGE [1,H,W,3] in 0..1 and the MASK its alpha gives (1 where the
    image is transparent; empty without alpha)."""

    def load(self, image):
        with Image.open(os.path.join(INPUT, image)) as img:
            pixels = np.asarray(img.convert("RGB"), np.float32) / 255.0
            alpha = np.asarray(img.getchannel("A"), np.float32) / 255.0 if "A" in img.getbands() else None
        mask = torch.zeros(1, *pixels.shape[:2]) if alpha is None else 1.0 - torch.from_numpy(alpha)[None]
        return torch.from_numpy(pixels)[None], mask


class SaveImage:
    """ComfyUI's SaveImage, reduced: PNGs with the prompt and workflow in their metadata."""

    def __init__(self, folder, prompt, workflow):
        self.folder, self.prompt, self.workflow = folder, prompt, workflow

    def save(self, images, filename_prefix):
        saved = []
        for k, image in enumerate(images):
            info = PngInfo()
            info.add_text("prompt", json.dumps(self.prompt))
            info.add_text("workflow", json.dumps(self.workflow))
            name = f"{filename_prefix.replace('/', '_')}_{k:05}_.png"
            Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).save(
                os.path.join(self.folder, name), pnginfo=info)
            saved.append({"filename": name, "subfolder": "", "type": "output"})
        return {"ui": {"images": saved}}


def execute(api, ui, out_dir, overrides=None):
    """Run an API graph as ComfyUI's executor would: in dependency order, each input a
    widget value or an earlier node's output. Returns {node id: ui dict} (what /history holds)."""
    api = copy.deepcopy(api)
    for node in api.values():
        for name in node["inputs"]:
            if overrides and name in overrides:
                node["inputs"][name] = overrides[name]
    order = workflows.topological(list(api), [(v[0], n) for n, node in api.items()
                                              for v in node["inputs"].values() if isinstance(v, list)])
    results, history = {}, {}
    for node_id in order:
        node = api[node_id]
        kind = node["class_type"]
        inputs = {k: results[v[0]][v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
        if kind == "LoadImage":
            results[node_id] = LoadImage().load(**inputs)
            continue
        if kind == "SaveImage":
            history[node_id] = SaveImage(out_dir, api, ui).save(**inputs)["ui"]
            continue
        cls = PACK.NODE_CLASS_MAPPINGS[kind]
        out = getattr(cls(), cls.FUNCTION)(**inputs)
        if isinstance(out, dict):
            history[node_id] = out.get("ui", {})
            # `images` in a ui output is ComfyUI's image-preview list: ours must not use the name
            assert "images" not in history[node_id], (kind, history[node_id])
            out = out["result"]
        results[node_id] = out
    return history


def _ui_of(history, api, kind):
    return next(history[n] for n, node in api.items() if node["class_type"] == kind)


@pytest.fixture
def tiny_models(sdxl_files, ip_files, lora_files, cf_root, openpose_root, tiny_root, no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pf("host.models").set_models_root(tiny_root)
    yield tiny_root
    pf("host.models").set_models_root(None)


@pytest.mark.parametrize("name", ["ipadapter_xl_openpose", "sdxl_openpose_codeformer", "sdxl_openpose_lora",
                                  "sdxl_openpose_repose"])
def test_local_examples_run_end_to_end_on_tiny_models(tiny_models, tmp_path, name):
    history = execute(API[name], UI[name], str(tmp_path), TINY)
    pose = _ui_of(history, API[name], "PF_OpenPoseExtract")
    assert pose["backend"] == ["local"] and json.loads(pose["openpose_json"][0])[0]["canvas_width"] > 0
    sampler = _ui_of(history, API[name], "PF_SDXLOpenPose")
    assert sampler["backend"] == ["local"]
    saves = [h["images"][0]["filename"] for n, h in history.items() if API[name][n]["class_type"] == "SaveImage"]
    assert len(saves) == sum(node["class_type"] == "SaveImage" for node in API[name].values()) >= 1
    for file in saves:
        with Image.open(tmp_path / file) as img:
            assert img.size[0] >= 64 and json.loads(img.text["prompt"]) is not None
    if name == "sdxl_openpose_repose":  # the photo's own pixels wherever the feathered mask is 0
        sampler_inputs = next(n["inputs"] for n in API[name].values() if n["class_type"] == "PF_SDXLOpenPose")
        photo, mask = LoadImage().load(workflows.REPOSE_PHOTO)
        feathered = pf("local.inpaint").pixel_mask(mask, 512, 512, sampler_inputs["mask_grow"],
                                                    sampler_inputs["mask_feather"])[0]
        with Image.open(tmp_path / saves[0]) as img:
            out = np.asarray(img.convert("RGB"))
        original = (photo[0].numpy() * 255).round().astype(np.uint8)
        kept = (feathered == 0).numpy()
        assert kept.mean() > 0.5 and np.array_equal(out[kept], original[kept])
        assert np.abs(out[~kept].astype(int) - original[~kept]).mean() > 10


@pytest.fixture
def fake_segmind(monkeypatch, no_key, openpose_root):
    server = FakeSegmind(keys=(SENTINEL,), image_format="PNG").start()
    monkeypatch.setenv("SEGMIND_API_BASE", server.base_url)
    monkeypatch.setenv("SEGMIND_API_KEY", SENTINEL)
    pf("host.models").set_models_root(openpose_root)  # OpenPose runs here: there is no hosted pose endpoint
    yield server
    pf("host.models").set_models_root(None)
    server.stop()


@pytest.mark.parametrize("name", ["ipadapter_xl_openpose_segmind", "sdxl_openpose_codeformer_segmind"])
def test_segmind_examples_run_end_to_end_and_leak_no_key(fake_segmind, tmp_path, caplog, name):
    caplog.set_level(logging.DEBUG)
    history = execute(API[name], UI[name], str(tmp_path))
    slugs = sorted({slug for slug, _, _ in fake_segmind.requests})
    expected = {"ipadapter_xl_openpose_segmind": ["ip-sdxl-openpose"],
                "sdxl_openpose_codeformer_segmind": ["codeformer", "sdxl-openpose", "sdxl1.0-txt2img"]}[name]
    assert slugs == expected
    assert all(headers.get("x-api-key") == SENTINEL for _, headers, _ in fake_segmind.requests)
    for n, node in API[name].items():
        if node["class_type"].startswith("PF_") and node["class_type"] != "PF_OpenPoseExtract" and n in history:
            assert history[n]["backend"] == ["segmind"]
    leaks = {"history": json.dumps(history), "log": caplog.text,
             "example files": "".join(open(p, encoding="utf-8").read() for p in
                                      glob.glob(os.path.join(workflows.FOLDER, "**", "*.json"), recursive=True))}
    for png in tmp_path.glob("*.png"):
        leaks[png.name] = png.read_bytes().decode("latin-1")
    assert len(leaks) >= 4  # history, log, examples and at least one PNG
    for where, text in leaks.items():
        assert SENTINEL not in text, f"the Segmind key leaked into {where}"
