"""Face restoration: detect (RetinaFace, facexlib) -> align to the FFHQ-512 template ->
restore all faces in batches (CodeFormer, GFPGAN, RestoreFormer or RestoreFormer++, told
apart by their weights, built by spandrel / spandrel-extra-arches; ++ from spandrel's
RestoreFormer, see restoreformer_pp) -> paste back with a soft mask onto the upscaled image.

CodeFormer's code and weights are under the S-Lab License 1.0 (non-commercial);
we use them through spandrel-extra-arches and the user's own files.
"""
import logging
import math
import os
import threading
import weakref

import numpy as np

from ..host import device, images, models, residency, weights
from . import restoreformer_pp

DETECTION_FILE = "detection_Resnet50_Final.pth"
DETECTION_SOURCE = "https://github.com/xinntao/facexlib/releases/tag/v0.1.0"
FACE = 512
TEMPLATE = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)  # FFHQ 512
BORDER_RGB = (132, 133, 135)  # CodeFormer's grey border, (135,133,132) in BGR
PARSE_FILE = "parsing_parsenet.pth"
PARSE_SOURCE = "https://github.com/xinntao/facexlib/releases/tag/v0.2.2"
# CelebAMask-HQ classes kept in the paste mask: all but background, hat, necklace, neck and cloth
PARSE_KEEP = [0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 0, 255, 0, 0, 0]
DETECT_SHORT_SIDE = 640
log = logging.getLogger("PoseForge")
MIN_EYE_DISTANCE = 5


def wanted(model_name, upscaler_name=None, parse=False):
    """{role: (folder, file, source)} of the files a local run needs."""
    files = {"model": ("facerestore_models", model_name, RESTORER_SOURCES),
             "detector": ("facedetection", DETECTION_FILE, DETECTION_SOURCE)}
    if upscaler_name:
        files["upscaler"] = ("upscale_models", upscaler_name, "https://openmodeldb.info")
    if parse:
        files["parser"] = ("facedetection", PARSE_FILE, PARSE_SOURCE)
    return files


# the face restorers run, by the tensors that tell them apart (spandrel's own detection keys), the first that
# matches (RestoreFormer++ holds all of RestoreFormer's and its decoder's attention at 32 px: before it)
_RESTOREFORMER = {"quantize.embedding.weight", "encoder.conv_in.weight", "quant_conv.weight",
                  "encoder.down.0.block.0.norm1.weight", "encoder.conv_out.weight", "decoder.conv_out.weight"}
RESTORERS = {
    "CodeFormer": {"position_emb", "quantize.embedding.weight", "idx_pred_layer.1.weight"},
    "GFPGAN": {"toRGB.0.weight", "stylegan_decoder.style_mlp.1.weight"},
    "RestoreFormer++": _RESTOREFORMER | {"decoder.up.4.attn.0.q.weight"},
    "RestoreFormer": _RESTOREFORMER,
}
RESTORER_SOURCES = ("CodeFormer: https://github.com/sczhou/CodeFormer/releases/tag/v0.1.0 ; GFPGAN: "
                    "https://github.com/TencentARC/GFPGAN/releases (GFPGANv1.3/1.4.pth) ; RestoreFormer: "
                    "https://github.com/TencentARC/GFPGAN/releases/tag/v1.3.4 (RestoreFormer.pth) ; RestoreFormer++: "
                    "https://github.com/wzhouxiff/RestoreFormerPlusPlus/releases (RestoreFormer++.ckpt)")
_KIND = {}


def restorer_kind(path):
    """Which face restorer `path` holds (a RESTORERS name), by content, or None; cached by path, size and
    modification time. A file that cannot be read (truncated, broken) is none, and the log says so once."""
    try:
        ident = weights.identity(path)
    except OSError:
        return None
    if ident not in _KIND:
        try:
            names = set(restoreformer_pp.network(dict.fromkeys(weights.keys(path))))
        except weights.WeightFileError as exc:
            log.warning("PoseForge: %s is not listed in PF_CodeFormer's models: %s", os.path.basename(path), exc)
            names = set()
        _KIND[ident] = next((kind for kind, keys in RESTORERS.items() if keys <= names), None)
    return _KIND[ident]


def restorer_files():
    """The face restorer files in `facerestore_models` (other files there are left out)."""
    return [name for name in models.list_files("facerestore_models")
            if restorer_kind(models.find("facerestore_models", name))]


# -- loading (cached, through the shared residency and safe loader) ----------
def _spandrel(state):
    import spandrel
    import spandrel_extra_arches

    spandrel_extra_arches.install(ignore_duplicates=True)
    return spandrel.ModelLoader().load_from_state_dict(state)


