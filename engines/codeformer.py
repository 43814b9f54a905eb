"""CodeFormer face restoration: local (RetinaFace + CodeFormer + optional ParseNet mask
and upscaler) or Segmind's `codeformer`, behind one signature.

A request is a dict: photos (uint8 RGB list), model, fidelity, upscale, background_enhance,
upscale_model (file name or None), face_upsample, only_center_face, detection_threshold,
paste_mask ("parse" | "square"), visibility. Each side returns ((IMAGE, MASK), details).
"""
from ..host import images, models
from ..host.progress import Progress

DEFAULTS = {"model": "codeformer.pth", "only_center_face": False, "detection_threshold": 0.8,
            "paste_mask": "parse", "visibility": 1.0, "upscale_model": None}
SEGMIND_IGNORES = ("model", "only_center_face", "detection_threshold", "paste_mask", "visibility", "upscale_model")


class CodeFormerRequestError(ValueError):
    pass


def _upscaler(request):
    """The upscale model file the local side uses, or None."""
    return request["upscale_model"] if request["background_enhance"] or request["face_upsample"] else None


def files(request):
    from ..local import codeformer as engine

    return engine.wanted(request["model"], _upscaler(request), request["paste_mask"] == "parse")


def local(request):
    import numpy as np
    import torch

    from ..local import codeformer as engine

    photos = request["photos"]
    for photo in photos:  # before anything loads
        images.check_side(photo.shape[1] * request["upscale"], photo.shape[0] * request["upscale"],
                          f"CodeFormer at upscale {request['upscale']}")
    upscaler = _upscaler(request)
    if request["background_enhance"] and upscaler is None:  # Segmind has its own enhancer; here we need a file
        raise CodeFormerRequestError("background_enhance needs an upscale_model (models/upscale_models) on the "
                                     "local backend; turn it off for a plain Lanczos resize.")
    model_path, det_path, *rest = models.require(files(request))
    up_path = rest.pop(0) if upscaler else None
    parse_path = rest.pop(0) if rest else None
    with Progress(2 * len(photos), "CodeFormer") as bar:
        outs, masks, counts = engine.process(
            photos, engine.restorer(model_path), engine.detector(det_path), request["fidelity"],
            request["upscale"], engine.upscaler(up_path) if up_path else None, request["face_upsample"],
            request["only_center_face"], request["detection_threshold"], step=bar.step,
            parser_r=engine.parser(parse_path) if parse_path else None, visibility=request["visibility"],
            background_enhance=request["background_enhance"])
    result = (images.from_uint8(outs), torch.from_numpy(np.stack(masks)))
    return result, {"faces": sum(counts), "faces_per_image": counts}


def segmind(request):
    import torch

    from ..segmind.client import Client

    jobs = [{"image": images.from_uint8([p]), "scale": request["upscale"], "fidelity": request["fidelity"],
             "bg": request["background_enhance"], "face": request["face_upsample"]} for p in request["photos"]]
    out, info = Client().run("codeformer", jobs)
    ignored = [name for name in SEGMIND_IGNORES if request[name] != DEFAULTS[name]]
    if ignored:
        info["segmind_ignores"] = ", ".join(ignored)  # report() puts it in the log and the ui
    return (out, torch.zeros(out.shape[:3])), info
