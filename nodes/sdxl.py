"""PF_SDXLLoader, PF_SDXLLoRA, PF_SDXLText2Image and PF_SDXLOpenPose."""
from ..engines import backend, sdxl as engine
from ..host import models

PROMPT_TIP = ("ComfyUI's prompt syntax: (word:1.3) weights, (word) = x1.1, nested parentheses multiply, \\( \\) are "
              "literal; any length (77-token chunks). Segmind is sent the text as written.")
LOCAL_TIP = "Local range; Segmind's own limits apply only when Segmind runs."
OUTPUTS = ("IMAGE", "LATENT")
HIDDEN = {"pf_graph": "PROMPT", "pf_node": "UNIQUE_ID"}  # whether the LATENT output is connected (Segmind has none)


def _second_pass_inputs():
    """The optional inputs of a pass that starts from a LATENT or an image to inpaint, and of more ControlNets
    (after the older ones: saved graphs keep their widget order)."""
    return {
        "latent": ("LATENT", {"tooltip": (
            "Start from this latent (core's VAE Encode, Latent Upscale, a first pass's LATENT); it sets the size. "
            "Without one the run starts from an empty latent. A noise mask on it (core's Set Latent Noise Mask) "
            "limits where it samples. Local only.")}),
        "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
            "As core's KSampler: 1 samples from noise (the latent gives the size only), 0.4-0.6 is a hi-res or "
            "refining pass that keeps the latent's picture, 0 returns it. Local only.")}),
        "control": ("PF_CONTROL", {"tooltip": (
            "More ControlNets (PF_ControlNet, chainable: depth, canny, lineart, tile... or a union file in a mode), "
            "applied with this node's own. Local only.")}),
        "inpaint_image": ("IMAGE", {"tooltip": (
            "Inpainting: the picture to keep; only where `mask` is 1 is generated, and it sets the size (cropped "
            "to multiples of 8 as core's VAE Encode). Local only.")}),
        "mask": ("MASK", {"tooltip": "Inpainting: 1 where to generate, 0 where inpaint_image stays as it is."}),
        "mask_grow": ("INT", {"default": 6, "min": 0, "max": engine.MASK_LIMIT, "tooltip": (
            "Inpainting: pixels the mask grows by before sampling (core's grow_mask_by)")}),
        "mask_feather": ("INT", {"default": 12, "min": 0, "max": engine.MASK_LIMIT, "tooltip": (
            "Inpainting: the seam's width in pixels, each side of the grown mask's edge; beyond it every pixel is "
            "inpaint_image's own")}),
    }


def _run(node, inputs, pf_graph, pf_node):
    from ..engines.plan import linked

    inputs["latent_out"] = linked(pf_graph, pf_node, OUTPUTS.index("LATENT"))
    return backend.run(node, engine, inputs)


def _sampling_inputs(default_scheduler, default_steps):
    lo, hi = 256, engine.SIZE[1]  # below 256 SDXL draws nothing useful; scripts may still go lower
    return {
        "prompt": ("STRING", {"multiline": True, "default": "a photo of a dancer, studio light, detailed",
                              "tooltip": PROMPT_TIP}),
        "negative_prompt": ("STRING", {"multiline": True, "default": "blurry, lowres, deformed", "tooltip": PROMPT_TIP}),
        "width": ("INT", {"default": 1024, "min": lo, "max": hi, "step": 8, "tooltip": LOCAL_TIP}),
        "height": ("INT", {"default": 1024, "min": lo, "max": hi, "step": 8, "tooltip": LOCAL_TIP}),
        "num_inference_steps": ("INT", {"default": default_steps, "min": 1, "max": 150, "tooltip": LOCAL_TIP}),
        "guidance_scale": ("FLOAT", {"default": 7.5, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": (
            "1 or less: no classifier-free guidance (speed LoRAs such as Lightning or LCM want 1-2). " + LOCAL_TIP)}),
        "scheduler": (engine.SCHEDULERS, {"default": default_scheduler, "tooltip": (
            "Segmind's twelve names run on both backends; DPM++ 2M Karras, DPM++ 2M SDE Karras, DPM++ SDE Karras, "
            "Euler Karras, LCM and TCD are local only (the README maps each to ComfyUI's sampler/scheduler).")}),
        "seed": ("INT", {"default": 0, "min": 0, "max": engine.SEED_MAX, "control_after_generate": True}),
        "samples": ("INT", {"default": 1, "min": 1, "max": 16, "tooltip": "images per pose (seed, seed+1, ...)"}),
        "backend": backend.input_spec(),
    }


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
        }, "optional": {
            "prediction": (engine.PREDICTIONS, {"default": "auto", "tooltip": (
                "auto: as the checkpoint says (its v_pred / ztsnr keys, as ComfyUI reads them; else epsilon). Set "
                "v_prediction or v_prediction_zsnr for a v-prediction model whose file does not say (grey, "
                "washed-out images mean it is one), as core's ModelSamplingDiscrete node would.")}),
        }}

    def load(self, ckpt_name, controlnet="none", dtype="auto", prediction="auto"):
        return (engine.handle(ckpt_name, controlnet, dtype, prediction),)


