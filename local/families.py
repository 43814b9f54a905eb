"""What a model file is, from its tensor names (and a folder's index), before anything loads:
which family a checkpoint is (SDXL, its refiner, SD1.x/2.x, SD3, Flux, a bare UNet) and how it is
sampled (epsilon, v-prediction, zero terminal SNR: the `v_pred` / `ztsnr` keys ComfyUI reads), which
kind a ControlNet is (SDXL, SD1.x/2.x, Union, Control-LoRA, T2I-Adapter, ControlLLLite), and the
refusals the SDXL nodes give for the wrong ones, naming the file, what it is and where to get the
right one (or which loader takes it).
"""
import json
import os
import re

from ..host import weights

SDXL_SOURCE = "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0 (sd_xl_base_1.0.safetensors)"
OPENPOSE_SOURCE = ("https://huggingface.co/thibaud/controlnet-openpose-sdxl-1.0 (OpenPoseXL2.safetensors) or "
                   "https://huggingface.co/xinsir/controlnet-openpose-sdxl-1.0 (folder)")
CORE_CONTROL = ("core's Load ControlNet Model and Apply ControlNet (Advanced) take it, with core's KSampler; "
                "PF_OpenPoseExtract's pose map and PF_IPAdapterApply work there (the core_ipadapter_openpose example)")
REFUSED_CONTROLS = {  # kinds PoseForge's sampler does not run: what takes them instead
    "Control-LoRA": CORE_CONTROL,
    "T2I-Adapter": CORE_CONTROL,
    "ControlLLLite": ("core ComfyUI has no loader for it; kohya-ss's ControlNet-LLLite-ComfyUI pack applies it to "
                      "core's MODEL, for core's KSampler"),
}
OTHER_CONTROLS = ("canny", "depth", "scribble", "softedge", "lineart", "tile", "seg", "normal", "mlsd", "inpaint",
                  "blur", "hed", "sketch", "recolor", "qrcode")

class ModelFamilyError(ValueError):
    pass


# -- what a file is ------------------------------------------------------------
def checkpoint_family(keys):
    """The model family a checkpoint's tensor names say it is."""
    def has(prefix):
        return any(k.startswith(prefix) for k in keys)

    if has("conditioner.embedders.1.model.") and has("model.diffusion_model.label_emb."):
        return "SDXL" if has("conditioner.embedders.0.transformer.") else "SDXL refiner"
    if has("model.diffusion_model.joint_blocks."):
        return "SD3"
    if has("double_blocks.") or has("model.diffusion_model.double_blocks."):
        return "Flux"
    if has("cond_stage_model.transformer."):
        return "SD1.x"
    if has("cond_stage_model.model."):
        return "SD2.x"
    if has("model.diffusion_model.label_emb.") or has("label_emb."):
        return "SDXL UNet alone (no text encoders or VAE)"
    if has("down_blocks.") and has("time_embedding."):
        return "a diffusers UNet/ControlNet file, not a whole checkpoint"
    return "not a Stable Diffusion checkpoint"


def controlnet_family(keys):
    keys = set(keys)
    if "controlnet_cond_embedding.conv_in.weight" in keys:  # diffusers layout
        if "add_embedding.linear_1.weight" not in keys:
            return "SD1.x/2.x ControlNet"
        if "task_embedding" in keys or any(k.startswith("controlnet_mode_embedding") for k in keys):
            return "SDXL ControlNet Union"
        return "SDXL ControlNet"
    hint = {k[len("control_model."):] if k.startswith("control_model.") else k for k in keys}
    if "input_hint_block.0.weight" in hint:
        return "SDXL ControlNet" if "label_emb.0.0.weight" in hint else "SD1.x/2.x ControlNet"
    if any(k.startswith("lllite_") for k in keys):
        return "ControlLLLite"
    if any("lora" in k for k in keys):
        return "Control-LoRA"
    if any(k.startswith("adapter.") or k.startswith("body.") for k in keys):
        return "T2I-Adapter"
    return "not a ControlNet"


def prediction(keys):
    """How a single-file checkpoint says it is sampled, as ComfyUI reads it: `v_pred` (v-prediction) and
    `ztsnr` (zero terminal SNR) marker tensors; None when it says nothing (epsilon, or its config's)."""
    keys = set(keys)
    if "v_pred" not in keys:
        return None
    return "v_prediction_zsnr" if "ztsnr" in keys else "v_prediction"


def check_checkpoint(path):
    """Refuse anything but an SDXL base-layout checkpoint, naming the file and what it is."""
    if os.path.isdir(path):
        index = os.path.join(path, "model_index.json")
        kind = read_json(index).get("_class_name", "?") if os.path.exists(index) else "a folder without model_index.json"
        if kind not in ("StableDiffusionXLPipeline", "StableDiffusionXLControlNetPipeline"):
            raise ModelFamilyError(f"{path} is {kind}, not an SDXL diffusers folder (StableDiffusionXLPipeline).")
        return
    keys = weights.keys(path)
    family = checkpoint_family(keys)
    if family != "SDXL":
        raise ModelFamilyError(f"{os.path.basename(path)} is {family}, not an SDXL checkpoint: choose an SDXL base "
                               f"model or a fine-tune of it ({SDXL_SOURCE}).")
    if any(k.startswith(("edm_mean", "edm_std", "edm_vpred.")) for k in keys):
        raise ModelFamilyError(f"{os.path.basename(path)} is an SDXL sampled on an EDM schedule (Playground v2.5, "
                               "EDM v-prediction): PoseForge's sampler does not run those; core's KSampler does.")


def check_controlnet(path, pose=True, keys=None):
    """Refuse a file that is no SDXL ControlNet (or Union) PoseForge runs; `pose`: it is the pose's own
    ControlNet, so one named for another control (canny, depth...) is refused too. `keys`: its tensor
    names, when the caller has read them."""
    family = controlnet_family(weights.keys(controlnet_weights(path)) if keys is None else keys)
    file = os.path.basename(path.rstrip("/\\"))
    if family in REFUSED_CONTROLS:
        raise ModelFamilyError(f"{file} is a {family}, which PoseForge's sampler does not run: "
                               f"{REFUSED_CONTROLS[family]}.")
    if family not in ("SDXL ControlNet", "SDXL ControlNet Union"):
        wanted = "an SDXL OpenPose ControlNet" if pose else "an SDXL ControlNet"
        raise ModelFamilyError(f"{file} is {family}, not {wanted} ({OPENPOSE_SOURCE}).")
    if not pose or family == "SDXL ControlNet Union":  # a union runs in openpose mode for a pose
        return
    name = os.path.basename(path.rstrip("/\\")).lower() + " " + os.path.basename(os.path.dirname(path)).lower()
    words = set(re.split(r"[^a-z0-9]+", name))  # whole words: "hed" is no part of "patched"
    other = [w for w in OTHER_CONTROLS if w in words]
    if other and "pose" not in name:
        raise ModelFamilyError(f"{os.path.basename(path)} looks like a {other[0]} ControlNet (by its name; the weights "
                               f"cannot tell): the pose nodes need an OpenPose one ({OPENPOSE_SOURCE}).")


def controlnet_weights(path):
    if os.path.isdir(path):
        for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                     "diffusion_pytorch_model.bin"):
            if os.path.exists(os.path.join(path, name)):
                return os.path.join(path, name)
        raise ModelFamilyError(f"{path} holds no diffusion_pytorch_model weights.")
    return path


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
