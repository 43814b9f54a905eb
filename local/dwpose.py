"""DWPose: whole-body pose (COCO-WholeBody's 133 points: body, feet, face, hands) from two
networks, a YOLOX person detector and a DWPose (RTMPose, SimCC) estimator, offline, in the
OpenPose nodes' format.

Files (the ones users have; found where local/pose_files.py looks, never downloaded):
- detector: `yolox_l.torchscript.pt` (hr16/yolox-onnx) or `yolox_l.onnx` (yzd-v/DWPose);
- estimator: `dw-ll_ucoco_384_bs5.torchscript.pt` (hr16/DWPose-TorchScript-BatchSize5) or
  `dw-ll_ucoco_384.onnx` (yzd-v/DWPose).
The ONNX files are used by default: a graph and tensors, nothing executable, run on onnxruntime,
installed apart (`onnxruntime`, or `onnxruntime-gpu`, whose CUDA provider is used when ComfyUI
runs on CUDA); its sessions hold memory ComfyUI's memory manager cannot move, so they are cached
beside our Residents, listed by /poseforge/status and dropped with them by ComfyUI's "Unload models"
and POST /free (host/residency.get_outside). A TorchScript file is NOT safe to load: it carries code
(TorchScript methods, `__setstate__` among them) that `torch.jit.load` runs with the process's
rights, and ComfyUI itself never loads one. PoseForge loads the TorchScript files only when the
user opts in with `POSEFORGE_ALLOW_TORCHSCRIPT=1` (for files they trust); then they are preferred,
run by torch on ComfyUI's device as Residents ComfyUI's memory manager counts.

Processing (our code, written from the published method, as comfyui_controlnet_aux runs these
same files):
- the photo (RGB, full size) letterboxed into 640x640 (top left, grey 114), floats 0..255;
  YOLOX's raw output (1 x 8400 x 85: centre offsets, log sizes, objectness, 80 class scores)
  decoded on its stride 8/16/32 grids, score = objectness x class; non-maximum suppression at
  IoU 0.45 above 0.1; people: class 0 above 0.3, the highest score first;
- each person's box padded 1.25x and widened to 288:384, cut out by a similarity warp to
  288x384, normalised with ImageNet's RGB mean and std; the SimCC outputs (simcc_x N x 133 x 576,
  simcc_y N x 133 x 768, 2 bins a pixel) decoded by argmax, a point's score the lower maximum;
- converted to OpenPose as comfyui_controlnet_aux converts them: a neck (the shoulders' mean,
  present when both are above 0.3) inserted, COCO-17 reordered to OpenPose-18; points at or
  above 0.3 present; hands 21 + 21; face 68 + the two eyes as pupils (70, at OpenPose's indices).
"""
import os

import numpy as np

from ..host import device, models, residency, weights
from . import libs, pose_files

DETECTOR = (("yolox_l.torchscript.pt", "hr16/yolox-onnx"), ("yolox_l.onnx", "yzd-v/DWPose"))
ESTIMATOR = (("dw-ll_ucoco_384_bs5.torchscript.pt", "hr16/DWPose-TorchScript-BatchSize5"),
             ("dw-ll_ucoco_384.onnx", "yzd-v/DWPose"))
DET_SIZE = 640
STRIDES = (8, 16, 32)
POSE_W, POSE_H = 288, 384
SIMCC_SPLIT = 2.0
PADDING = 1.25
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
NMS_IOU, CANDIDATE, PERSON, PRESENT = 0.45, 0.1, 0.3, 0.3
MAX_CANDIDATES = 1000  # the most certain boxes suppression looks at (a photo has far fewer; a broken file, 8400)
TORCHSCRIPT_BATCH = 5  # the TorchScript estimator was traced for batches of 5
COCO17 = [17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]  # after the neck is inserted at 17...
OPENPOSE18 = [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]  # ...these OpenPose slots take them
BODY, FACE, LEFT_HAND, RIGHT_HAND = slice(0, 18), slice(24, 92), slice(92, 113), slice(113, 134)


class DWPoseError(RuntimeError):
    pass


OPT_IN = "POSEFORGE_ALLOW_TORCHSCRIPT"


def torchscript_allowed():
    return os.environ.get(OPT_IN, "").lower() in ("1", "true", "yes")


