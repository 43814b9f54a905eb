"""The example workflows: built from one spec per recipe, checked against node definitions.

    python tools/workflows.py          # rewrite example_workflows/*.json and api/*.json

A UI graph (format 0.4, what the editor and its template browser load) is written from
the live node definitions, so widget values sit in INPUT_TYPES order (with the extra
values the editor adds: the seed's control_after_generate, LoadImage's upload);
its API twin (for POST /prompt) is derived from it by `to_api`. `problems()` checks
a UI graph against node definitions (ours live, or ComfyUI's `/object_info`):
node types, link types at both ends, widget values (count, choices, ranges),
required inputs connected. The tests use both; nothing here imports ComfyUI.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "example_workflows")
API_FOLDER = os.path.join(FOLDER, "api")
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
SEED_CONTROLS = ("fixed", "increment", "decrement", "randomize")

# ComfyUI's own nodes the examples use, as its /object_info describes them (0.3.64).
CORE = {
    "LoadImage": {"display_name": "Load Image", "input": {"required": {"image": [["poseforge_astronaut.jpg", "poseforge_deep_field.jpg",
                                                                                 "poseforge_astronaut_repose.png"],
                                                   {"image_upload": True}]}},
                  "output": ["IMAGE", "MASK"], "output_name": ["IMAGE", "MASK"]},
    "SaveImage": {"display_name": "Save Image", "input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}},
                  "output": [], "output_name": [], "output_node": True},
    "CheckpointLoaderSimple": {"display_name": "Load Checkpoint", "input": {"required": {
        "ckpt_name": [["sd_xl_base_1.0.safetensors"]]}}, "output": ["MODEL", "CLIP", "VAE"],
        "output_name": ["MODEL", "CLIP", "VAE"]},
    "CLIPTextEncode": {"display_name": "CLIP Text Encode (Prompt)", "input": {"required": {
        "text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP"]}},
        "output": ["CONDITIONING"], "output_name": ["CONDITIONING"]},
    "KSampler": {"display_name": "KSampler", "input": {"required": {
        "model": ["MODEL"], "seed": ["INT", {"default": 0, "min": 0, "max": 18446744073709551615,
                                             "control_after_generate": True}],
        "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
        "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
        "sampler_name": [["euler", "euler_ancestral", "dpmpp_2m"]], "scheduler": [["simple", "normal", "karras"]],
        "positive": ["CONDITIONING"], "negative": ["CONDITIONING"], "latent_image": ["LATENT"],
        "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]}},
        "output": ["LATENT"], "output_name": ["LATENT"]},
    "EmptyLatentImage": {"display_name": "Empty Latent Image", "input": {"required": {
        "width": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}],
        "height": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}],
        "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}]}}, "output": ["LATENT"], "output_name": ["LATENT"]},
    "VAEDecode": {"display_name": "VAE Decode", "input": {"required": {"samples": ["LATENT"], "vae": ["VAE"]}},
                  "output": ["IMAGE"], "output_name": ["IMAGE"]},
    "ControlNetLoader": {"display_name": "Load ControlNet Model", "input": {"required": {
        "control_net_name": [["OpenPoseXL2.safetensors"]]}}, "output": ["CONTROL_NET"], "output_name": ["CONTROL_NET"]},
    "ControlNetApplyAdvanced": {"display_name": "Apply ControlNet", "input": {"required": {
        "positive": ["CONDITIONING"], "negative": ["CONDITIONING"], "control_net": ["CONTROL_NET"], "image": ["IMAGE"],
        "strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}],
        "start_percent": ["FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001}],
        "end_percent": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001}]},
        "optional": {"vae": ["VAE"]}}, "output": ["CONDITIONING", "CONDITIONING"], "output_name": ["positive", "negative"]},
    "LatentUpscaleBy": {"display_name": "Upscale Latent By", "input": {"required": {
        "samples": ["LATENT"], "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]],
        "scale_by": ["FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01}]}},
        "output": ["LATENT"], "output_name": ["LATENT"]},
}

HF = "https://huggingface.co"
MODELS = {
    "sdxl": {"name": "sd_xl_base_1.0.safetensors", "directory": "checkpoints",
             "url": f"{HF}/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors"},
    "controlnet": {"name": "OpenPoseXL2.safetensors", "directory": "controlnet",
                   "url": f"{HF}/thibaud/controlnet-openpose-sdxl-1.0/resolve/main/OpenPoseXL2.safetensors"},
    "ipadapter": {"name": "ip-adapter-plus_sdxl_vit-h.safetensors", "directory": "ipadapter",
                  "url": f"{HF}/h94/IP-Adapter/resolve/main/sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors"},
    "clip_vision": {"name": "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "directory": "clip_vision",
                    "url": f"{HF}/h94/IP-Adapter/resolve/main/models/image_encoder/model.safetensors"},
    "lora": {"name": "pixel-art-xl.safetensors", "directory": "loras",
             "url": f"{HF}/nerijs/pixel-art-xl/resolve/main/pixel-art-xl.safetensors"},
}
POSE_PHOTO, IMAGE_PROMPT = "poseforge_astronaut.jpg", "poseforge_deep_field.jpg"
REPOSE_PHOTO = "poseforge_astronaut_repose.png"  # the pose photo, transparent where the arm is drawn again
# COCO-18 body points of the pose photo (512x512), placed by hand, her right arm raised to wave: the re-pose
ASTRONAUT_WAVING = [(222, 122), (225, 235), (110, 270), (45, 175), (75, 60), (330, 275), (355, 420), (300, 470),
                    (0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (200, 100), (245, 100), (165, 110), (285, 110)]


# -- node definitions ------------------------------------------------------------
def definitions_from_classes(mappings):
    """{node type: /object_info-style definition} of node classes (ours, live) plus CORE."""
    defs = dict(CORE)
    for name, cls in mappings.items():
        defs[name] = {"display_name": getattr(cls, "DISPLAY_NAME", name), "input": cls.INPUT_TYPES(), "output": list(cls.RETURN_TYPES),
                      "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
                      "output_node": getattr(cls, "OUTPUT_NODE", False)}
    return defs


def inputs_of(definition):
    """[(name, type, options, required)] in order; type 'COMBO' with options['choices'] for lists."""
    out = []
    for section in ("required", "optional"):
        for name, spec in definition["input"].get(section, {}).items():
            kind = spec[0]
            opts = dict(spec[1]) if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(kind, (list, tuple)):
                kind, opts["choices"] = "COMBO", list(kind)
            elif kind == "COMBO":
                opts["choices"] = list(opts.get("options", []))
            out.append((name, kind, opts, section == "required"))
    return out


def is_widget(kind, opts):
    return kind in WIDGET_TYPES and not opts.get("forceInput")


def widget_slots(definition):
    """[(input name or None for an editor-only value, type, options)] in widgets_values order."""
    slots = []
    for name, kind, opts, _ in inputs_of(definition):
        if not is_widget(kind, opts):
            continue
        slots.append((name, kind, opts))
        if kind == "INT" and opts.get("control_after_generate"):
            slots.append((None, "control_after_generate", {}))
        if opts.get("image_upload"):
            slots.append((None, "upload", {}))
    return slots


def sockets(definition):
    return [(name, kind, required) for name, kind, opts, required in inputs_of(definition)
            if not is_widget(kind, opts)]


# -- building a UI graph -----------------------------------------------------------
class Graph:
    """A UI-format graph under construction: add(...) nodes, connect by (node id, output slot)."""

    def __init__(self, defs):
        self.defs, self.nodes, self.links = defs, [], []

    def add(self, node_type, pos, widgets=None, links=None, size=(320, 200), title=None, models=()):
        """`widgets` {input name: value} over the defaults; `links` {input name: (node id, slot)}."""
        definition = self.defs[node_type]
        node_id = len(self.nodes) + 1
        values = []
        for name, kind, opts in widget_slots(definition):
            if name is None:
                values.append("fixed" if kind == "control_after_generate" else "image")
            else:
                default = opts.get("default", opts.get("choices", [None])[0] if kind == "COMBO" else None)
                values.append((widgets or {}).get(name, default))
        unknown = set(widgets or {}) - {n for n, _, _ in widget_slots(definition)}
        assert not unknown, f"{node_type} has no widget(s) {unknown}"
        node = {"id": node_id, "type": node_type, "pos": list(pos), "size": list(size), "flags": {}, "order": 0,
                "mode": 0, "inputs": [], "outputs": [],
                "properties": {"Node name for S&R": node_type}, "widgets_values": values}
        if title:
            node["title"] = title
        if models:
            node["properties"]["models"] = [dict(MODELS[m]) for m in models]
        for slot, (kind, name) in enumerate(zip(definition["output"], definition["output_name"])):
            node["outputs"].append({"name": name, "type": kind, "links": [], "slot_index": slot})
        for name, kind, _ in sockets(definition):
            node["inputs"].append({"name": name, "type": kind, "link": None})
        self.nodes.append(node)
        for name, (origin, slot) in (links or {}).items():
            self.connect(origin, slot, node_id, name)
        return node_id

    def connect(self, origin_id, origin_slot, target_id, input_name):
        origin, target = self.nodes[origin_id - 1], self.nodes[target_id - 1]
        link_id = len(self.links) + 1
        kind = origin["outputs"][origin_slot]["type"]
        target_slot = next(i for i, s in enumerate(target["inputs"]) if s["name"] == input_name)
        target["inputs"][target_slot]["link"] = link_id
        origin["outputs"][origin_slot]["links"].append(link_id)
        self.links.append([link_id, origin_id, origin_slot, target_id, target_slot, kind])

    def ui(self):
        order = topological([n["id"] for n in self.nodes],
                            [(link[1], link[3]) for link in self.links])
        for index, node_id in enumerate(order):
            self.nodes[node_id - 1]["order"] = index
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {},
                "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}}, "version": 0.4}


def topological(ids, edges):
    """`ids` ordered so every edge (a, b) has a before b (stable otherwise)."""
    done, order = set(), []

    def visit(n):
        if n in done:
            return
        done.add(n)
        for a, b in edges:
            if b == n:
                visit(a)
        order.append(n)

    for n in ids:
        visit(n)
    return order


# -- UI -> API, and checks -------------------------------------------------------
def to_api(ui, defs):
    """The API-format twin of a UI graph: {id: {class_type, inputs, _meta}}."""
    links = {link[0]: link for link in ui["links"]}
    api = {}
    for node in sorted(ui["nodes"], key=lambda n: n["order"]):
        inputs = {}
        for (name, _, _), value in zip(widget_slots(defs[node["type"]]), node["widgets_values"]):
            if name is not None:
                inputs[name] = value
        for slot in node["inputs"]:
            if slot["link"] is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                "_meta": {"title": node.get("title") or defs[node["type"]].get("display_name",
                                                                                              node["type"])}}
    return api


def _accepts(input_type, link_type):
    return input_type == "*" or link_type in input_type.split(",")


def _value_problem(name, kind, opts, value):
    if kind == "control_after_generate":
        return None if value in SEED_CONTROLS else f"{value!r} is not a seed control"
    if kind == "upload":
        return None
    if kind == "COMBO":
        return None if value in opts["choices"] else f"{value!r} is not one of {opts['choices'][:8]}"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{value!r} is not a boolean"
    if kind == "STRING":
        return None if isinstance(value, str) else f"{value!r} is not text"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and value != int(value)):
        return f"{value!r} is not a {kind}"
    lo, hi = opts.get("min"), opts.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return f"{value} is outside {lo}..{hi}"
    return None


def problems(ui, defs):
    """Everything wrong with a UI graph against node definitions (empty list: none)."""
    found = []
    nodes = {n["id"]: n for n in ui["nodes"]}
    for node in ui["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        if node["type"] not in defs:
            found.append(f"{where}: no such node type")
            continue
        definition = defs[node["type"]]
        slots = widget_slots(definition)
        values = node.get("widgets_values", [])
        if len(values) != len(slots):
            found.append(f"{where}: {len(values)} widget values for {len(slots)} widgets")
        for (name, kind, opts), value in zip(slots, values):
            problem = _value_problem(name, kind, opts, value)
            if problem:
                found.append(f"{where}: {name or kind}: {problem}")
        expected = sockets(definition)
        if [s["name"] for s in node["inputs"]] != [name for name, _, _ in expected]:
            found.append(f"{where}: input slots {[s['name'] for s in node['inputs']]} are not "
                         f"{[name for name, _, _ in expected]}")
        for name, _, required in expected:
            slot = next((s for s in node["inputs"] if s["name"] == name), None)
            if required and (slot is None or slot["link"] is None):
                found.append(f"{where}: required input {name} is not connected")
        if [o["type"] for o in node["outputs"]] != list(definition["output"]):
            found.append(f"{where}: outputs {[o['type'] for o in node['outputs']]} are not {definition['output']}")
    for link_id, origin, o_slot, target, t_slot, kind in ui["links"]:
        if origin not in nodes or target not in nodes:
            found.append(f"link {link_id}: joins a node that does not exist")
            continue
        out = nodes[origin]["outputs"][o_slot]
        into = nodes[target]["inputs"][t_slot]
        if out["type"] != kind or link_id not in (out.get("links") or []):
            found.append(f"link {link_id}: {kind} does not leave node {origin} output {o_slot} ({out['type']})")
        if into["link"] != link_id or not _accepts(into["type"], kind):
            found.append(f"link {link_id}: {kind} cannot enter node {target} input {into['name']} ({into['type']})")
    return found


# -- the examples -------------------------------------------------------------------
NEGATIVE = "blurry, lowres, deformed hands, extra limbs, watermark, text"


def sdxl_loader(g, pos):
    """The local variants' PF_SDXLLoader: SDXL base + thibaud's OpenPose ControlNet, with their links."""
    return g.add("PF_SDXLLoader", pos, {"ckpt_name": MODELS["sdxl"]["name"],
                                        "controlnet": MODELS["controlnet"]["name"]},
                 size=(330, 130), models=("sdxl", "controlnet"))


def ipadapter_openpose(defs, segmind):
    """Recipe 1: pose from a photo (OpenPose), look from an image prompt (IP-Adapter), text refines."""
    g = Graph(defs)
    backend = "segmind" if segmind else "local"
    photo = g.add("LoadImage", (0, 0), {"image": POSE_PHOTO}, size=(300, 360), title="Pose reference photo")
    pose = g.add("PF_OpenPoseExtract", (340, 0), {"detect_hands": not segmind, "detect_face": not segmind},
                 {"image": (photo, 0)}, size=(300, 200))
    ref = g.add("LoadImage", (0, 400), {"image": IMAGE_PROMPT}, size=(300, 360), title="Image prompt")
    ip = g.add("PF_IPAdapter", (340, 400), {"ip_adapter_scale": 0.6}, {"image": (ref, 0)}, size=(330, 220),
               models=() if segmind else ("ipadapter", "clip_vision"))
    links = {"pose": (pose, 2), "ip_adapter": (ip, 0)}
    if not segmind:
        links["sdxl"] = (sdxl_loader(g, (340, 660)), 0)
    sampler = g.add("PF_SDXLOpenPose", (720, 0), {
        "prompt": "portrait of an astronaut, glowing nebula colours, deep space light, highly detailed",
        "negative_prompt": NEGATIVE, "seed": 42, "controlnet_scale": 0.8, "backend": backend,
        "scheduler": pose_scheduler(segmind)}, links,
        size=(380, 620))
    g.add("SaveImage", (1140, 0), {"filename_prefix": "PoseForge/ipadapter_openpose"}, {"images": (sampler, 0)},
          size=(420, 460))
    g.add("SaveImage", (1140, 500), {"filename_prefix": "PoseForge/pose_map"}, {"images": (pose, 0)},
          size=(420, 400))
    return g.ui()


def pose_scheduler(segmind):
    """Segmind's own default on Segmind; locally the best image per second: one UNet evaluation a step
    (DPM2 Karras takes two)."""
    return "DPM2 Karras" if segmind else "DPM++ 2M Karras"


def sdxl_openpose_codeformer(defs, segmind):
    """Recipe 2: SDXL draws a person, OpenPose takes the pose, SDXL draws again in it, CodeFormer fixes faces."""
    g = Graph(defs)
    backend = "segmind" if segmind else "local"
    links = {}
    if not segmind:
        links["sdxl"] = (sdxl_loader(g, (0, 0)), 0)
    first = g.add("PF_SDXLText2Image", (0, 180), {
        "prompt": "full body photo of a dancer mid-leap on a stage, studio light, sharp focus",
        "negative_prompt": NEGATIVE, "seed": 7, "backend": backend}, dict(links), size=(360, 560))
    pose = g.add("PF_OpenPoseExtract", (400, 180), {"detect_hands": not segmind, "detect_face": not segmind},
                 {"image": (first, 0)}, size=(300, 200))
    second = g.add("PF_SDXLOpenPose", (740, 0), {
        "prompt": "a knight in silver armour in the same pose, cinematic light, detailed face",
        "negative_prompt": NEGATIVE, "seed": 11, "controlnet_scale": 0.8, "backend": backend,
        "scheduler": pose_scheduler(segmind)}, dict(links, pose=(pose, 2)), size=(380, 620))
    face = g.add("PF_CodeFormer", (1160, 0), {"fidelity": 0.7, "backend": backend,
                                               "paste_mask": "square" if segmind else "parse"},
                 {"image": (second, 0)}, size=(330, 380))
    g.add("SaveImage", (400, 440), {"filename_prefix": "PoseForge/sdxl_first"}, {"images": (first, 0)},
          size=(300, 340))
    g.add("SaveImage", (1530, 0), {"filename_prefix": "PoseForge/sdxl_openpose_codeformer"},
          {"images": (face, 0)}, size=(420, 460))
    return g.ui()


LONG_PROMPT = ("pixel art, (a knight in silver armour:1.3) standing in the same pose, ((detailed face)), "
               "a castle courtyard at dusk, warm torch light on the stone walls, banners moving in the wind, "
               "a stone fountain and ivy on the towers behind him, (soft rim light:0.8), crisp outlines, "
               "limited palette, sixteen-bit video game sprite style, clean background, high contrast, "
               "sharp pixels, no blur, \\(retro\\) game art")


def sdxl_openpose_lora(defs, segmind):
    """Recipe 3 (local only): the pose from a photo, SDXL with a style LoRA and a long weighted prompt."""
    g = Graph(defs)
    photo = g.add("LoadImage", (0, 0), {"image": POSE_PHOTO}, size=(300, 360), title="Pose reference photo")
    pose = g.add("PF_OpenPoseExtract", (340, 0), {"detect_hands": True, "detect_face": True},
                 {"image": (photo, 0)}, size=(300, 200))
    loader = sdxl_loader(g, (0, 400))
    lora = g.add("PF_SDXLLoRA", (340, 400), {"lora_name": MODELS["lora"]["name"], "strength_model": 0.9,
                                             "strength_clip": 1.0}, {"sdxl": (loader, 0)}, size=(330, 130),
                 models=("lora",))
    sampler = g.add("PF_SDXLOpenPose", (720, 0), {
        "prompt": LONG_PROMPT, "negative_prompt": NEGATIVE + ", (photo, realistic:1.2)", "seed": 23,
        "controlnet_scale": 0.8, "scheduler": "DPM++ 2M Karras", "num_inference_steps": 30,
        "guidance_scale": 6.0}, {"pose": (pose, 2), "sdxl": (lora, 0)}, size=(380, 660))
    g.add("SaveImage", (1140, 0), {"filename_prefix": "PoseForge/sdxl_openpose_lora"}, {"images": (sampler, 0)},
          size=(420, 460))
    return g.ui()


def core_loader(g, pos):
    return g.add("CheckpointLoaderSimple", pos, {"ckpt_name": MODELS["sdxl"]["name"]}, size=(330, 100),
                 models=("sdxl",))


def core_ipadapter_openpose(defs, segmind):
    """With core nodes 1: core's checkpoint and KSampler; PoseForge's IP-Adapter on core's MODEL and its pose
    map into core's Apply ControlNet."""
    g = Graph(defs)
    ckpt = core_loader(g, (0, 0))
    photo = g.add("LoadImage", (0, 140), {"image": POSE_PHOTO}, size=(300, 360), title="Pose reference photo")
    pose = g.add("PF_OpenPoseExtract", (340, 140), {"detect_hands": True, "detect_face": True},
                 {"image": (photo, 0)}, size=(300, 200))
    ref = g.add("LoadImage", (0, 540), {"image": IMAGE_PROMPT}, size=(300, 360), title="Image prompt")
    ip = g.add("PF_IPAdapter", (340, 540), {"ip_adapter_scale": 0.6}, {"image": (ref, 0)}, size=(330, 220),
               models=("ipadapter", "clip_vision"))
    model = g.add("PF_IPAdapterApply", (720, 540), {"start_at": 0.0, "end_at": 0.8},
                  {"model": (ckpt, 0), "ip_adapter": (ip, 0)}, size=(320, 130))
    positive = g.add("CLIPTextEncode", (380, -260), {
        "text": "portrait of an astronaut, glowing nebula colours, deep space light, highly detailed"},
        {"clip": (ckpt, 1)}, size=(330, 160), title="Positive")
    negative = g.add("CLIPTextEncode", (380, -60), {"text": NEGATIVE}, {"clip": (ckpt, 1)}, size=(330, 160),
                     title="Negative")
    controlnet = g.add("ControlNetLoader", (720, -60), {"control_net_name": MODELS["controlnet"]["name"]},
                       size=(320, 80), models=("controlnet",))
    applied = g.add("ControlNetApplyAdvanced", (720, 100), {"strength": 0.8},
                    {"positive": (positive, 0), "negative": (negative, 0), "control_net": (controlnet, 0),
                     "image": (pose, 0), "vae": (ckpt, 2)}, size=(320, 190))
    empty = g.add("EmptyLatentImage", (720, 340), {"width": 1024, "height": 1024}, size=(320, 110))
    sampler = g.add("KSampler", (1080, 0), {"seed": 42, "steps": 30, "cfg": 7.0, "sampler_name": "dpmpp_2m",
                                            "scheduler": "karras"},
                    {"model": (model, 0), "positive": (applied, 0), "negative": (applied, 1),
                     "latent_image": (empty, 0)}, size=(320, 270))
    decode = g.add("VAEDecode", (1080, 310), {}, {"samples": (sampler, 0), "vae": (ckpt, 2)}, size=(220, 50))
    g.add("SaveImage", (1440, 0), {"filename_prefix": "PoseForge/core_ipadapter_openpose"},
          {"images": (decode, 0)}, size=(420, 460))
    return g.ui()