class RestorerError(ValueError):
    pass


def restorer(path):
    """The face restorer network of `path` (a Resident, its kind in `pf_kind`); a model of another
    architecture is refused, naming what it is."""
    def load():
        name = os.path.basename(path)
        if restorer_kind(path) == "RestoreFormer++":
            try:
                net = restoreformer_pp.build(restoreformer_pp.network(weights.load(path)))
            except Exception as exc:  # noqa: BLE001 - named for the user
                raise RestorerError(f"{name} has RestoreFormer++'s tensors but does not load as it "
                                    f"({type(exc).__name__}: {str(exc)[:200]}). Is it complete?") from exc
            net.pf_kind = "RestoreFormer++"
            return net
        try:
            model = _spandrel(restoreformer_pp.network(weights.load(path)))
        except Exception as exc:  # noqa: BLE001 - spandrel's own error, named for the user
            raise RestorerError(f"{name} is no model spandrel knows ({str(exc)[:200]}): use a face "
                                f"restorer ({RESTORER_SOURCES}).") from exc
        if model.architecture.id not in RESTORERS:
            raise RestorerError(f"{name} is a {model.architecture.name} model ({model.purpose}), not "
                                f"a face restorer: use {', '.join(RESTORERS)} ({RESTORER_SOURCES}).")
        model.model.pf_kind = model.architecture.id
        return model.model

    return residency.get(("restorer", weights.identity(path)), load)


def upscaler(path):
    """A spandrel upscale model of `path` (a Resident holding the network; `.scale` kept on it)."""
    def load():
        model = _spandrel(weights.load(path))
        model.model.pf_scale = model.scale
        return model.model

    return residency.get(("upscaler", weights.identity(path)), load)


_adopted = weakref.WeakKeyDictionary()  # a model core's UpscaleModelLoader loaded -> its Resident
_adopted_lock = threading.Lock()


def loaded_upscaler(descriptor):
    """A Resident for an upscale model core's UpscaleModelLoader loaded (a spandrel descriptor): not in
    our file cache (the graph owns it), kept while the descriptor lives, brought onto the device
    through ComfyUI's memory manager like our own networks."""
    import torch

    class Scaled(torch.nn.Module):
        def __init__(self, net, scale):
            super().__init__()
            self.net, self.pf_scale = net, scale

        def forward(self, x):
            return self.net(x)

    with _adopted_lock:
        if descriptor not in _adopted:
            _adopted[descriptor] = residency.Resident(("upscaler", "loaded", id(descriptor)),
                                                      Scaled(descriptor.model, descriptor.scale))
        return _adopted[descriptor]


def detector(path):
    """RetinaFace-R50 (facexlib's network) with the weights of `path`."""
    def load():
        from facexlib.detection.retinaface import RetinaFace

        net = RetinaFace(network_name="resnet50", half=False, device="cpu")
        net.load_state_dict(weights.strip_prefix(weights.load(path), "module."), strict=True)
        return net

    return residency.get(("retinaface", weights.identity(path)), load)


def parser(path):
    """facexlib's ParseNet (parsing_parsenet.pth) for the paste-back mask."""
    def load():
        from facexlib.parsing.parsenet import ParseNet

        net = ParseNet(in_size=512, out_size=512, parsing_ch=19)
        net.load_state_dict(weights.load(path), strict=True)
        return net

    return residency.get(("parsenet", weights.identity(path)), load)


def on_device(resident):
    """The network of `resident` on the compute device (RetinaFace also keeps its own `device`)."""
    net, = residency.use(resident)
    if hasattr(net, "device") and not isinstance(type(net).__dict__.get("device"), property):
        net.device = next(net.parameters()).device
    return net


# -- geometry ----------------------------------------------------------------
def detect(det, rgb, threshold=0.8, only_center=False, select="all", index=0, min_size=0):
    """5-point landmarks [(5,2) float32] of the faces in an RGB uint8 image, at
    CodeFormer's working size (short side 640; thin images bounded, host/images.py),
    mapped back to the image. Faces whose box is under `min_size` pixels a side are left out;
    of the rest, `only_center` keeps the one nearest the centre, `select` the largest ("largest")
    or the `index`-th from the left ("index"; none past the last), or all ("all")."""
    import cv2
    import torch

    h, w = rgb.shape[:2]
    scale = images.work_scale(w, h, DETECT_SHORT_SIDE)
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
    faces = [f for f in faces if min(f[1][2] - f[1][0], f[1][3] - f[1][1]) >= min_size]
    if only_center and faces:
        centre = np.array([w / 2, h / 2])
        faces = [min(faces, key=lambda f: np.linalg.norm((f[1][:2] + f[1][2:]) / 2 - centre))]
    elif select == "largest" and faces:
        faces = [max(faces, key=lambda f: (f[1][2] - f[1][0]) * (f[1][3] - f[1][1]))]
    elif select == "index":
        faces = sorted(faces, key=lambda f: f[1][0] + f[1][2])[index:index + 1]
    return [lm for lm, _ in faces]


