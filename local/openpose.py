"""OpenPose body / hand / face detection through controlnet-aux.

Weights: body_pose_model.pth, hand_pose_model.pth, facenet.pth from the
`openpose` model folder, else from comfyui_controlnet_aux's annotator folder or a
Hugging Face cache the user already has (lllyasviel/Annotators). Nothing is downloaded. The networks are built by
controlnet-aux's classes, filled through our safe loader (host/weights.py) and
kept by the shared residency mechanism (host/residency.py).
"""
import os

import numpy as np

from ..host import comfy, models, residency, weights
from . import pose_render

SOURCE = "https://huggingface.co/lllyasviel/Annotators"
BODY, HAND, FACE = "body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"


def wanted(hands, face):
    names = [BODY] + ([HAND] if hands else []) + ([FACE] if face else [])
    return [("openpose", name, SOURCE) for name in names]


def locate(wanted_files):
    """Paths for each wanted file: the models folder first, then comfyui_controlnet_aux's
    annotator folder, then an existing HF cache; raises MissingModelFiles naming every file
    that is in none of them."""
    paths, absent = [], []
    for entry in wanted_files:
        path = models.find(entry[0], entry[1]) or _aux_annotator(entry[1]) or _hf_cached(entry[1])
        (paths if path else absent).append(path or entry)
    if absent:
        raise models.MissingModelFiles(absent, hint="Download them from " + SOURCE + " into the 'openpose' folder.")
    return paths


def aux_annotator_dirs():
    """Where comfyui_controlnet_aux keeps lllyasviel/Annotators: AUX_ANNOTATOR_CKPTS_PATH when
    set, and its ckpts/ folder in each custom_nodes directory."""
    roots = [os.environ["AUX_ANNOTATOR_CKPTS_PATH"]] if os.environ.get("AUX_ANNOTATOR_CKPTS_PATH") else []
    fp = comfy.module("folder_paths")
    if fp is not None and "custom_nodes" in fp.folder_names_and_paths:
        roots += [os.path.join(d, "comfyui_controlnet_aux", "ckpts") for d in fp.get_folder_paths("custom_nodes")]
    return [os.path.join(root, "lllyasviel", "Annotators") for root in roots]


def _aux_annotator(filename):
    for folder in aux_annotator_dirs():
        if os.path.isfile(os.path.join(folder, filename)):
            return os.path.join(folder, filename)
    return None


def _hf_cached(filename):
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache("lllyasviel/Annotators", filename)
    return found if isinstance(found, str) else None


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

    return residency.get(("openpose", kind, path), load)


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

    kinds = ["body"] + (["hand"] if hands else []) + (["face"] if face else [])
    residents = [_network(kind, path) for kind, path in zip(kinds, locate(wanted(hands, face)))]
    nets = dict(zip(kinds, residency.use(*residents)))
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


def extract(det, photo, resolution, hands=False, face=False):
    """One HxWx3 uint8 RGB photo -> POSE_KEYPOINT frame (normalized coordinates, canvas = photo size)."""
    people = []
    for found in detect_people(det, detect_resized(photo, resolution), hands, face):
        people.append({
            "pose_keypoints_2d": pose_render.encode_points(found["body"], 18),
            "hand_left_keypoints_2d": _encoded(found["left_hand"], "hand_left_keypoints_2d"),
            "hand_right_keypoints_2d": _encoded(found["right_hand"], "hand_right_keypoints_2d"),
            "face_keypoints_2d": _encoded(found["face"], "face_keypoints_2d"),
        })
    return {"people": people, "canvas_width": int(photo.shape[1]), "canvas_height": int(photo.shape[0])}


def _encoded(points, name):
    return None if points is None else pose_render.encode_points(points, pose_render.COUNTS[name])