def core_sdxl_openpose_hires(defs, segmind):
    """With core nodes 2: core's checkpoint into PoseForge's pose sampler (no second copy), its LATENT into
    core's hi-res pass (Upscale Latent By, KSampler at denoise 0.5)."""
    g = Graph(defs)
    ckpt = core_loader(g, (0, 0))
    photo = g.add("LoadImage", (0, 140), {"image": POSE_PHOTO}, size=(300, 360), title="Pose reference photo")
    pose = g.add("PF_OpenPoseExtract", (340, 140), {"detect_hands": True, "detect_face": True},
                 {"image": (photo, 0)}, size=(300, 200))
    bridge = g.add("PF_SDXLFromModel", (340, -120), {"controlnet": MODELS["controlnet"]["name"]},
                   {"model": (ckpt, 0), "clip": (ckpt, 1), "vae": (ckpt, 2)}, size=(330, 130),
                   models=("controlnet",))
    prompt = "a dancer in a red dress in the same pose, studio light, detailed face"
    first = g.add("PF_SDXLOpenPose", (720, 0), {
        "prompt": prompt, "negative_prompt": NEGATIVE, "seed": 5, "controlnet_scale": 0.8,
        "scheduler": pose_scheduler(False), "width": 832, "height": 1216},
        {"pose": (pose, 2), "sdxl": (bridge, 0)}, size=(380, 660))
    upscale = g.add("LatentUpscaleBy", (1140, 0), {"upscale_method": "bislerp", "scale_by": 1.5},
                    {"samples": (first, 1)}, size=(300, 110))
    positive = g.add("CLIPTextEncode", (1140, 150), {"text": prompt}, {"clip": (ckpt, 1)}, size=(300, 150),
                     title="Positive")
    negative = g.add("CLIPTextEncode", (1140, 340), {"text": NEGATIVE}, {"clip": (ckpt, 1)}, size=(300, 150),
                     title="Negative")
    hires = g.add("KSampler", (1480, 0), {"seed": 5, "steps": 20, "cfg": 6.0, "sampler_name": "dpmpp_2m",
                                          "scheduler": "karras", "denoise": 0.5},
                  {"model": (ckpt, 0), "positive": (positive, 0), "negative": (negative, 0),
                   "latent_image": (upscale, 0)}, size=(320, 270), title="Hi-res pass (KSampler)")
    decode = g.add("VAEDecode", (1480, 310), {}, {"samples": (hires, 0), "vae": (ckpt, 2)}, size=(220, 50))
    g.add("SaveImage", (1840, 0), {"filename_prefix": "PoseForge/core_sdxl_openpose_hires"},
          {"images": (decode, 0)}, size=(420, 460))
    g.add("SaveImage", (1140, 540), {"filename_prefix": "PoseForge/core_first_pass"}, {"images": (first, 0)},
          size=(300, 340))
    return g.ui()


