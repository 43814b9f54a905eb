"""IP-Adapter for SDXL through diffusers: an image prompt for the SDXL sampler.

Files: an IP-Adapter in h94's original layout (`.safetensors` with flat
`image_proj.*` / `ip_adapter.<N>.to_{k,v}_ip.weight`, or `.bin` holding
{"image_proj", "ip_adapter"}) and a CLIP vision encoder in transformers keys (the
single files ComfyUI's `clip_vision` folder holds, or h94's `image_encoder` folder
with its config.json). What each file is, and whether the two fit, is read from the
tensor shapes before anything loads (model-formats.md 2.1, 2.2):

- base adapters (`ImageProjModel`, 4 tokens) read the encoder's `image_embeds`
  (1280 wide: ViT-bigG-14; 1024 wide: ViT-H-14);
- plus / plus-face adapters (`Resampler`, `latents`) read the encoder's penultimate
  hidden states (1280 wide: ViT-H-14).

The encoder, and the adapter converted for the UNet by diffusers' own conversion, are
Residents of host/residency.py. Embeddings are cached by image content and encoder.
`installed()` puts the adapter into the UNet for one run and takes every trace of it
out again (attention processors, image projection, scales), so the next run without
an adapter is exactly a plain run.
"""
import contextlib
import functools
import itertools
import os
import threading
import weakref
from collections import OrderedDict

from ..host import residency, weights
from ..host.images import MAX_ASPECT, digest
from . import libs

ENCODERS = {(1280, 1024): "ViT-H-14", (1664, 1280): "ViT-bigG-14"}  # (hidden, image_embeds) -> name
ENCODER_FILES = {
    "ViT-H-14": "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors "
                "(https://huggingface.co/h94/IP-Adapter/blob/main/models/image_encoder/model.safetensors)",
    "ViT-bigG-14": "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors "
                   "(https://huggingface.co/h94/IP-Adapter/blob/main/sdxl_models/image_encoder/model.safetensors)",
}
HEADS = {1280: 16, 1664: 16, 1024: 16, 768: 12}  # open_clip ViT-H, bigG, L, B: heads are not in the weights
KINDS = ("ip-adapter_sdxl, ip-adapter_sdxl_vit-h, ip-adapter-plus_sdxl_vit-h or ip-adapter-plus-face_sdxl_vit-h "
         "(https://huggingface.co/h94/IP-Adapter/tree/main/sdxl_models)")
CACHE_LIMIT = 64  # embeddings kept (each a few KB to a few MB)


class IPAdapterError(ValueError):
    pass


# -- what a file is ------------------------------------------------------------
def _under(shapes, prefix):
    return {k[len(prefix):]: s for k, s in shapes.items() if k.startswith(prefix)}


