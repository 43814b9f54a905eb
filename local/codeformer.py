"""CodeFormer face restoration: detect (RetinaFace, facexlib) -> align to the
FFHQ-512 template -> restore all faces in batches (CodeFormer via spandrel /
spandrel-extra-arches) -> paste back with a soft mask onto the upscaled image.

CodeFormer's code and weights are under the S-Lab License 1.0 (non-commercial);
we use them through spandrel-extra-arches and the user's own files.
"""
import logging
import math

import numpy as np

from ..host import device, models, residency, weights

CODEFORMER_SOURCE = "https://github.com/sczhou/CodeFormer/releases/tag/v0.1.0"
DETECTION_FILE = "detection_Resnet50_Final.pth"
DETECTION_SOURCE = "https://github.com/xinntao/facexlib/releases/tag/v0.1.0"
FACE = 512
TEMPLATE = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)  # FFHQ 512
BORDER_RGB = (132, 133, 135)  # CodeFormer's grey border, (135,133,132) in BGR
DETECT_SHORT_SIDE = 640
log = logging.getLogger("PoseForge")
MIN_EYE_DISTANCE = 5


def wanted(model_name, upscaler_name=None):
    files = [("facerestore_models", model_name, CODEFORMER_SOURCE),
             ("facedetection", DETECTION_FILE, DETECTION_SOURCE)]
    if upscaler_name:
        files.append(("upscale_models", upscaler_name, "https://openmodeldb.info"))
    return files


# -- loading (cached, through the shared residency and safe loader) ----------
def _spandrel(path):
    import spandrel
    import spandrel_extra_arches

    spandrel_extra_arches.install(ignore_duplicates=True)
    return spandrel.ModelLoader().load_from_state_dict(weights.load(path))


def restorer(path):
    """The CodeFormer network of `path` (a Resident); other architectures are refused."""
    def load():
        model = _spandrel(path)
        if model.architecture.id != "CodeFormer":
            raise ValueError(f"{path} is a {model.architecture.name} model, not CodeFormer")
        return model.model

    return residency.get(("codeformer", path), load)


def upscaler(path):
    """A spandrel upscale model of `path` (a Resident holding the network; `.scale` kept on it)."""
    def load():
        model = _spandrel(path)
        model.model.pf_scale = model.scale
        return model.model

    return residency.get(("upscaler", path), load)


def detector(path):
    """RetinaFace-R50 (facexlib's network) with the weights of `path`."""
    def load():
        from facexlib.detection.retinaface import RetinaFace

        net = RetinaFace(network_name="resnet50", half=False, device="cpu")
        net.load_state_dict(weights.strip_prefix(weights.load(path), "module."), strict=True)
        return net

    return residency.get(("retinaface", path), load)


def on_device(resident):
    """The network of `resident` on the compute device (RetinaFace also keeps its own `device`)."""
    net, = residency.use(resident)
    if hasattr(net, "device") and not isinstance(type(net).__dict__.get("device"), property):
        net.device = next(net.parameters()).device
    return net


# -- geometry ----------------------------------------------------------------
def detect(det, rgb, threshold=0.8, only_center=False):
    """5-point landmarks [(5,2) float32] of the faces in an RGB uint8 image, at
    CodeFormer's working size (short side 640), mapped back to the image."""
    import cv2
    import torch

    h, w = rgb.shape[:2]
    scale = DETECT_SHORT_SIDE / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    with torch.no_grad():
        rows = det.detect_faces(np.ascontiguousarray(small[..., ::-1]), conf_threshold=threshold,
                                nms_threshold=0.4, use_origin_size=True)
    faces = []
    for row in np.asarray(rows, np.float64):
        if not np.isfinite(row[:15]).all():
            continue
        lm = row[5:15].reshape(5, 2) / scale
        if np.linalg.norm(lm[0] - lm[1]) >= MIN_EYE_DISTANCE:
            faces.append((lm.astype(np.float32), row[:4] / scale))
    if only_center and faces:
        centre = np.array([w / 2, h / 2])
        faces = [min(faces, key=lambda f: np.linalg.norm((f[1][:2] + f[1][2:]) / 2 - centre))]
    return [lm for lm, _ in faces]


def align(rgb, landmarks):
    """(512x512 face crop, 2x3 affine image->crop) for 5-point `landmarks`."""
    import cv2

    matrix = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32), TEMPLATE, method=cv2.LMEDS)[0]
    crop = cv2.warpAffine(rgb, matrix, (FACE, FACE), borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_RGB)
    return crop, matrix


def upscale_background(rgb, scale, model=None):
    """The whole image enlarged `scale` times: by the upscale model when given, else Lanczos."""
    import cv2

    h, w = rgb.shape[:2]
    if model is not None:
        out = upscale_image(model, rgb)
        if out.shape[:2] == (h * scale, w * scale):
            return out
        shrink = out.shape[0] > h * scale
        return cv2.resize(out, (w * scale, h * scale), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)
    if scale == 1:
        return rgb.copy()
    return cv2.resize(rgb, (w * scale, h * scale), interpolation=cv2.INTER_LANCZOS4)