def sdxl_openpose_hires(defs, segmind):
    """Hi-res fix (local): a first pass at the model's size, its LATENT upscaled by core's Upscale Latent By, a
    second PF_SDXLOpenPose pass at denoise 0.5 with the same pose, drawn again at the new size (pose_fit)."""
    g = Graph(defs)
    photo = g.add("LoadImage", (0, 0), {"image": POSE_PHOTO}, size=(300, 360), title="Pose reference photo")
    pose = g.add("PF_OpenPoseExtract", (340, 0), {"detect_hands": True, "detect_face": True},
                 {"image": (photo, 0)}, size=(300, 200))
    loader = sdxl_loader(g, (0, 400))
    prompt = "a dancer in a red dress in the same pose, studio light, detailed face"
    common = {"prompt": prompt, "negative_prompt": NEGATIVE, "seed": 5, "controlnet_scale": 0.8,
              "scheduler": pose_scheduler(False)}
    first = g.add("PF_SDXLOpenPose", (720, 0), dict(common, width=1024, height=1024),
                  {"pose": (pose, 2), "sdxl": (loader, 0)}, size=(380, 660), title="First pass")
    upscale = g.add("LatentUpscaleBy", (1140, 0), {"upscale_method": "bislerp", "scale_by": 1.5},
                    {"samples": (first, 1)}, size=(300, 110))
    second = g.add("PF_SDXLOpenPose", (1480, 0), dict(common, num_inference_steps=20, denoise=0.5, pose_fit="fit"),
                   {"pose": (pose, 2), "sdxl": (loader, 0), "latent": (upscale, 0)}, size=(380, 660),
                   title="Hi-res pass (denoise 0.5)")
    g.add("SaveImage", (1140, 540), {"filename_prefix": "PoseForge/sdxl_openpose_hires"}, {"images": (second, 0)},
          size=(300, 300), title="Save Image (hi-res)")
    g.add("SaveImage", (1140, 200), {"filename_prefix": "PoseForge/hires_first_pass"}, {"images": (first, 0)},
          size=(300, 300), title="Save Image (first pass)")
    return g.ui()


