"""PF_CodeFormer: face restoration + upscale, locally or on Segmind's `codeformer`."""
from ..host import backend as policy, cancel, images, models
from ..host.progress import Progress

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
                only_center_face=False, detection_threshold=0.8, backend="auto"):
        photos = images.to_uint8(image, "image")
        upscaler = None if background_enhance == NONE else background_enhance
        from ..local import codeformer as engine

        chosen = policy.choose(backend, engine.wanted(model, upscaler))
        if chosen == "segmind":
            return self._segmind(photos, fidelity, upscale, upscaler is not None, face_upsample)
        model_path, det_path, *rest = models.require(engine.wanted(model, upscaler))
        net, det = engine.restorer(model_path), engine.detector(det_path)
        up = engine.upscaler(rest[0]) if rest else None
        with Progress(2 * len(photos), "CodeFormer") as bar:
            def step(n=1):
                cancel.check_cancel()
                bar.update(n)

            outs, masks, counts = engine.process(photos, net, det, fidelity, upscale, up, face_upsample,
                                                 only_center_face, detection_threshold, step=step)
        import numpy as np
        import torch

        ui = policy.report(self.NODE_ID, "local", faces=sum(counts))
        ui["faces_per_image"] = counts
        return {"ui": ui, "result": (images.from_uint8(outs), torch.from_numpy(np.stack(masks)))}

    def _segmind(self, photos, fidelity, upscale, bg, face):
        import torch

        from ..segmind.client import Client

        jobs = [{"image": images.from_uint8([p]), "scale": upscale, "fidelity": fidelity, "bg": bg, "face": face}
                for p in photos]
        out, info = Client().run("codeformer", jobs)
        ui = policy.report(self.NODE_ID, "segmind", **info)
        return {"ui": ui, "result": (out, torch.zeros(out.shape[:3]))}


NODES = (PF_CodeFormer,)