MOUTH = (48, 54)  # the mouth's corners among a face's 68/70 points (OpenPose's and DWPose's face layout)


def pose_landmarks(people, width, height):
    """The 5 points CodeFormer aligns by (TEMPLATE's order: eyes, nose, mouth corners, left to right in the
    image) of each person of a pose ({part: [(x, y) normalized | None]}, local/pose_render) on a width x
    height image: eyes and nose from the body, the mouth's corners from the face points, or where the pose has
    none, where the template puts them for those eyes and that nose. People without both eyes and the nose
    are left out."""
    import cv2

    found = []
    for parts in people:
        body, face = parts.get("pose_keypoints_2d") or [], parts.get("face_keypoints_2d") or []
        head = [body[i] if i < len(body) else None for i in (14, 15, 0)]  # right eye (image left), left eye, nose
        if any(p is None for p in head):
            continue
        points = np.array([(x * width, y * height) for x, y in head], np.float32)
        mouth = [face[i] if i < len(face) else None for i in MOUTH]
        if all(p is not None for p in mouth):
            corners = np.array([(x * width, y * height) for x, y in mouth], np.float32)
        else:
            matrix = cv2.estimateAffinePartial2D(TEMPLATE[:3], points)[0]
            if matrix is None:
                continue
            corners = (np.c_[TEMPLATE[3:], np.ones(2)] @ matrix.T).astype(np.float32)
        found.append(np.concatenate([points, corners]))
    return found


def align(rgb, landmarks):
    """(512x512 face crop, 2x3 affine image->crop) for 5-point `landmarks`, or None when no
    similarity transform fits them (degenerate landmarks)."""
    import cv2

    matrix = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32), TEMPLATE, method=cv2.LMEDS)[0]
    if matrix is None or not np.isfinite(matrix).all():
        log.info("PoseForge CodeFormer: skipped a face whose landmarks could not be aligned")
        return None
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


def paste(canvas, face, matrix, scale, mask_out=None, parse_mask=None, visibility=1.0):
    """Blend `face` (square crop, any size k*512) into `canvas` (the image at `scale`x, changed
    in place and returned) through the inverse of `matrix` (image -> 512 crop). The mask is
    the square soft mask (eroded and blurred at its edges), limited by `parse_mask` (512x512
    float, crop space) when given, times `visibility`. Only the face's box is touched."""
    import cv2

    H, W = canvas.shape[:2]
    n = face.shape[0]
    inverse = cv2.invertAffineTransform(matrix)  # 512 crop -> image
    inverse[:, :2] *= scale * FACE / n
    inverse[:, 2] = inverse[:, 2] * scale + (scale - 1) / 2  # pixel centres of the enlarged image
    corners = np.array([[0, 0, 1], [n, 0, 1], [0, n, 1], [n, n, 1]], np.float64) @ inverse.T
    margin = int((corners.max(0) - corners.min(0)).max() / 10) + 4  # room for the erosions and the blur
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - margin, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + margin, (W, H))
    if x0 >= x1 or y0 >= y1:
        return canvas
    local = inverse.copy()
    local[:, 2] -= (x0, y0)
    size = (int(x1 - x0), int(y1 - y0))
    warped = cv2.warpAffine(face, local, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones((n, n), np.float32), local, size, flags=cv2.INTER_LINEAR)
    mask = cv2.erode(mask, np.ones((2 * scale, 2 * scale), np.uint8))
    edge = int(math.sqrt(float(mask.sum()))) // 20
    if edge > 0:
        mask = cv2.erode(mask, np.ones((2 * edge, 2 * edge), np.uint8))
        mask = np.clip(cv2.GaussianBlur(mask, (2 * edge + 1, 2 * edge + 1), 0), 0.0, 1.0)
    if parse_mask is not None:
        parse = cv2.resize(parse_mask, (n, n)) if n != parse_mask.shape[0] else parse_mask
        mask = np.minimum(mask, cv2.warpAffine(parse, local, size, flags=cv2.INTER_CUBIC).clip(0, 1))
    mask *= visibility
    if mask_out is not None:
        region = mask_out[y0:y1, x0:x1]
        np.maximum(region, mask, out=region)
    box = canvas[y0:y1, x0:x1]
    blended = mask[..., None] * warped.astype(np.float32) + (1 - mask[..., None]) * box.astype(np.float32)
    canvas[y0:y1, x0:x1] = np.clip(blended.round(), 0, 255).astype(np.uint8)
    return canvas