class PF_SDXLFromModel:
    NODE_ID = "PF_SDXLFromModel"
    DISPLAY_NAME = "SDXL from core's MODEL (PoseForge)"
    CATEGORY = "PoseForge/sdxl"
    RETURN_TYPES = ("PF_SDXL",)
    RETURN_NAMES = ("sdxl",)
    FUNCTION = "load"
    DESCRIPTION = ("Gives PoseForge's samplers the SDXL core already loaded (Load Checkpoint, LoRA Loader and other "
                   "weight patches applied) without a second copy in memory: PoseForge works on ComfyUI's own "
                   "tensors. Attention or function patches on the MODEL act only in core's samplers (the log names "
                   "them). Add an OpenPose ControlNet for PF_SDXLOpenPose. Local only.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "clip": ("CLIP",), "vae": ("VAE",),
            "controlnet": (["none"] + models.list_files("controlnet"), {"default": "none"}),
        }}

    def load(self, model, clip, vae, controlnet="none"):
        return (engine.from_core(model, clip, vae, controlnet),)


class PF_SDXLLoRA:
    NODE_ID = "PF_SDXLLoRA"
    DISPLAY_NAME = "SDXL LoRA (PoseForge)"
    CATEGORY = "PoseForge/sdxl"
    RETURN_TYPES = ("PF_SDXL",)
    RETURN_NAMES = ("sdxl",)
    FUNCTION = "apply"
    DESCRIPTION = ("Adds a LoRA from models/loras to an SDXL model, chainable like core's LoraLoader: kohya/A1111 "
                   "or diffusers keys, speed LoRAs (Lightning, LCM, Hyper, DMD2) too. Local only; it acts for each "
                   "run and the cached model comes back exactly as it was.")

    @classmethod
    def INPUT_TYPES(cls):
        strength = {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.01}
        return {"required": {
            "sdxl": ("PF_SDXL",),
            "lora_name": (models.choices("loras", "sdxl_lightning_4step_lora.safetensors"),),
            "strength_model": ("FLOAT", dict(strength, tooltip="how strongly the LoRA changes the UNet")),
            "strength_clip": ("FLOAT", dict(strength, tooltip="how strongly it changes the text encoders")),
        }}

    def apply(self, sdxl, lora_name, strength_model=1.0, strength_clip=1.0):
        return (engine.with_lora(sdxl, lora_name, strength_model, strength_clip),)


class PF_ControlNet:
    NODE_ID = "PF_ControlNet"
    DISPLAY_NAME = "ControlNet (PoseForge)"
    CATEGORY = "PoseForge/sdxl"
    RETURN_TYPES = ("PF_CONTROL",)
    RETURN_NAMES = ("control",)
    FUNCTION = "add"
    DESCRIPTION = ("One more SDXL ControlNet for PoseForge's samplers (`control` input), chainable: a file from "
                   "models/controlnet (any SDXL ControlNet, or xinsir's Union / ProMax in the mode its image is) and "
                   "its control map. Stacked with the sampler's pose ControlNet, as core's chained Apply ControlNet "
                   "nodes. Local only.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "controlnet": (models.choices("controlnet", "controlnet-union-sdxl-1.0.safetensors"),),
            "image": ("IMAGE", {"tooltip": "the control map (a depth map, canny edges...), fitted as the pose is"}),
            "union_mode": (engine.union_modes(), {"default": "auto", "tooltip": (
                "for a ControlNet Union file: which kind of map the image is (tile and repaint need ProMax). Other "
                "ControlNets have one kind: auto.")}),
            "strength": ("FLOAT", {"default": 0.6, "min": 0.0, "max": engine.STRENGTH_MAX, "step": 0.01,
                                   "tooltip": "0: not applied at all (the run is the run without it)"}),
            "start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            "end": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
        }, "optional": {"control": ("PF_CONTROL", {"tooltip": "an earlier PF_ControlNet: the entries chain"})}}

    def add(self, controlnet, image, union_mode="auto", strength=0.6, start=0.0, end=1.0, control=None):
        return (engine.with_control(control, controlnet, image, union_mode, strength, start, end),)


