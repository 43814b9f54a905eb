"""CodeFormer face restoration: detect (RetinaFace, facexlib) -> align to the
FFHQ-512 template -> restore all faces in batches (CodeFormer via spandrel /
spandrel-extra-arches) -> paste back with a soft mask onto the upscaled image.

CodeFormer's code and weights are under the S-Lab License 1.0 (non-commercial);
we use them through spandrel-extra-arches and the user's own files.
"""
import math

import numpy as np

from ..host import device, memory, models

CODEFORMER_SOURCE = "https://github.com/sczhou/CodeFormer/releases/tag/v0.1.0"
DETECTION_FILE = "detection_Resnet50_Final.pth"
DETECTION_SOURCE = "https://github.com/xinntao/facexlib/releases/tag/v0.1.0"
FACE = 512
TEMPLATE = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)  # FFHQ 512
BORDER_RGB = (132, 133, 135)  # CodeFormer's grey border, (135,133,132) in BGR
DETECT_SHORT_SIDE = 640
MIN_EYE_DISTANCE = 5


def wanted(model_name, upscaler_name=None):
    files = [("facerestore_models", model_name, CODEFORMER_SOURCE),
             ("facedetection", DETECTION_FILE, DETECTION_SOURCE)]
    if upscaler_name:
        files.append(("upscale_models", upscaler_name, "https://openmodeldb.info"))
    return files


# -- loading (cached) --------------------------------------------------------
def _spandrel(path, dev):
    import spandrel
    import spandrel_extra_arches

    spandrel_extra_arches.install(ignore_duplicates=True)
    return spandrel.ModelLoader(device=dev).load_from_file(path).eval()


def restorer(path):
    dev = device.torch_device()

    def load():
        model = _spandrel(path, dev)
        if model.architecture.id != "CodeFormer":
            raise ValueError(f"{path} is a {model.architecture.id} model, not CodeFormer")
        return model

    return memory.cached(("codeformer", path, str(dev)), load, dev, 400 * 2 ** 20)


def upscaler(path):
    dev = device.torch_device()
    return memory.cached(("upscaler", path, str(dev)), lambda: _spandrel(path, dev), dev, 100 * 2 ** 20)


def detector(path):
    import os

    dev = device.torch_device()

    def load():
        from facexlib.detection import init_detection_model

        # the file is present in model_rootpath, so facexlib loads it and downloads nothing
        return init_detection_model("retinaface_resnet50", half=False, device=dev,
                                    model_rootpath=os.path.dirname(path))

    return memory.cached(("retinaface", path, str(dev)), load, dev, 110 * 2 ** 20)


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
        out = run_images(model, [rgb])[0]
        if out.shape[:2] == (h * scale, w * scale):
            return out
        return cv2.resize(out, (w * scale, h * scale), interpolation=cv2.INTER_AREA)
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
def restore_faces(model, crops, fidelity, batch_size=8, on_batch=None):
    """Restore 512x512 RGB uint8 crops, `batch_size` at a time; returns uint8 crops."""
    import torch

    dev, out = device.torch_device(), []
    for start in range(0, len(crops), batch_size):
        chunk = np.stack(crops[start:start + batch_size]).astype(np.float32) / 255.0
        x = torch.from_numpy(chunk).permute(0, 3, 1, 2).to(dev) * 2 - 1  # RGB in [-1, 1]
        with torch.no_grad():
            y = model.model(x, weight=float(fidelity))[0]
        y = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        out.extend(y)
        if on_batch:
            on_batch(len(y))
    return out


def run_images(model, rgbs):
    """Run a spandrel image model (e.g. an upscaler) on uint8 RGB images, one at a time."""
    import torch

    dev, out = device.torch_device(), []
    for rgb in rgbs:
        x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None].to(dev)
        with torch.no_grad():
            y = model(x)
        out.append((y[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy())
    return out


# -- the whole pipeline --------------------------------------------------------
def process(photos, model, det, fidelity=0.5, scale=2, upscale_model=None, face_upsample=False,
            only_center=False, threshold=0.8, batch_size=8, step=None):
    """Restore every face in `photos` (uint8 RGB) and return (images at `scale`x,
    face masks at `scale`x (float32 0..1), faces found per image). Faces of all
    images go through CodeFormer together, `batch_size` at a time. `step(n)` is
    called as work completes (progress and cancel checks)."""
    import cv2

    step = step or (lambda n=1: None)
    found = []  # per image: [(crop, matrix)]
    for rgb in photos:
        found.append([align(rgb, lm) for lm in detect(det, rgb, threshold, only_center)])
        step()
    crops = [crop for faces in found for crop, _ in faces]
    restored = iter(restore_faces(model, crops, fidelity, batch_size, on_batch=lambda n: step(0)))
    outputs, masks = [], []
    for rgb, faces in zip(photos, found):
        canvas = upscale_background(rgb, scale, upscale_model)
        mask = np.zeros(canvas.shape[:2], np.float32)
        for _, matrix in faces:
            face = next(restored)
            if face_upsample and scale > 1:
                face = (run_images(upscale_model, [face])[0] if upscale_model is not None else
                        cv2.resize(face, (FACE * scale, FACE * scale), interpolation=cv2.INTER_LANCZOS4))
            canvas = paste(canvas, face, matrix, scale, mask)
        outputs.append(canvas)
        masks.append(mask)
        step()
    return outputs, masks, [len(f) for f in found]
