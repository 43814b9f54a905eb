"""PF_IPADAPTER: the image prompt a PF_SDXLOpenPose run takes, on either backend.

The handle holds the reference image(s) and an optional negative image (HxWx3 uint8
lists), the adapter and CLIP vision file names, the scale, the mode and how several images combine. Nothing
loads or encodes in PF_IPAdapter: a local sampler encodes (cached by image content),
Segmind is sent the first reference image.
"""
from ..host import images

MODES = ["standard", "style", "composition"]
COMBINE = ["average", "concat"]
ADAPTER_SOURCE = "https://huggingface.co/h94/IP-Adapter/tree/main/sdxl_models (e.g. ip-adapter-plus_sdxl_vit-h.safetensors)"
ENCODER_SOURCE = ("https://huggingface.co/h94/IP-Adapter/blob/main/models/image_encoder/model.safetensors, saved as "
                  "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors (the ViT-H encoder the _vit-h adapters need; "
                  "ip-adapter_sdxl needs sdxl_models/image_encoder, CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors)")


class IPAdapterRequestError(ValueError):
    pass


def handle(image, negative_image, ipadapter, clip_vision, scale, mode, combine, loaded_clip_vision=None):
    """The PF_IPADAPTER handle; the images are converted (and their shapes checked) once, here.
    `loaded_clip_vision`: a CLIP_VISION core's CLIPVisionLoader loaded, used instead of the file."""
    if mode not in MODES:
        raise IPAdapterRequestError(f"mode must be one of {', '.join(MODES)}, not {mode!r}.")
    if combine not in COMBINE:
        raise IPAdapterRequestError(f"combine must be one of {', '.join(COMBINE)}, not {combine!r}.")
    if not 0.0 <= scale <= 2.0:  # NaN fails this too
        raise IPAdapterRequestError(f"ip_adapter_scale {scale} must be within 0..2.")
    negative = None if negative_image is None else images.to_uint8(negative_image, "negative image prompt")
    return {"images": images.to_uint8(image, "image prompt"), "negative": negative, "ipadapter": ipadapter,
            "clip_vision": clip_vision, "scale": float(scale), "mode": mode, "combine": combine,
            "loaded_clip_vision": loaded_clip_vision}


def files(ip):
    """{role: (folder, file, source)} of the adapter and its encoder (no encoder file when a loaded
    CLIP_VISION is connected)."""
    found = {"ipadapter": ("ipadapter", ip["ipadapter"], ADAPTER_SOURCE)}
    if ip.get("loaded_clip_vision") is None:
        found["clip_vision"] = ("clip_vision", ip["clip_vision"], ENCODER_SOURCE)
    return found


def on_model(model, ip, start_at, end_at, attn_mask=None):
    """A clone of core's MODEL with `ip` in its cross-attention (local/ipadapter_model.py); the files
    must be here (an error names each missing one and its folder)."""
    from ..host import models
    from ..local import ipadapter_model

    return ipadapter_model.apply(model, ip, models.require(files(ip)), start_at, end_at, attn_mask)


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
