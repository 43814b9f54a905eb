"""OpenPose body / hand / face detection through controlnet-aux.

Weights: body_pose_model.pth, hand_pose_model.pth, facenet.pth of lllyasviel/Annotators, found
where local/pose_files.py looks (nothing is downloaded). The networks are built by
controlnet-aux's classes, filled through our safe loader (host/weights.py) and
kept by the shared residency mechanism (host/residency.py).
"""
import numpy as np

from ..host import residency, weights
from . import pose_files, pose_render

BODY, HAND, FACE = "body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"
REPO = "lllyasviel/Annotators"


def wanted(hands, face):
    """{kind: (file, repository)} of the networks a run needs."""
    return {kind: (name, REPO) for kind, name, on in (("body", BODY, True), ("hand", HAND, hands),
                                                      ("face", FACE, face)) if on}


def _network(kind, path):
    """The body / hand / face network of `path` (a Resident), built by controlnet-aux's
    classes and filled through our safe loader."""
    def load():
        from controlnet_aux.open_pose import util
        from controlnet_aux.open_pose.face import FaceNet
        from controlnet_aux.open_pose.model import bodypose_model, handpose_model

        net = {"body": bodypose_model, "hand": handpose_model, "face": FaceNet}[kind]()
        state = weights.load(path)
        net.load_state_dict(state if kind == "face" else util.transfer(net, state))
        return net

    return residency.get(("openpose", kind, weights.identity(path)), load)


def _estimator(kind, net):
    """controlnet-aux's Body / Hand / Face estimator around an already loaded network."""
    from controlnet_aux.open_pose import Body, Face, Hand
    from controlnet_aux.open_pose.face import params

    cls = {"body": Body, "hand": Hand, "face": Face}[kind]
    estimator = cls.__new__(cls)  # its __init__ would torch.load the file itself
    estimator.model = net
    if kind == "face":
        estimator.inference_size = params["inference_img_size"]
        estimator.sigma = params["gaussian_sigma"]
        estimator.threshold = params["heatmap_peak_thresh"]
    return estimator


def detector(hands=False, face=False):
    """An OpenposeDetector holding the networks needed, on the compute device."""
    from controlnet_aux.open_pose import OpenposeDetector

    paths = pose_files.locate(wanted(hands, face))
    nets = dict(zip(paths, residency.use(*(_network(kind, path) for kind, path in paths.items()))))
    return OpenposeDetector(*(_estimator(k, nets[k]) if k in nets else None for k in ("body", "hand", "face")))


def detect_resized(photo, resolution):
    """The photo as controlnet-aux's detector sees it (its resize_image: short side `resolution`,
    sides multiples of 64, Lanczos up, area down), with the long side of thin photos bounded
    (pose_render.draw_size)."""
    import cv2

    h, w = photo.shape[:2]
    size = pose_render.draw_size(w, h, resolution)
    return cv2.resize(photo, size, interpolation=cv2.INTER_LANCZOS4 if resolution > min(h, w) else cv2.INTER_AREA)


FACE_PEAK = 0.05  # controlnet-aux's face heatmap threshold


def face_points(estimator, body, bgr):
    """The 70 OpenPose face points of `body` in pixels of `bgr`, each at its own index (None when
    its heatmap is empty). controlnet-aux's own peak extraction skips empty channels, which
    shifts every later index; this keeps them."""
    from controlnet_aux.open_pose import util

    box = util.faceDetect(body, bgr)
    if box is None:
        return None
    x, y, w = box
    heatmaps = estimator(bgr[y:y + w, x:x + w, :])
    points = []
    for channel in heatmaps[:pose_render.COUNTS["face_keypoints_2d"]]:
        if channel.max() <= FACE_PEAK:
            points.append(None)
            continue
        py, px = np.unravel_index(np.argmax(channel), channel.shape)
        points.append(None if px < 1e-6 or py < 1e-6 else (float(px + x), float(py + y)))  # as controlnet-aux
    return points


def detect_people(det, image, hands=False, face=False):
    """controlnet-aux's detect_poses on an RGB uint8 image at detect size, with index-keeping
    faces: [{"body": [(x, y) | None] * 18, "left_hand"/"right_hand": [(x, y) | None] * 21 | None,
    "face": [(x, y) | None] * 70 | None}], coordinates normalized to the image."""
    import torch

    bgr = image[:, :, ::-1].copy()
    H, W = bgr.shape[:2]

    def norm(points):
        return None if points is None else [None if p is None or p[0] < 0 or p[1] < 0 else (p[0] / W, p[1] / H)
                                            for p in points]

    people = []
    with torch.no_grad():
        candidate, subset = det.body_estimation(bgr)
        for body in det.body_estimation.format_body_result(candidate, subset):
            person = {"body": norm([None if k is None else (k.x, k.y) for k in body.keypoints]),
                      "left_hand": None, "right_hand": None, "face": None}
            if hands:
                for side, found in zip(("left_hand", "right_hand"), det.detect_hands(body, bgr)):
                    person[side] = None if found is None else [None if k.x < 0 or k.y < 0 else (k.x, k.y)
                                                               for k in found]  # already normalized
            if face:
                person["face"] = norm(face_points(det.face_estimation, body, bgr))
            people.append(person)
    return people