def files():
    """{"detector": path, "estimator": path} of the files present: ONNX, or TorchScript first when the
    user opted in (OPT_IN); MissingModelFiles names the ONNX file of each missing role and its
    TorchScript alternative, and says so when a TorchScript file was left alone."""
    found, absent, ignored = {}, [], []
    for role, options in (("detector", DETECTOR), ("estimator", ESTIMATOR)):
        (ts, ts_repo), (onnx, repo) = options
        present = {name: pose_files.find(name, repo) for name, repo in options}
        if not torchscript_allowed():
            ignored += [ts] if present.pop(ts) else []
        path = next((p for p in present.values() if p), None)
        if path:
            found[role] = path
        else:
            absent.append(("openpose", onnx, f"https://huggingface.co/{repo} (or {ts} from "
                                             f"https://huggingface.co/{ts_repo})"))
    if absent:
        hint = "Put them into the 'openpose' folder (nothing is downloaded)."
        if ignored:
            hint += (f" {', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} there but not loaded: a TorchScript "
                     f"file runs code of its own when loaded, so PoseForge loads one only when {OPT_IN}=1 is set "
                     "(for files you trust). The ONNX files carry no code.")
        raise models.MissingModelFiles(absent, hint=hint)
    return found


def available():
    try:
        files()
    except models.MissingModelFiles:
        return False
    return True


# -- running a network ------------------------------------------------------------------

def network(path):
    """A runnable network of `path`: a Resident holding the TorchScript module, or an onnxruntime session."""
    if path.lower().endswith(".onnx"):
        return _session(path)
    return residency.get(("dwpose", weights.identity(path)), lambda: _torchscript(path))


def _torchscript(path):
    import torch

    if not torchscript_allowed():  # files() never offers one then: this guards any other caller
        raise DWPoseError(f"{path} is TorchScript, which runs code of its own when loaded: set {OPT_IN}=1 to "
                          "load it (a file you trust), or use the ONNX files.")
    try:
        return torch.jit.load(path, map_location="cpu")
    except RuntimeError as exc:
        raise DWPoseError(f"{path} is not a TorchScript archive torch can load ({str(exc)[:200]}).") from None


def _session(path):
    try:
        ort = libs.load("onnxruntime")
    except libs.LibraryImportError:
        raise DWPoseError(f"{path} is an ONNX file and needs onnxruntime: pip install onnxruntime (or "
                          f"onnxruntime-gpu for CUDA) in ComfyUI's Python (or, for TorchScript files you trust, "
                          f"{DETECTOR[0][0]} and {ESTIMATOR[0][0]} with {OPT_IN}=1).") from None
    cuda = device.torch_device().type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
    providers = (["CUDAExecutionProvider"] if cuda else []) + ["CPUExecutionProvider"]
    return residency.get_outside(("dwpose", "onnxruntime", weights.identity(path), tuple(providers)),
                                 lambda: ort.InferenceSession(path, providers=providers), os.path.getsize(path))


def run(net, batch, batch_size=None):
    """The network's outputs (a list of float32 arrays) for `batch` (N x 3 x H x W float32); with
    `batch_size`, fed in chunks of that size padded with zeros, as a traced network wants."""
    if not isinstance(net, residency.Resident):
        return net.run(None, {net.get_inputs()[0].name: batch.astype(np.float32)})
    import torch

    module, = residency.use(net)
    param = next(module.parameters())
    size = batch_size or len(batch)
    chunks = []
    with torch.no_grad():
        for start in range(0, len(batch), size):
            part = batch[start:start + size]
            padded = np.concatenate([part, np.zeros((size - len(part), *part.shape[1:]), part.dtype)])
            out = module(torch.from_numpy(padded).to(param.device, param.dtype))
            chunks.append([o.float().cpu().numpy()[:len(part)] for o in (out if isinstance(out, (list, tuple)) else [out])])
    return [np.concatenate(parts) for parts in zip(*chunks)]


# -- the person detector ------------------------------------------------------------------
def letterbox(rgb):
    """(1 x 3 x 640 x 640 float32 input, scale): the photo resized to fit 640x640 at the top left, grey 114."""
    import cv2

    h, w = rgb.shape[:2]
    r = min(DET_SIZE / h, DET_SIZE / w)
    size = (max(1, int(w * r)), max(1, int(h * r)))
    canvas = np.full((DET_SIZE, DET_SIZE, 3), 114, np.uint8)
    canvas[:size[1], :size[0]] = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR)
    return canvas.transpose(2, 0, 1)[None].astype(np.float32), r


def _grid():
    cells, strides = [], []
    for stride in STRIDES:
        side = DET_SIZE // stride
        ys, xs = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
        cells.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full((side * side, 1), stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def decode_boxes(raw, ratio):
    """(boxes xyxy in photo pixels, person scores) of every anchor of YOLOX's raw output (8400 x 85)."""
    cells, strides = _grid()
    centre = (raw[:, :2] + cells) * strides
    size = np.exp(raw[:, 2:4]) * strides
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1) / ratio
    return boxes, raw[:, 4] * raw[:, 5]


