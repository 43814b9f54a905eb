"""PF_CodeFormer: face restoration + upscale, locally or on Segmind's `codeformer`."""
from ..engines import backend as policy, codeformer
from ..host import images, models

NONE = "none"


class PF_CodeFormer:
    NODE_ID = "PF_CodeFormer"
    DISPLAY_NAME = "CodeFormer Face Restore (PoseForge)"
    CATEGORY = "PoseForge/face"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "face_mask")
    FUNCTION = "restore"
    DESCRIPTION = ("Detects faces (RetinaFace), restores them with CodeFormer and pastes them back onto the "
                   "image upscaled `upscale` times. CodeFormer is under the S-Lab non-commercial license. "
                   "face_mask marks the restored faces (local backend only; empty on Segmind).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "model": (models.choices("facerestore_models", "codeformer.pth"),),
            "fidelity": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                   "tooltip": "0: best quality, 1: most faithful to the input face"}),
            "upscale": ("INT", {"default": 2, "min": 1, "max": 4}),
            "background_enhance": ([NONE] + models.list_files("upscale_models"), {
                "default": NONE, "tooltip": "an upscale model for the background (local); 'none': Lanczos "
                                            "resize. On Segmind: its own background enhancer"}),
            "face_upsample": ("BOOLEAN", {"default": False}),
            "only_center_face": ("BOOLEAN", {"default": False}),
            "detection_threshold": ("FLOAT", {"default": 0.8, "min": 0.05, "max": 1.0, "step": 0.05}),
            "backend": policy.input_spec(),
        }}

    def restore(self, image, model, fidelity=0.5, upscale=2, background_enhance=NONE, face_upsample=False,
                only_center_face=False, detection_threshold=0.8, backend=policy.DEFAULT):
        request = {"photos": images.to_uint8(image, "image"), "model": model, "fidelity": fidelity,
                   "upscale": upscale, "upscaler": None if background_enhance == NONE else background_enhance,
                   "face_upsample": face_upsample, "only_center_face": only_center_face,
                   "detection_threshold": detection_threshold}
        return policy.run(self.NODE_ID, backend, codeformer, request)


NODES = (PF_CodeFormer,)
