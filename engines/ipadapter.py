"""PF_IPADAPTER: the image prompt a PF_SDXLOpenPose run takes, on either backend.

The handle holds the reference image(s), an optional negative image, the adapter and
CLIP vision file names, the scale, the mode and how several images combine. Nothing
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


def handle(image, negative_image, ipadapter, clip_vision, scale, mode, combine):
    if mode not in MODES:
        raise IPAdapterRequestError(f"mode must be one of {', '.join(MODES)}, not {mode!r}.")
    if combine not in COMBINE:
        raise IPAdapterRequestError(f"combine must be one of {', '.join(COMBINE)}, not {combine!r}.")
    images.to_uint8(image, "image prompt")  # a wrong shape fails here, naming the input
    if negative_image is not None:
        images.to_uint8(negative_image, "negative image prompt")
    return {"image": image, "negative_image": negative_image, "ipadapter": ipadapter, "clip_vision": clip_vision,
            "scale": float(scale), "mode": mode, "combine": combine}


def files(ip):
    return [("ipadapter", ip["ipadapter"], ADAPTER_SOURCE), ("clip_vision", ip["clip_vision"], ENCODER_SOURCE)]


def local_job(ip, adapter_path, encoder_path):
    """The local sampler's part of the job: paths, uint8 images and settings."""
    negative = ip["negative_image"]
    return {"adapter": adapter_path, "encoder": encoder_path, "images": images.to_uint8(ip["image"], "image prompt"),
            "negative": None if negative is None else images.to_uint8(negative, "negative image prompt"),
            "scale": ip["scale"], "mode": ip["mode"], "combine": ip["combine"]}


def segmind_fields(ip):
    """(fields for ip-sdxl-openpose, names of settings Segmind cannot take)."""
    refs = images.to_uint8(ip["image"], "image prompt")
    fields = {"ip_image": images.from_uint8(refs[:1]), "ip_adapter_scale": ip["scale"]}
    ignored = []
    if len(refs) > 1:
        ignored.append("image prompts after the first")
    if ip["negative_image"] is not None:
        ignored.append("negative_image")
    if ip["mode"] != "standard":
        ignored.append("mode")
    return fields, ignored