def paste(canvas, face, matrix, scale, mask_out=None):
    """Blend `face` (square crop, any size k*512) back onto `canvas` (the image at
    `scale`x) through the inverse of `matrix` (image -> 512 crop), with a soft
    square mask eroded and blurred at its edges. Returns the new canvas (uint8)."""
    import cv2

    H, W = canvas.shape[:2]
    k = face.shape[0] / FACE
    inverse = cv2.invertAffineTransform(matrix)  # 512 crop -> image
    inverse[:, :2] *= scale / k
    inverse[:, 2] = inverse[:, 2] * scale + (scale - 1) / 2  # pixel centres of the enlarged image
    warped = cv2.warpAffine(face, inverse, (W, H), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones(face.shape[:2], np.float32), inverse, (W, H), flags=cv2.INTER_LINEAR)
    mask = cv2.erode(mask, np.ones((2 * scale, 2 * scale), np.uint8))
    edge = int(math.sqrt(float(mask.sum()))) // 20
    if edge > 0:
        mask = cv2.erode(mask, np.ones((2 * edge, 2 * edge), np.uint8))
        mask = np.clip(cv2.GaussianBlur(mask, (2 * edge + 1, 2 * edge + 1), 0), 0.0, 1.0)
    if mask_out is not None:
        np.maximum(mask_out, mask, out=mask_out)
    blended = mask[..., None] * warped.astype(np.float32) + (1 - mask[..., None]) * canvas.astype(np.float32)
    return np.clip(blended.round(), 0, 255).astype(np.uint8)


# -- networks ----------------------------------------------------------------
def restore_faces(net, crops, fidelity, batch_size=None, on_batch=None):
    """Restore 512x512 RGB uint8 crops with the CodeFormer `net`, `batch_size` at a time
    (default: by device), halving the batch on out-of-memory; returns uint8 crops."""
    import torch

    dev = next(net.parameters()).device

    def run(chunk):
        x = torch.from_numpy(np.stack(chunk).astype(np.float32) / 255.0).permute(0, 3, 1, 2).to(dev) * 2 - 1
        with torch.no_grad():
            y = net(x, weight=float(fidelity))[0]  # RGB in [-1, 1] both ways
        y = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        if on_batch:
            on_batch(len(y))
        return list(y)

    return device.halving(run, list(crops), batch_size or device.batch_size(8), "face batch")


def upscale_image(net, rgb, tile=512, overlap=32):
    """Run an upscale network on one uint8 RGB image in overlapping tiles, feathered
    together; on out-of-memory the tile halves, as core's ImageUpscaleWithModel does."""
    import torch

    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    while True:
        try:
            y = _tiled(net, x, tile, overlap)
            break
        except device.oom_errors():
            if tile <= 64:
                raise
            tile //= 2
            log.warning("PoseForge: out of memory while upscaling, tile size lowered to %d", tile)
            device._empty_cache()
    return (y[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def _starts(length, tile, overlap):
    starts = list(range(0, max(length - tile, 0) + 1, tile - overlap))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def _ramp(length, width, fade_start, fade_end):
    """Blend weights along one side of a tile: rising over `width` pixels at an edge shared
    with another tile (so its padding-affected border barely counts), flat at the image border."""
    import torch

    pos = torch.arange(length, dtype=torch.float32) + 0.5
    weight = torch.ones(length)
    if fade_start:
        weight = torch.minimum(weight, pos / width)
    if fade_end:
        weight = torch.minimum(weight, pos.flip(0) / width)
    return weight


def _tiled(net, x, tile, overlap):
    import torch

    dev = next(net.parameters()).device
    _, _, h, w = x.shape
    with torch.no_grad():
        if h <= tile and w <= tile:
            return net(x.to(dev)).float().cpu()
        s = net.pf_scale
        out = torch.zeros(1, 3, h * s, w * s)
        total = torch.zeros(1, 1, h * s, w * s)
        for top in _starts(h, tile, overlap):
            for left in _starts(w, tile, overlap):
                piece = net(x[..., top:top + tile, left:left + tile].to(dev)).float().cpu()
                th, tw = piece.shape[-2:]
                weight = (_ramp(th, overlap * s, top > 0, top * s + th < h * s)[:, None]
                          * _ramp(tw, overlap * s, left > 0, left * s + tw < w * s)[None, :])[None, None]
                out[..., top * s:top * s + th, left * s:left * s + tw] += piece * weight
                total[..., top * s:top * s + th, left * s:left * s + tw] += weight
        return out / total


# -- the whole pipeline --------------------------------------------------------
def process(photos, restorer_r, detector_r, fidelity=0.5, scale=1, upscaler_r=None, face_upsample=False,
            only_center=False, threshold=0.8, batch_size=None, step=None):
    """Restore every face in `photos` (uint8 RGB) and return (images at `scale`x,
    face masks at `scale`x (float32 0..1), faces found per image). Each network is
    on the device only for its phase (detect, restore, upscale + paste). Faces of all
    images go through CodeFormer together. `step(n)` is called as work completes
    (progress and cancel checks)."""
    import cv2

    step = step or (lambda n=1: None)
    det = on_device(detector_r)
    found = []  # per image: [(crop, matrix)]
    for rgb in photos:
        found.append([align(rgb, lm) for lm in detect(det, rgb, threshold, only_center)])
        step()
    crops = [crop for faces in found for crop, _ in faces]
    restored = iter(restore_faces(residency.use(restorer_r)[0], crops, fidelity, batch_size,
                                  on_batch=lambda n: step(0)) if crops else [])
    up = residency.use(upscaler_r)[0] if upscaler_r is not None else None
    outputs, masks = [], []
    for rgb, faces in zip(photos, found):
        canvas = upscale_background(rgb, scale, up)
        mask = np.zeros(canvas.shape[:2], np.float32)
        for _, matrix in faces:
            face = next(restored)
            if face_upsample and scale > 1:
                face = (upscale_image(up, face) if up is not None else
                        cv2.resize(face, (FACE * scale, FACE * scale), interpolation=cv2.INTER_LANCZOS4))
            canvas = paste(canvas, face, matrix, scale, mask)
        outputs.append(canvas)
        masks.append(mask)
        step()
    return outputs, masks, [len(f) for f in found]