def waving_pose():
    """The re-pose example's edited pose: PF_PoseRender's `pose` widget, POSE_KEYPOINT JSON, normalized."""
    points = [v for x, y in ASTRONAUT_WAVING for v in ((x / 512, y / 512, 1.0) if x or y else (0.0, 0.0, 0.0))]
    return json.dumps([{"people": [{"pose_keypoints_2d": [round(v, 4) for v in points]}], "canvas_width": 512,
                        "canvas_height": 512}])


def sdxl_openpose_repose(defs, segmind):
    """Re-pose (local, inpainting): the photo's pose edited on PF_PoseRender (her arm raised), and only the
    region the photo leaves transparent (its MASK) drawn again in it; the rest stays the photo's pixels."""
    g = Graph(defs)
    photo = g.add("LoadImage", (0, 0), {"image": REPOSE_PHOTO}, size=(300, 360),
                  title="Photo (transparent = draw again)")
    pose = g.add("PF_OpenPoseExtract", (340, 0), {"detect_hands": False, "detect_face": False},
                 {"image": (photo, 0)}, size=(300, 200))
    edited = g.add("PF_PoseRender", (340, 290), {"pose": waving_pose()}, {"keypoints": (pose, 1)}, size=(320, 420),
                   title="Pose, edited on the node")
    loader = sdxl_loader(g, (0, 400))
    sampler = g.add("PF_SDXLOpenPose", (720, 0), {
        "prompt": "an astronaut in an orange flight suit raising her right hand to wave, studio portrait, flag "
                  "behind her, detailed hand", "negative_prompt": NEGATIVE, "seed": 17, "controlnet_scale": 0.9,
        "scheduler": pose_scheduler(False), "mask_grow": 8, "mask_feather": 16},
        {"pose": (edited, 1), "sdxl": (loader, 0), "inpaint_image": (photo, 0), "mask": (photo, 1)},
        size=(380, 700), title="SDXL OpenPose (inpainting)")
    g.add("SaveImage", (1140, 0), {"filename_prefix": "PoseForge/sdxl_openpose_repose"}, {"images": (sampler, 0)},
          size=(420, 460))
    return g.ui()


