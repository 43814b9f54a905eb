"""CodeFormer face restoration: local (RetinaFace + CodeFormer + optional upscaler)
or Segmind's `codeformer`, behind one signature.

A request is a dict: photos (uint8 RGB list), model, fidelity, upscale,
upscaler (file name or None), face_upsample, only_center_face, detection_threshold.
Each side returns ((IMAGE, MASK), details for the node's ui).
"""
from ..host import images, models
from ..host.progress import Progress


def files(request):
    from ..local import codeformer as engine

    return engine.wanted(request["model"], request["upscaler"])


def local(request):
    import numpy as np
    import torch

    from ..local import codeformer as engine

    photos = request["photos"]
    model_path, det_path, *rest = models.require(files(request))
    with Progress(2 * len(photos), "CodeFormer") as bar:
        outs, masks, counts = engine.process(
            photos, engine.restorer(model_path), engine.detector(det_path), request["fidelity"],
            request["upscale"], engine.upscaler(rest[0]) if rest else None, request["face_upsample"],
            request["only_center_face"], request["detection_threshold"], step=bar.step)
    result = (images.from_uint8(outs), torch.from_numpy(np.stack(masks)))
    return result, {"faces": sum(counts), "faces_per_image": counts}


def segmind(request):
    import torch

    from ..segmind.client import Client

    jobs = [{"image": images.from_uint8([p]), "scale": request["upscale"], "fidelity": request["fidelity"],
             "bg": request["upscaler"] is not None, "face": request["face_upsample"]}
            for p in request["photos"]]
    out, info = Client().run("codeformer", jobs)
    return (out, torch.zeros(out.shape[:3])), info