def adapter_info(shapes, name):
    """kind ('base' | 'plus'), what it reads from the encoder ('embeds' | 'hidden') and how
    wide, its tokens, cross-attention width and layer count, from an adapter's tensor shapes."""
    proj, ip = _under(shapes, "image_proj."), _under(shapes, "ip_adapter.")
    if not proj or "1.to_k_ip.weight" not in ip:
        raise IPAdapterError(f"{name} is not an IP-Adapter file: it has no image_proj.* / ip_adapter.1.to_k_ip "
                             f"tensors (h94's layout). Use {KINDS}.")
    cross = ip["1.to_k_ip.weight"][1]
    info = {"cross": cross, "layers": sum(1 for k in ip if k.endswith(".to_k_ip.weight"))}
    if "latents" in proj and "proj_in.weight" in proj:
        return dict(info, kind="plus", input="hidden", width=proj["proj_in.weight"][1], tokens=proj["latents"][1])
    if "proj.weight" in proj and "norm.weight" in proj:
        return dict(info, kind="base", input="embeds", width=proj["proj.weight"][1],
                    tokens=proj["proj.weight"][0] // cross)
    raise IPAdapterError(f"{name} is an IP-Adapter of a kind PoseForge does not run (full-face or FaceID "
                         f"projection): use {KINDS}.")


def encoder_info(shapes, name):
    """hidden and image_embeds widths, layers, patch and image size of a CLIP vision file."""
    patch = shapes.get("vision_model.embeddings.patch_embedding.weight")
    if patch is None:
        layout = "open_clip keys (visual.*)" if any(k.startswith("visual.") for k in shapes) else "no vision_model.*"
        raise IPAdapterError(f"{name} is not a CLIP vision encoder in transformers keys ({layout}): use "
                             f"{ENCODER_FILES['ViT-H-14']} or {ENCODER_FILES['ViT-bigG-14']}.")
    projection = shapes.get("visual_projection.weight")
    if projection is None:
        raise IPAdapterError(f"{name} has no visual_projection: it is a CLIP vision model without its projection; "
                             f"IP-Adapter needs the full encoder, e.g. {ENCODER_FILES['ViT-H-14']}.")
    positions = shapes["vision_model.embeddings.position_embedding.weight"][0]
    hidden, embeds = patch[0], projection[0]
    return {"hidden": hidden, "embeds": embeds, "patch": patch[2], "image_size": patch[2] * round((positions - 1) ** 0.5),
            "layers": sum(1 for k in shapes if k.startswith("vision_model.encoder.layers.")
                          and k.endswith(".layer_norm1.weight")),
            "intermediate": shapes["vision_model.encoder.layers.0.mlp.fc1.weight"][0],
            "name": ENCODERS.get((hidden, embeds))}


def needed_encoder(info):
    """Words for the encoder an adapter needs."""
    by_width = {"embeds": {1280: "ViT-bigG-14", 1024: "ViT-H-14"}, "hidden": {1280: "ViT-H-14", 1664: "ViT-bigG-14"}}
    named = by_width[info["input"]].get(info["width"])
    if named:
        return f"the {named} encoder, {ENCODER_FILES[named]}"
    reads = "image embeddings" if info["input"] == "embeds" else "hidden states"
    return f"a CLIP vision encoder whose {reads} are {info['width']} wide"


def _describe(enc):
    return enc["name"] or f"a CLIP vision encoder with hidden states {enc['hidden']} and image embeddings " \
                          f"{enc['embeds']} wide"


def loaded_shapes(clip_vision):
    """{tensor name: shape} of a CLIP vision model ComfyUI loaded (core's CLIPVisionLoader): its
    own model names its tensors as transformers does."""
    return {k: tuple(v.shape) for k, v in clip_vision.model.state_dict().items()}


def check_pair(adapter_path, encoder):
    """(adapter info, encoder info) of an adapter file and its encoder (a file, or a CLIP_VISION
    ComfyUI loaded); a clear error when they do not fit."""
    a_name = os.path.basename(adapter_path)
    e_name = f"the clip_vision file {os.path.basename(encoder)}" if isinstance(encoder, str) else \
        "the connected CLIP_VISION"
    info = adapter_info(weights.shapes(adapter_path), a_name)
    enc = encoder_info(weights.shapes(encoder) if isinstance(encoder, str) else loaded_shapes(encoder), e_name)
    if enc[info["input"]] != info["width"]:
        raise IPAdapterError(f"The IP-Adapter {a_name} needs {needed_encoder(info)}, but {e_name} is "
                             f"{_describe(enc)}: choose the matching encoder in PF_IPAdapter.")
    return info, enc


def cross_attention(unet):
    """The names of the UNet's cross-attention processors, the layers an IP-Adapter joins."""
    return tuple(n for n in unet.attn_processors if n.endswith("attn2.processor"))


def check_fit(info, name, layers, width, what, error=IPAdapterError):
    """An `error` naming the adapter's family when its cross-attention (width, layer count) is not that of
    `what`, a UNet with `layers` cross-attention layers `width` wide."""
    if info["cross"] != width or info["layers"] != layers:
        family = {768: "SD1.5", 1024: "SD2.x"}.get(info["cross"], f"a model with {info['cross']}-wide text features")
        raise error(f"The IP-Adapter {name} is for {family} ({info['layers']} cross-attention layers), not for "
                    f"{what} ({layers} layers, {width} wide): use an SDXL adapter, {KINDS}.")


def check_unet(info, unet, name):
    check_fit(info, name, len(cross_attention(unet)), unet.config.cross_attention_dim, "this SDXL UNet")


# -- loading -------------------------------------------------------------------
def encoder_config(path, enc):
    """The transformers CLIPVisionConfig: config.json beside the file (h94's folder layout),
    else built from the tensor shapes and the known head count of that width."""
    transformers = libs.transformers()
    beside = os.path.join(os.path.dirname(path), "config.json")
    if os.path.exists(beside):
        return transformers.CLIPVisionConfig.from_json_file(beside)
    heads = HEADS.get(enc["hidden"])
    if heads is None:
        raise IPAdapterError(f"{os.path.basename(path)}: a {enc['hidden']}-wide CLIP vision encoder is not one "
                             "PoseForge knows and no config.json sits beside it: put the encoder's transformers "
                             "config.json in its folder.")
    return transformers.CLIPVisionConfig(
        hidden_size=enc["hidden"], intermediate_size=enc["intermediate"], num_hidden_layers=enc["layers"],
        num_attention_heads=heads, patch_size=enc["patch"], image_size=enc["image_size"],
        projection_dim=enc["embeds"], hidden_act="gelu", layer_norm_eps=1e-5)


def encoder(path, dtype):
    """The CLIP vision encoder Resident of `path` (CLIPVisionModelWithProjection)."""
    def load():
        from accelerate import init_empty_weights

        enc = encoder_info(weights.shapes(path), os.path.basename(path))
        config = encoder_config(path, enc)
        with init_empty_weights():
            model = libs.transformers().CLIPVisionModelWithProjection(config)
        state = {k: v for k, v in weights.load(path).items() if not k.endswith("position_ids")}
        model.load_state_dict(state, strict=True, assign=True)
        return model.to(dtype)

    return residency.get(("clip_vision", weights.identity(path), str(dtype)), load)


@functools.lru_cache(maxsize=1)
def _adapter_class():
    import torch

    class IPAdapterModules(torch.nn.Module):
        """An IP-Adapter converted by diffusers for one UNet layout: its cross-attention
        processors (for the attention layers named in `names`) and its image projection."""

        def __init__(self, names, procs, image_proj):
            super().__init__()
            self.names = list(names)
            self.procs = torch.nn.ModuleList(procs)
            self.image_proj = image_proj

    return IPAdapterModules


def split(state):
    """{"image_proj": {...}, "ip_adapter": {...}} from either file layout."""
    if isinstance(state.get("image_proj"), dict):
        return {"image_proj": state["image_proj"], "ip_adapter": state["ip_adapter"]}
    parts = {"image_proj": {}, "ip_adapter": {}}
    for k, v in state.items():
        head, _, rest = k.partition(".")
        if head in parts:
            parts[head][rest] = v
    return parts


def adapter(path, unet_resident):
    """The IP-Adapter Resident of `path`, converted for `unet_resident`'s UNet and dtype."""
    unet = unet_resident.net
    crosses = cross_attention(unet)

    def load():
        import torch

        name = os.path.basename(path)
        check_unet(adapter_info(weights.shapes(path), name), unet, name)
        state = split(weights.load(path))
        procs = unet._convert_ip_adapter_attn_to_diffusers([state], low_cpu_mem_usage=False)
        proj = unet._convert_ip_adapter_image_proj_to_diffusers(state["image_proj"], low_cpu_mem_usage=False)
        names = [n for n in crosses if isinstance(procs.get(n), torch.nn.Module)]
        return _adapter_class()(names, [procs[n] for n in names], proj).to(unet.dtype)

    return residency.get(("ipadapter", weights.identity(path), str(unet.dtype), hash(crosses)), load)


# -- embeddings ----------------------------------------------------------------
_embeds = OrderedDict()
_counter = itertools.count()
_embeds_lock = threading.Lock()


def centre(image):
    """The middle of a thin image, MAX_ASPECT times as long as it is wide at most. CLIP keeps only
    the centre square of what it is given, so this changes nothing but the size of the resize
    (a 4x2000 strip would otherwise be enlarged to 224x112000); normal photos pass as they are."""
    h, w = image.shape[:2]
    short = min(h, w)
    keep_h, keep_w = min(h, MAX_ASPECT * short), min(w, MAX_ASPECT * short)
    top, left = (h - keep_h) // 2, (w - keep_w) // 2
    return image[top:top + keep_h, left:left + keep_w]


def _pixels(model, images):
    """CLIP's own preprocessing (transformers' CLIPImageProcessor at the encoder's size)."""
    size = model.config.image_size
    processor = libs.transformers().CLIPImageProcessor(size={"shortest_edge": size},
                                                       crop_size={"height": size, "width": size})
    return processor(images=[centre(i) for i in images], return_tensors="pt").pixel_values


def _run_file_encoder(encoder_resident, images, what):
    """Our transformers encoder on `images` (or, for [None], zero pixels after normalisation)."""
    import torch

    model, = residency.use(encoder_resident)
    param = next(model.parameters())
    if images[0] is None:
        size = model.config.image_size
        pixels = torch.zeros(1, 3, size, size)
    else:
        pixels = _pixels(model, images)
    with torch.no_grad():
        out = model(pixel_values=pixels.to(param.device, param.dtype), output_hidden_states=what == "hidden")
    return out.image_embeds if what == "embeds" else out.hidden_states[-2]


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_tokens = weakref.WeakKeyDictionary()  # a CLIP_VISION ComfyUI loaded -> a number of its own (ids are reused)


def _token(obj):
    with _embeds_lock:
        if obj not in _tokens:
            _tokens[obj] = next(_counter)
        return _tokens[obj]


def _run_loaded_encoder(clip_vision, images, what):
    """A CLIP_VISION ComfyUI loaded, with ComfyUI's own preprocessing (its encode_image; it brings
    the model onto the device itself); for [None], an image of CLIP's mean colour, which its
    normalisation makes (within one 8-bit step) the zero input the reference uses."""
    import numpy as np
    import torch

    if images[0] is None:
        size = getattr(clip_vision, "image_size", 224)
        batch = torch.tensor(getattr(clip_vision, "image_mean", CLIP_MEAN)).expand(1, size, size, 3)
    else:
        batch = torch.cat([torch.from_numpy(np.asarray(centre(i), np.float32) / 255.0)[None] for i in images])
    with torch.no_grad():
        out = clip_vision.encode_image(batch)
    return out["image_embeds"] if what == "embeds" else out["penultimate_hidden_states"]


def encode(encoder, images, what):
    """(n, ...) float32 CPU embeddings of `images` (HxWx3 uint8) from the encoder (our Resident, or
    a CLIP_VISION ComfyUI loaded): 'embeds' = image_embeds, 'hidden' = penultimate hidden states;
    None = the unconditional input (zero pixels after normalisation, as the reference does).
    Cached by image content and encoder."""
    import torch

    loaded = not isinstance(encoder, residency.Resident)
    identity = ("clip_vision", "loaded", _token(encoder)) if loaded else encoder.key
    keys = [(identity, what, "zeros" if img is None else digest(img)) for img in images]
    with _embeds_lock:
        todo = [i for i, k in enumerate(keys) if k not in _embeds]
    if todo:
        run = _run_loaded_encoder if loaded else _run_file_encoder
        if images[todo[0]] is None:
            values = run(encoder, [None], what)
        else:
            batches = {}
            for i in todo:  # ComfyUI's encoder takes one size per batch
                batches.setdefault(images[i].shape, []).append(i)
            found = {}
            for group in batches.values():
                found.update(zip(group, run(encoder, [images[i] for i in group], what)))
            values = [found[i] for i in todo]
        with _embeds_lock:
            for i, value in zip(todo, values):
                _embeds[keys[i]] = value.float().cpu()
    with _embeds_lock:
        for k in keys:
            _embeds.move_to_end(k)
        found = torch.stack([_embeds[k] for k in keys])
        while len(_embeds) > CACHE_LIMIT:
            _embeds.popitem(last=False)
    return found


def image_embeds(encoder, info, images, negative, combine, guided):
    """The tensor diffusers' `ip_adapter_image_embeds` wants for one adapter:
    (2 if guided else 1, n, ...) with the negative first. `combine`: 'average' the
    reference images into one embedding, or 'concat' their tokens. Negative images are
    averaged; without one the reference's unconditional input is used."""
    import torch

    what = info["input"]
    pos = encode(encoder, list(images), what)
    if combine == "average":
        pos = pos.mean(0, keepdim=True)
    if negative is not None:
        neg = encode(encoder, list(negative), what).mean(0, keepdim=True)
    elif what == "embeds":
        neg = torch.zeros_like(pos[:1])
    else:
        neg = encode(encoder, [None], what)
    neg = neg.expand_as(pos)
    return torch.stack([neg, pos]) if guided else pos[None]


# -- one run with the adapter in the UNet -----------------------------------------
def block_scales(unet, mode, scale):
    """diffusers' IP-Adapter scale for `mode`: standard = every layer; style / composition =
    InstantStyle's single layer (the middle attention of the first up block with attention,
    the second attention of the deepest down block), found from the UNet's own layout so the
    same rule names up.block_0 / down.block_2 on SDXL."""
    if mode == "standard":
        return float(scale)
    side, blocks = ("up", unet.up_blocks) if mode == "style" else ("down", unet.down_blocks)
    with_attention = [i for i, b in enumerate(blocks) if hasattr(b, "attentions")]
    index = with_attention[0] if mode == "style" else with_attention[-1]
    layers = [0.0] * len(blocks[index].attentions)
    layers[min(1, len(layers) - 1)] = float(scale)
    return {side: {f"block_{index}": layers}}


@contextlib.contextmanager
def installed(pipe, modules, scale):
    """`modules` (an adapter()'s net) inside `pipe.unet` with `scale` for the duration of the
    block; the UNet's own processors and projection are put back afterwards, whatever happens."""
    unet = pipe.unet
    saved = unet.attn_processors
    saved_proj, saved_type = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
    procs = dict(saved)
    procs.update(zip(modules.names, modules.procs))
    unet.set_attn_processor(procs)
    try:
        unet.encoder_hid_proj = libs.diffusers().models.embeddings.MultiIPAdapterImageProjection([modules.image_proj])
        unet.config.encoder_hid_dim_type = "ip_image_proj"  # as diffusers' own loader marks it
        pipe.set_ip_adapter_scale(scale)
        yield
    finally:
        unet.encoder_hid_proj = saved_proj
        unet.config.encoder_hid_dim_type = saved_type
        unet.set_attn_processor(saved)


def clear_cache():
    with _embeds_lock:
        _embeds.clear()