EXAMPLES = {
    "ipadapter_xl_openpose": (ipadapter_openpose, False),
    "ipadapter_xl_openpose_segmind": (ipadapter_openpose, True),
    "sdxl_openpose_codeformer": (sdxl_openpose_codeformer, False),
    "sdxl_openpose_codeformer_segmind": (sdxl_openpose_codeformer, True),
    "sdxl_openpose_lora": (sdxl_openpose_lora, False),
    "core_ipadapter_openpose": (core_ipadapter_openpose, False),
    "core_sdxl_openpose_hires": (core_sdxl_openpose_hires, False),
    "sdxl_openpose_hires": (sdxl_openpose_hires, False),
    "sdxl_openpose_repose": (sdxl_openpose_repose, False),
}


def build(defs):
    """{name: UI graph} of every example."""
    return {name: recipe(defs, segmind) for name, (recipe, segmind) in EXAMPLES.items()}


def write(defs):
    os.makedirs(API_FOLDER, exist_ok=True)
    for name, ui in build(defs).items():
        for folder, graph in ((FOLDER, ui), (API_FOLDER, to_api(ui, defs))):
            with open(os.path.join(folder, name + ".json"), "w", encoding="utf-8") as f:
                json.dump(graph, f, indent=2)
                f.write("\n")


def main():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from doctor import load_pack, submodule

    pack = load_pack()
    submodule(pack, "host.models").set_models_root(os.path.join(ROOT, "no-models"))  # file combos -> defaults
    write(definitions_from_classes(pack.NODE_CLASS_MAPPINGS))


if __name__ == "__main__":
    main()
