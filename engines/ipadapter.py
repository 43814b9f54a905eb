"""PF_IPADAPTER: the image prompt a PF_SDXLOpenPose run takes, on either backend.

The handle holds the reference image(s) and an optional negative image (HxWx3 uint8
lists), the adapter and CLIP vision file names, the scale, the mode and how several images combine. Nothing
loads or encodes in PF_IPAdapter: a local sampler encodes (cached by image content),
Segmind is sent the first reference image.
"""
import os
import threading
from collections import OrderedDict

from ..host import images

MODES = ["standard", "style", "composition"]
COMBINE = ["average", "concat"]
FACE_CROPS = ["auto", "on", "off"]  # auto: on for a plus-face adapter (by its name: the weights are plus's)
ADAPTER_SOURCE = "https://huggingface.co/h94/IP-Adapter/tree/main/sdxl_models (e.g. ip-adapter-plus_sdxl_vit-h.safetensors)"
ENCODER_SOURCE = ("https://huggingface.co/h94/IP-Adapter/blob/main/models/image_encoder/model.safetensors, saved as "
                  "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors (the ViT-H encoder the _vit-h adapters need; "
                  "ip-adapter_sdxl needs sdxl_models/image_encoder, CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors)")


FOUND_LIMIT = 64  # face squares kept (a few numbers each)


class IPAdapterRequestError(ValueError):
    pass


def handle(image, negative_image, ipadapter, clip_vision, scale, mode, combine, loaded_clip_vision=None,
           face_crop="auto"):
    """The PF_IPADAPTER handle; the images are converted (and their shapes checked) once, here.
    `loaded_clip_vision`: a CLIP_VISION core's CLIPVisionLoader loaded, used instead of the file.
    `face_crop`: whether the references are cropped around their faces when a run uses them."""
    if face_crop not in FACE_CROPS:
        raise IPAdapterRequestError(f"face_crop must be one of {', '.join(FACE_CROPS)}, not {face_crop!r}.")
    if mode not in MODES:
        raise IPAdapterRequestError(f"mode must be one of {', '.join(MODES)}, not {mode!r}.")
    if combine not in COMBINE:
        raise IPAdapterRequestError(f"combine must be one of {', '.join(COMBINE)}, not {combine!r}.")
    if not 0.0 <= scale <= 2.0:  # NaN fails this too
        raise IPAdapterRequestError(f"ip_adapter_scale {scale} must be within 0..2.")
    negative = None if negative_image is None else images.to_uint8(negative_image, "negative image prompt")
    return {"images": images.to_uint8(image, "image prompt"), "negative": negative, "ipadapter": ipadapter,
            "clip_vision": clip_vision, "scale": float(scale), "mode": mode, "combine": combine,
            "loaded_clip_vision": loaded_clip_vision, "face_crop": face_crop}


def crops_faces(ip):
    """True when the references are cropped around their faces: asked for, or `auto` with a plus-face
    adapter (whose file name says so: its weights have the plus adapter's shapes)."""
    name = os.path.basename(ip["ipadapter"]).lower()
    return ip.get("face_crop") == "on" or (ip.get("face_crop") == "auto" and "face" in name and "faceid" not in name)


def references(ip):
    """(the reference images a run encodes or sends, a note per image): each cropped to the square around
    its largest face (the default pose detector finds it: local/pose_render.face_square) when
    `crops_faces`; where no face is found, the image as it is (CLIP takes its centre square) and a note."""
    if not crops_faces(ip):
        return ip["images"], []
    squares = _squares(ip["images"])
    out, notes = [], []
    for photo, square in zip(ip["images"], squares):
        if square is None:
            out.append(photo)
            notes.append("no face found: centre crop")
            continue
        left, top, side = square
        out.append(photo[top:top + side, left:left + side])
        notes.append(f"face crop {side}x{side} at {left},{top}")
    return out, notes


_found = OrderedDict()  # (image digest, detector) -> face square: a run on the same references detects once
_found_lock = threading.Lock()


def _squares(photos):
    from . import pose

    name = pose.default_detector()
    keys = [(images.digest(p), name) for p in photos]
    with _found_lock:
        todo = [i for i, k in enumerate(keys) if k not in _found]
    if todo:
        for i, square in zip(todo, pose.face_squares([photos[i] for i in todo], name)):
            with _found_lock:
                _found[keys[i]] = square
    with _found_lock:
        squares = [_found[k] for k in keys]
        while len(_found) > FOUND_LIMIT:
            _found.popitem(last=False)
    return squares


def files(ip):
    """{role: (folder, file, source)} of the adapter and its encoder (no encoder file when a loaded
    CLIP_VISION is connected). A face crop's detector is checked too (MissingModelFiles names its files)."""
    if crops_faces(ip):
        from . import pose

        pose.check_detector(pose.default_detector())
    found = {"ipadapter": ("ipadapter", ip["ipadapter"], ADAPTER_SOURCE)}
    if ip.get("loaded_clip_vision") is None:
        found["clip_vision"] = ("clip_vision", ip["clip_vision"], ENCODER_SOURCE)
    return found


def on_model(model, ip, start_at, end_at, attn_mask=None):
    """A clone of core's MODEL with `ip` in its cross-attention (local/ipadapter_model.py); the files
    must be here (an error names each missing one and its folder)."""
    from ..host import models
    from ..local import ipadapter_model

    paths = models.require(files(ip))
    return ipadapter_model.apply(model, dict(ip, images=references(ip)[0]), paths, start_at, end_at, attn_mask)


def segmind_image(ip):
    """The image prompt Segmind is sent: the first reference, cropped around its face when `crops_faces`."""
    return images.from_uint8(references(dict(ip, images=ip["images"][:1]))[0])


def segmind_fields(ip):
    """(fields for ip-sdxl-openpose, names of settings Segmind cannot take)."""
    fields = {"ip_image": images.from_uint8(ip["images"][:1]), "ip_adapter_scale": ip["scale"]}
    ignored = []
    if len(ip["images"]) > 1:
        ignored.append("image prompts after the first")
    if ip["negative"] is not None:
        ignored.append("negative_image")
    if ip["mode"] != "standard":
        ignored.append("mode")
    return fields, ignored