def parse_masks(net, faces):
    """Soft face masks (512x512 float 0..1, crop space) from ParseNet on restored RGB faces,
    as CodeFormer makes them: kept classes, blurred twice, a 10-pixel border cleared."""
    import cv2
    import torch

    dev = next(net.parameters()).device
    out = []
    for face in faces:
        x = torch.from_numpy(cv2.resize(face, (FACE, FACE)).astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            classes = net(x.to(dev) * 2 - 1)[0].argmax(1)[0].cpu().numpy()
        mask = np.asarray(PARSE_KEEP, np.float32)[classes]
        mask = cv2.GaussianBlur(cv2.GaussianBlur(mask, (101, 101), 11), (101, 101), 11)
        mask[:10], mask[-10:], mask[:, :10], mask[:, -10:] = 0, 0, 0, 0
        out.append(mask / 255.0)
    return out


# -- networks ----------------------------------------------------------------
def restore_faces(net, crops, fidelity, batch_size=None, on_batch=None):
    """Restore 512x512 RGB uint8 crops with the restorer `net` (`fidelity`: CodeFormer's only), `batch_size`
    at a time (default: by device), halving the batch on out-of-memory; returns uint8 crops. GFPGAN runs with
    its stored noise (the same image every run), not fresh noise each time."""
    import torch

    dev = next(net.parameters()).device
    call = {"CodeFormer": lambda x: net(x, weight=float(fidelity))[0],
            "GFPGAN": lambda x: net(x.contiguous(), return_rgb=False, randomize_noise=False)[0],  # it .view()s
            }.get(getattr(net, "pf_kind", "CodeFormer"), lambda x: net(x)[0])  # RestoreFormer and ++

    def run(chunk):
        x = torch.from_numpy(np.stack(chunk).astype(np.float32) / 255.0).permute(0, 3, 1, 2).to(dev) * 2 - 1
        with torch.no_grad():
            y = call(x)  # RGB in [-1, 1] both ways
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
            device.empty_cache()
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
            only_center=False, threshold=0.8, batch_size=None, step=None, parser_r=None, visibility=1.0,
            background_enhance=False, select=("all", 0, 0), landmarks=None):
    """Restore every face in `photos` (uint8 RGB) and return (images at `scale`x,
    face masks at `scale`x (float32 0..1), faces found per image). Each network is
    on the device only for its phase (detect, restore, parse, upscale + paste). Faces of
    all images go through CodeFormer together. With `parser_r` (ParseNet) the paste mask
    follows the face's outline; `visibility` blends restored and original faces. The
    upscale model enlarges the background only with `background_enhance` (else Lanczos)
    and the restored faces only with `face_upsample`.
    `select`: (which faces, index, minimum size), as `detect` takes them. `landmarks`: the faces' 5 points
    per image (`pose_landmarks`) instead of RetinaFace's (`detector_r` is not used then).
    `step(n)` is called as work completes (progress and cancel checks)."""
    import cv2

    step = step or (lambda n=1: None)
    det = on_device(detector_r) if landmarks is None else None
    found = []  # per image: [(crop, matrix)]
    for index, rgb in enumerate(photos):
        points = detect(det, rgb, threshold, only_center, *select) if det is not None else landmarks[index]
        found.append([f for f in (align(rgb, lm) for lm in points) if f])
        step()
    crops = [crop for faces in found for crop, _ in faces]
    restored = (restore_faces(residency.use(restorer_r)[0], crops, fidelity, batch_size,
                              on_batch=lambda n: step(0)) if crops else [])
    masks_512 = iter(parse_masks(residency.use(parser_r)[0], restored) if parser_r is not None and restored
                     else [None] * len(restored))
    restored = iter(restored)
    up = residency.use(upscaler_r)[0] if upscaler_r is not None else None
    outputs, masks = [], []
    for rgb, faces in zip(photos, found):
        canvas = upscale_background(rgb, scale, up if background_enhance else None)
        mask = np.zeros(canvas.shape[:2], np.float32)
        for _, matrix in faces:
            face = next(restored)
            if face_upsample and scale > 1:
                face = (upscale_image(up, face) if up is not None else
                        cv2.resize(face, (FACE * scale, FACE * scale), interpolation=cv2.INTER_LANCZOS4))
            canvas = paste(canvas, face, matrix, scale, mask, next(masks_512), visibility)
        outputs.append(canvas)
        masks.append(mask)
        step()
    return outputs, masks, [len(f) for f in found]
