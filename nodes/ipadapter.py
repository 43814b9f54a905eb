"""PF_IPAdapter: an image prompt for PF_SDXLOpenPose."""
from ..engines import ipadapter as engine
from ..host import models


class PF_IPAdapter:
    NODE_ID = "PF_IPAdapter"
    DISPLAY_NAME = "IP-Adapter XL (PoseForge)"
    CATEGORY = "PoseForge/sdxl"
    RETURN_TYPES = ("PF_IPADAPTER",)
    RETURN_NAMES = ("ip_adapter",)
    FUNCTION = "prepare"
    DESCRIPTION = ("An image prompt for PF_SDXLOpenPose: the look comes from the reference image(s). Local: an SDXL "
                   "IP-Adapter (models/ipadapter) and the CLIP vision encoder it needs (models/clip_vision), told "
                   "apart by their contents; nothing loads here. Segmind (ip-sdxl-openpose): the first reference "
                   "image and the scale are sent.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Reference image(s); a batch gives several references (see combine)."}),
            "ipadapter": (models.choices("ipadapter", "ip-adapter-plus_sdxl_vit-h.safetensors"), {
                "tooltip": "An SDXL IP-Adapter from h94/IP-Adapter sdxl_models (.safetensors or .bin). The plus-face "
                           "adapter expects a face crop as the reference."}),
            "clip_vision": (models.choices("clip_vision", "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"), {
                "tooltip": "The encoder the adapter needs: ViT-H-14 for the _vit-h adapters, ViT-bigG-14 for "
                           "ip-adapter_sdxl. A wrong pair is refused with the right name."}),
            "ip_adapter_scale": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 2.0, "step": 0.05, "tooltip": (
                "How strongly the image prompt steers (0 = not at all). Segmind takes 0..1.")}),
            "mode": (engine.MODES, {"default": "standard", "tooltip": (
                "standard: every attention layer. style: only the layer that carries style (InstantStyle), so the "
                "reference's look without its layout. composition: only the layout layer. Local only.")}),
            "combine": (engine.COMBINE, {"default": "average", "tooltip": (
                "Several reference images: average their embeddings, or concat their tokens (each keeps its "
                "own influence). Local only.")}),
        }, "optional": {
            "negative_image": ("IMAGE", {"tooltip": "What to steer away from (local only); several are averaged."}),
            "loaded_clip_vision": ("CLIP_VISION", {"tooltip": (
                "An encoder core's Load CLIP Vision already loaded: used instead of the clip_vision file (local "
                "only), with ComfyUI's own image preprocessing.")}),
            "face_crop": (engine.FACE_CROPS, {"default": "auto", "tooltip": (
                "Crop each reference to a square around its largest face, found by the pose detector (with a "
                "margin, as plus-face was trained); where none is found, the whole image (CLIP's centre crop). "
                "auto: for a plus-face adapter (its file name says face).")}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, ipadapter, clip_vision):
        """Any file name: the sampler's backend decides whether the files are needed (a Segmind run needs
        neither), and a local run names each missing file and its folder."""
        return True

    def prepare(self, image, ipadapter, clip_vision, ip_adapter_scale=0.6, mode="standard", combine="average",
                negative_image=None, loaded_clip_vision=None, face_crop="auto"):
        return (engine.handle(image, negative_image, ipadapter, clip_vision, ip_adapter_scale, mode, combine,
                              loaded_clip_vision, face_crop),)


class PF_IPAdapterApply:
    NODE_ID = "PF_IPAdapterApply"
    DISPLAY_NAME = "IP-Adapter on MODEL (PoseForge)"
    CATEGORY = "PoseForge/sdxl"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "apply"
    DESCRIPTION = ("PF_IPAdapter's image prompt on core's MODEL (Load Checkpoint, LoRA Loader, ...), for core's "
                   "KSampler and any sampler pack: a patched copy of the model, the model that came in unchanged. "
                   "Chain several (a face and a style). Local only.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "ip_adapter": ("PF_IPADAPTER",),
            "start_at": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                "Fraction of the run at which the image prompt starts acting (as core's ControlNet start_percent)")}),
            "end_at": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                "Fraction of the run after which it stops")}),
        }, "optional": {
            "attn_mask": ("MASK", {"tooltip": "Where the image prompt acts (1) and where not (0); resized to each "
                                              "attention resolution."}),
        }}

    def apply(self, model, ip_adapter, start_at=0.0, end_at=1.0, attn_mask=None):
        return (engine.on_model(model, ip_adapter, start_at, end_at, attn_mask),)


NODES = (PF_IPAdapter, PF_IPAdapterApply)