class PF_SDXLText2Image:
    NODE_ID = "PF_SDXLText2Image"
    DISPLAY_NAME = "SDXL Text to Image (PoseForge)"
    CATEGORY = "PoseForge/sdxl"
    RETURN_TYPES = OUTPUTS
    RETURN_NAMES = ("image", "latent")
    FUNCTION = "generate"
    ENGINE = engine  # engines/plan.py answers what the node will do from it
    DESCRIPTION = ("SDXL text-to-image, locally (diffusers, needs PF_SDXLLoader; an optional image prompt from "
                   "PF_IPAdapter) or on Segmind's sdxl1.0-txt2img.")

    @classmethod
    def INPUT_TYPES(cls):
        optional = {"sdxl": ("PF_SDXL",), "ip_adapter": ("PF_IPADAPTER", {"tooltip": "local only"})}
        return {"required": _sampling_inputs("UniPC", 25), "optional": dict(optional, **_second_pass_inputs()),
                "hidden": HIDDEN}

    def generate(self, sdxl=None, ip_adapter=None, pf_graph=None, pf_node=None, **inputs):
        return _run(type(self), dict(inputs, sdxl=sdxl, ip_adapter=ip_adapter), pf_graph, pf_node)


class PF_SDXLOpenPose:
    NODE_ID = "PF_SDXLOpenPose"
    DISPLAY_NAME = "SDXL OpenPose (PoseForge)"
    CATEGORY = "PoseForge/sdxl"
    RETURN_TYPES = OUTPUTS
    RETURN_NAMES = ("image", "latent")
    FUNCTION = "generate"
    ENGINE = engine
    DESCRIPTION = ("SDXL guided by an OpenPose ControlNet: one image per pose x samples, in order. Local: the pose "
                   "map, fitted to the output size; Segmind (sdxl-openpose): the pose's source photo, from which "
                   "Segmind extracts the pose.")

    @classmethod
    def INPUT_TYPES(cls):
        required = {"pose": ("PF_POSE,IMAGE", {"tooltip": "PF_POSE from OpenPose Extract, or a pose-map IMAGE"})}
        required.update(_sampling_inputs("DPM Multi", 30))  # one evaluation a step, on both backends
        required["controlnet_scale"] = ("FLOAT", {"default": 0.5, "min": 0.0, "max": 2.0, "step": 0.05,
                                                  "tooltip": LOCAL_TIP})
        required["control_start"] = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01})
        required["control_end"] = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})
        optional = {"sdxl": ("PF_SDXL",), "ip_adapter": ("PF_IPADAPTER",), "pose_fit": (engine.POSE_FITS, {
            "default": "fit", "tooltip": (
                "when the pose's shape differs from the output's: fit keeps the whole skeleton in proportion "
                "(a PF_POSE is drawn again at the output size, a pose-map IMAGE letterboxed), crop fills the output "
                "and cuts the overflow, stretch resizes (distorts)")})}  # optional: older graphs still run
        matching = {
            "pose_match": (engine.POSE_MATCHES, {"default": "off", "tooltip": (
                "score each image against the pose (the pose's detector, OKS: the README explains the number) and "
                "report it (score), return each pose's images best first (sort), only the best best_k (best), or "
                "draw the batch again with the next seeds while an image scores below min_score, at most "
                "max_tries times (reseed). One detector pass per image; both backends.")}),
            "best_k": ("INT", {"default": 1, "min": 1, "max": 16, "tooltip": "best: images kept per pose"}),
            "min_score": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "reseed: the score an image must reach"}),
            "max_tries": ("INT", {"default": 2, "min": 1, "max": engine.MATCH_TRIES,
                                  "tooltip": "reseed: batches drawn again at the most"}),
        }
        return {"required": required, "optional": dict(optional, **_second_pass_inputs(), **matching),
                "hidden": HIDDEN}

    def generate(self, pose, sdxl=None, ip_adapter=None, pf_graph=None, pf_node=None, **inputs):
        return _run(type(self), dict(inputs, pose=pose, sdxl=sdxl, ip_adapter=ip_adapter), pf_graph, pf_node)


NODES = (PF_SDXLLoader, PF_SDXLFromModel, PF_SDXLLoRA, PF_ControlNet, PF_SDXLText2Image, PF_SDXLOpenPose)
