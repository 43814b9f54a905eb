"""PF_SDXLLoader, PF_SDXLText2Image and PF_SDXLOpenPose."""
from ..engines import backend as policy, sdxl as engine
from ..host import models

SCHEDULER_NAMES = ["DDIM", "DPM Multi", "DPM Single", "Euler a", "Euler", "Heun", "DPM2 a Karras", "DPM2 Karras",
                   "LMS", "PNDM", "DDPM", "UniPC"]  # Segmind's names; local/sdxl.py maps each to diffusers
SEED_MAX = 999_999_999_999_999  # Segmind's largest seed, so a seed means the same on both backends


def _sampling_inputs(default_scheduler, default_steps):
    return {
        "prompt": ("STRING", {"multiline": True, "default": "a photo of a dancer, studio light, detailed"}),
        "negative_prompt": ("STRING", {"multiline": True, "default": "blurry, lowres, deformed"}),
        "width": ("INT", {"default": 1024, "min": 512, "max": 2048, "step": 8}),
        "height": ("INT", {"default": 1024, "min": 512, "max": 2048, "step": 8}),
        "num_inference_steps": ("INT", {"default": default_steps, "min": 1, "max": 100}),
        "guidance_scale": ("FLOAT", {"default": 7.5, "min": 1.0, "max": 25.0, "step": 0.1}),
        "scheduler": (SCHEDULER_NAMES, {"default": default_scheduler}),
        "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True}),
        "samples": ("INT", {"default": 1, "min": 1, "max": 4}),
        "backend": policy.input_spec(),
    }


def _request(sdxl_handle, prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler,
             seed, samples):
    return {"sdxl": sdxl_handle, "prompt": prompt, "negative_prompt": negative_prompt, "width": width,
            "height": height, "steps": num_inference_steps, "guidance": guidance_scale, "scheduler": scheduler,
            "seed": seed, "samples": samples}


class PF_SDXLLoader:
    NODE_ID = "PF_SDXLLoader"
    DISPLAY_NAME = "SDXL Loader (PoseForge)"
    CATEGORY = "PoseForge/sdxl"
    RETURN_TYPES = ("PF_SDXL",)
    RETURN_NAMES = ("sdxl",)
    FUNCTION = "load"
    DESCRIPTION = ("Chooses an SDXL checkpoint (models/checkpoints, or a diffusers folder in models/diffusers) and "
                   "an OpenPose SDXL ControlNet (models/controlnet; 'none' for text-to-image). Nothing loads here: "
                   "the weights load at the first sampling and stay cached.")

    @classmethod
    def INPUT_TYPES(cls):
        ckpts = models.list_files("checkpoints") + ["[diffusers] " + d for d in models.list_dirs("diffusers")]
        return {"required": {
            "ckpt_name": (ckpts or ["sd_xl_base_1.0.safetensors"],),
            "controlnet": (["none"] + models.list_files("controlnet"), {"default": "none"}),
            "dtype": (engine.DTYPES, {
                "default": "auto", "tooltip": "auto: fp16 on CUDA, fp32 on CPU/MPS. The VAE always decodes in fp32."}),
        }}

    def load(self, ckpt_name, controlnet="none", dtype="auto"):
        return (engine.handle(ckpt_name, controlnet, dtype),)


class PF_SDXLText2Image:
    NODE_ID = "PF_SDXLText2Image"
    DISPLAY_NAME = "SDXL Text to Image (PoseForge)"
    CATEGORY = "PoseForge/sdxl"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "generate"
    DESCRIPTION = "SDXL text-to-image, locally (diffusers, needs PF_SDXLLoader) or on Segmind's sdxl1.0-txt2img."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": _sampling_inputs("UniPC", 25), "optional": {"sdxl": ("PF_SDXL",)}}

    def generate(self, backend=policy.DEFAULT, sdxl=None, **inputs):
        return policy.run(self.NODE_ID, backend, engine, _request(sdxl, **inputs))


class PF_SDXLOpenPose:
    NODE_ID = "PF_SDXLOpenPose"
    DISPLAY_NAME = "SDXL OpenPose (PoseForge)"
    CATEGORY = "PoseForge/sdxl"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    FUNCTION = "generate"
    DESCRIPTION = ("SDXL guided by an OpenPose ControlNet: one image per pose x samples, in order. Local: the pose "
                   "map; Segmind (sdxl-openpose): the pose's source photo, from which Segmind extracts the pose.")

    @classmethod
    def INPUT_TYPES(cls):
        required = {"pose": ("PF_POSE,IMAGE", {"tooltip": "PF_POSE from OpenPose Extract, or a pose-map IMAGE"})}
        required.update(_sampling_inputs("DPM2 Karras", 30))
        required["controlnet_scale"] = ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05})
        required["control_start"] = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01})
        required["control_end"] = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})
        return {"required": required, "optional": {"sdxl": ("PF_SDXL",), "ip_adapter": ("PF_IPADAPTER",)}}

    def generate(self, pose, controlnet_scale=0.5, control_start=0.0, control_end=1.0, backend=policy.DEFAULT,
                 sdxl=None, ip_adapter=None, **inputs):
        request = dict(_request(sdxl, **inputs), pose=pose, controlnet_scale=controlnet_scale,
                       control_start=control_start, control_end=control_end, ip_adapter=ip_adapter)
        return policy.run(self.NODE_ID, backend, engine, request)


NODES = (PF_SDXLLoader, PF_SDXLText2Image, PF_SDXLOpenPose)