def suppress(boxes, scores):
    """Indices of the boxes kept by non-maximum suppression, the highest score first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        lo, hi = np.maximum(boxes[i, :2], boxes[rest, :2]), np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.maximum(0.0, hi - lo + 1), axis=1)
        order = rest[inter / (areas[i] + areas[rest] - inter) <= NMS_IOU]
    return keep


def people(detector, rgb):
    """Person boxes (xyxy, photo pixels), the most certain first."""
    batch, ratio = letterbox(rgb)
    boxes, scores = decode_boxes(run(detector, batch)[0][0].astype(np.float64), ratio)
    candidates = np.flatnonzero(scores > CANDIDATE)
    candidates = candidates[np.argsort(-scores[candidates], kind="stable")[:MAX_CANDIDATES]]
    boxes, scores = boxes[candidates], scores[candidates]
    keep = [i for i in suppress(boxes, scores) if scores[i] > PERSON]
    return boxes[keep]


# -- the whole-body estimator ---------------------------------------------------------------
def crop_frame(box):
    """(centre, scale (w, h)) of the region the estimator sees for a person box."""
    x0, y0, x1, y1 = box
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    w, h = (x1 - x0) * PADDING, (y1 - y0) * PADDING
    aspect = POSE_W / POSE_H
    return centre, np.array([w, w / aspect] if w > h * aspect else [h * aspect, h])


def crop(rgb, centre, scale):
    """The 288x384 estimator input (3 x 384 x 288 float32, normalised) of that region."""
    import cv2

    k = POSE_W / scale[0]
    matrix = np.array([[k, 0, POSE_W / 2 - k * centre[0]], [0, k, POSE_H / 2 - k * centre[1]]])
    warped = cv2.warpAffine(rgb, matrix, (POSE_W, POSE_H), flags=cv2.INTER_LINEAR).astype(np.float32)
    return ((warped - MEAN) / STD).transpose(2, 0, 1)


def decode_points(simcc_x, simcc_y, centres, scales):
    """(N x 133 x 2 points in photo pixels, N x 133 scores) of the SimCC outputs."""
    xs, ys = simcc_x.argmax(-1), simcc_y.argmax(-1)
    scores = np.minimum(simcc_x.max(-1), simcc_y.max(-1))
    points = np.stack([xs, ys], -1).astype(np.float64) / SIMCC_SPLIT
    points[scores <= 0] = -1
    size = np.array([POSE_W, POSE_H])
    return points / size * scales[:, None] + centres[:, None] - scales[:, None] / 2, scores


def estimate(estimator, rgb, boxes):
    """(points, scores) of the people in `boxes`."""
    frames = [crop_frame(box) for box in boxes]
    centres, scales = np.array([c for c, _ in frames]), np.array([s for _, s in frames])
    batch = np.stack([crop(rgb, c, s) for c, s in frames])
    torchscript = isinstance(estimator, residency.Resident)
    simcc_x, simcc_y = run(estimator, batch, TORCHSCRIPT_BATCH if torchscript else None)[:2]
    return decode_points(simcc_x, simcc_y, centres, scales)


def to_openpose(points, scores, width, height):
    """DWPose's 133 points -> [{"body": 18, "left_hand": 21 | None, "right_hand": 21 | None,
    "face": 70 | None}] of (x, y) normalised to the photo, or None where absent."""
    info = np.concatenate([points, scores[..., None]], -1)
    neck = info[:, [5, 6]].mean(1)
    neck[:, 2] = np.logical_and(info[:, 5, 2] > PRESENT, info[:, 6, 2] > PRESENT)
    info = np.insert(info, 17, neck, axis=1)
    info[:, OPENPOSE18] = info[:, COCO17]

    def part(rows):
        found = [(x / width, y / height) if score >= PRESENT else None for x, y, score in rows]
        return None if all(p is None for p in found) else found

    out = []
    for person in info:
        body = part(person[BODY]) or [None] * 18
        face = part(person[FACE])
        out.append({"body": body, "left_hand": part(person[LEFT_HAND]), "right_hand": part(person[RIGHT_HAND]),
                    "face": None if face is None else face + [body[14], body[15]]})
    return out


def detect_people(nets, rgb):
    """The people of an RGB uint8 photo, in the form openpose.detect_people gives them."""
    boxes = people(nets["detector"], rgb)
    if not len(boxes):
        return []
    points, scores = estimate(nets["estimator"], rgb, boxes)
    return to_openpose(points, scores, rgb.shape[1], rgb.shape[0])


def networks():
    """{"detector", "estimator"}: the two networks, from the files present."""
    return {role: network(path) for role, path in files().items()}
