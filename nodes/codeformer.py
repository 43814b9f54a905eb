"""PF_CodeFormer: face restoration + upscale, locally or on Segmind's `codeformer`."""
from ..engines import backend, codeformer
from ..host import models


class PF_CodeFormer:
    NODE_ID = "PF_CodeFormer"
    DISPLAY_NAME = "CodeFormer Face Restore (PoseForge)"
    CATEGORY = "PoseForge/face"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "face_mask")
    FUNCTION = "restore"
    ENGINE = codeformer  # engines/plan.py answers what the node will do from it
    DESCRIPTION = ("Detects faces (RetinaFace), restores them with CodeFormer (or, locally, GFPGAN, RestoreFormer or "
                   "RestoreFormer++) and pastes them back onto the image upscaled `upscale` times. CodeFormer is "
                   "under the S-Lab non-commercial license. face_mask marks the restored faces (local backend only; "
                   "empty on Segmind).")

    @classmethod
    def INPUT_TYPES(cls):
        parse_ready = codeformer.parse_ready()
        return {"required": {
            "image": ("IMAGE",),
            "model": (codeformer.model_files() or ["codeformer.pth"], {
                "tooltip": "A face restorer in models/facerestore_models: CodeFormer, GFPGAN, RestoreFormer or "
                           "RestoreFormer++, told apart by their weights (other files there are not listed). "
                           "Segmind runs CodeFormer."}),
            "fidelity": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                   "tooltip": "CodeFormer: 0 best quality, 1 most faithful to the input face "
                                              "(GFPGAN and RestoreFormer(++) have no such control: use visibility)"}),
            "upscale": ("INT", {"default": 1, "min": 1, "max": 4, "tooltip": "1 keeps the image size"}),
            "background_enhance": ("BOOLEAN", {"default": False, "tooltip": (
                "enhance the background: locally with upscale_model, on Segmind with its own enhancer. "
                "Off: a plain Lanczos resize")}),
            "face_upsample": ("BOOLEAN", {"default": False}),
            "only_center_face": ("BOOLEAN", {"default": False}),
            "detection_threshold": ("FLOAT", {"default": 0.8, "min": 0.05, "max": 1.0, "step": 0.05}),
            "backend": backend.input_spec(),
            "upscale_model": ([codeformer.NONE] + models.list_files("upscale_models"), {
                "default": codeformer.NONE, "tooltip": "local: the upscale model for background_enhance and face_upsample"}),
            "paste_mask": (["parse", "square"], {"default": "parse" if parse_ready else "square", "tooltip": (
                "parse: paste only the face itself (ParseNet, parsing_parsenet.pth in models/facedetection), "
                "leaving hair and neck alone; square: a soft square, which can leave seams")}),
            "visibility": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                     "tooltip": "blend of restored (1) and original (0) faces"}),
        }, "optional": {
            "loaded_upscale_model": ("UPSCALE_MODEL", {"tooltip": (
                "an upscale model core's Load Upscale Model already loaded: used instead of upscale_model "
                "(local only)")}),
            "face_select": (codeformer.FACE_SELECT, {"default": "all", "tooltip": (
                "which faces to restore: all, the largest, or the face_index-th from the left (only_center_face "
                "wins when on). Local only.")}),
            "face_index": ("INT", {"default": 0, "min": 0, "max": 99, "tooltip": "face_select index: 0 = leftmost"}),
            "min_face_size": ("INT", {"default": 0, "min": 0, "max": 4096, "tooltip": (
                "faces whose box is smaller than this many pixels a side are left as they are. Local only.")}),
            "faces": ("PF_POSE", {"tooltip": (
                "the faces of a pose (PF_OpenPoseExtract's, or the pose a sampler drew): their eyes, nose and mouth "
                "align the faces instead of RetinaFace detecting them again (its file is not needed). Local only.")}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, model, backend):  # noqa: F811 - ComfyUI passes the input by its name
        """ComfyUI would refuse a `model` not in the list; a Segmind (or auto) run needs no local file,
        so only a local run asks for one here (the run names what is missing and where it goes)."""
        inputs = cls.INPUT_TYPES()["required"]
        if backend not in inputs["backend"][0]:
            return f"backend must be one of {', '.join(inputs['backend'][0])}"
        if backend == "local" and model not in inputs["model"][0]:
            return (f"{model} is not a face restorer file (CodeFormer, GFPGAN, RestoreFormer(++)) in "
                    "models/facerestore_models; choose one there, or use backend segmind")
        return True

    def restore(self, image, model, **inputs):
        return backend.run(type(self), codeformer, dict(inputs, image=image, model=model))


NODES = (PF_CodeFormer,)
