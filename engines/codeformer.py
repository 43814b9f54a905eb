"""Face restoration: local (RetinaFace + CodeFormer, GFPGAN or RestoreFormer(++) + optional ParseNet
mask and upscaler) or Segmind's `codeformer`, behind one signature (engines/backend.py).

A request is PF_CodeFormer's inputs: image (IMAGE), model, fidelity, upscale,
background_enhance, face_upsample, only_center_face, detection_threshold, upscale_model
(file name or "none"), paste_mask ("parse" | "square"), visibility, loaded_upscale_model (an
UPSCALE_MODEL core's UpscaleModelLoader loaded, used instead of the file; optional), face_select,
face_index and min_face_size (which faces; optional). Each side
returns ((IMAGE, MASK), details).
"""
from ..host import images, models
from ..host.progress import Progress

NONE = "none"
FACE_SELECT = ["all", "largest", "index"]  # which faces a local run restores (local/codeformer.detect)
SEGMIND_IGNORES = ["model", "only_center_face", "detection_threshold", "paste_mask", "visibility", "upscale_model",
                   "loaded_upscale_model", "face_select", "face_index", "min_face_size", "faces"]


class CodeFormerRequestError(ValueError):
    pass


def _upscaler(request):
    """The upscale model file the local side uses, or None (none wanted, or a loaded one connected)."""
    wanted = request["background_enhance"] or request["face_upsample"]
    if not wanted or request.get("loaded_upscale_model") is not None or request["upscale_model"] == NONE:
        return None
    return request["upscale_model"]


def model_files():
    """The face restorer files in models/facerestore_models (CodeFormer, GFPGAN, RestoreFormer(++), by content)."""
    from ..local import codeformer as engine

    return engine.restorer_files()


def parse_ready():
    """Whether ParseNet's file is there (paste_mask "parse" can run locally)."""
    from ..local import codeformer as engine

    return models.find("facedetection", engine.PARSE_FILE) is not None


def ready():
    """Whether a local run can start: a face restorer file and the face detector are there."""
    from ..local import codeformer as engine

    return bool(model_files()) and models.find("facedetection", engine.DETECTION_FILE) is not None


def files(request):
    from ..local import codeformer as engine

    select = request.get("face_select", "all")
    if select not in FACE_SELECT:
        raise CodeFormerRequestError(f"face_select must be one of {', '.join(FACE_SELECT)}, not {select!r}.")
    for name in ("face_index", "min_face_size"):
        if not isinstance(request.get(name, 0), int) or not 0 <= request.get(name, 0) <= images.MAX_SIDE:
            raise CodeFormerRequestError(f"{name} {request.get(name)!r} must be a whole number within "
                                         f"0..{images.MAX_SIDE}.")
    wanted = engine.wanted(request["model"], _upscaler(request), request["paste_mask"] == "parse")
    if request.get("faces") is not None:
        del wanted["detector"]  # the pose's faces: RetinaFace is not needed
    return wanted


def pose_landmarks(pose, photos):
    """Per photo, the 5-point landmarks of the faces of PF_POSE `pose` (its frame for that photo: one for every
    photo, or one per photo or per each photo's samples), placed on the photo as a sampler placed it (fit)."""
    from ..local import codeformer as engine, pose_render
    from .pose import per_image

    frames = pose.get("keypoints") if isinstance(pose, dict) else None
    if not frames:
        raise CodeFormerRequestError("faces must be a PF_POSE with keypoints (PF_OpenPoseExtract or PF_PoseRender).")
    out = []
    for photo, frame in zip(photos, per_image(frames, len(photos))):
        height, width = photo.shape[:2]
        out.append(engine.pose_landmarks(pose_render.placed(frame, width, height, "fit"), width, height))
    return out


def local(request, paths):
    import numpy as np
    import torch

    from ..local import codeformer as engine

    photos = images.to_uint8(request["image"], "image")
    for photo in photos:  # before anything loads
        images.check_side(photo.shape[1] * request["upscale"], photo.shape[0] * request["upscale"],
                          f"CodeFormer at upscale {request['upscale']}")
    loaded = request.get("loaded_upscale_model")
    upscaler = engine.loaded_upscaler(loaded) if loaded is not None else (
        engine.upscaler(paths["upscaler"]) if "upscaler" in paths else None)
    if request["background_enhance"] and upscaler is None:  # Segmind has its own enhancer; here a model
        raise CodeFormerRequestError("background_enhance needs an upscale_model (models/upscale_models) on the "
                                     "local backend; turn it off for a plain Lanczos resize.")
    with Progress(2 * len(photos), "CodeFormer") as bar:
        faces = request.get("faces")
        outs, masks, counts = engine.process(
            photos, engine.restorer(paths["model"]), engine.detector(paths["detector"]) if faces is None else None,
            request["fidelity"],
            request["upscale"], upscaler, request["face_upsample"], request["only_center_face"], request["detection_threshold"], step=bar.step,
            parser_r=engine.parser(paths["parser"]) if "parser" in paths else None,
            visibility=request["visibility"], background_enhance=request["background_enhance"],
            select=(request.get("face_select", "all"), request.get("face_index", 0), request.get("min_face_size", 0)),
            landmarks=None if faces is None else pose_landmarks(faces, photos))
    result = (images.from_uint8(outs), torch.from_numpy(np.stack(masks)))
    return result, {"faces": sum(counts), "faces_per_image": counts}


def segmind_jobs(request):
    jobs = [{"image": images.from_uint8([p]), "scale": request["upscale"], "fidelity": request["fidelity"],
             "bg": request["background_enhance"], "face": request["face_upsample"]}
            for p in images.to_uint8(request["image"], "image")]
    return "codeformer", jobs, SEGMIND_IGNORES


def segmind(request):
    import torch

    from .backend import segmind_run

    endpoint, jobs, ignored = segmind_jobs(request)
    out, info = segmind_run(endpoint, jobs)
    return (out, torch.zeros(out.shape[:3])), dict(info, segmind_ignores=ignored)
