"""OpenPose body / hand / face detection through controlnet-aux.

Weights: body_pose_model.pth, hand_pose_model.pth, facenet.pth from the
`openpose` model folder, or from a Hugging Face cache the user already has
(lllyasviel/Annotators). Nothing is downloaded. The networks are built by
controlnet-aux's classes, filled through our safe loader (host/weights.py) and
kept by the shared residency mechanism (host/residency.py).
"""
from ..host import models, residency, weights
from . import pose_render

SOURCE = "https://huggingface.co/lllyasviel/Annotators"
BODY, HAND, FACE = "body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"


def wanted(hands, face):
    names = [BODY] + ([HAND] if hands else []) + ([FACE] if face else [])
    return [("openpose", name, SOURCE) for name in names]


def locate(wanted_files):
    """Paths for each wanted file (models folder first, then the HF cache); raises
    MissingModelFiles naming every file that is in neither."""
    paths, absent = [], []
    for entry in wanted_files:
        path = models.find(entry[0], entry[1]) or _hf_cached(entry[1])
        (paths if path else absent).append(path or entry)
    if absent:
        raise models.MissingModelFiles(absent, hint="Download them from " + SOURCE + " into the 'openpose' folder.")
    return paths


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
    """The photo as controlnet-aux's detector sees it: short side `resolution`, sides multiple of 64."""
    from controlnet_aux.util import resize_image

    return resize_image(photo, resolution)


def extract(det, photo, resolution, hands=False, face=False):
    """One HxWx3 uint8 RGB photo -> POSE_KEYPOINT frame (normalized coordinates, canvas = photo size)."""
    poses = det.detect_poses(detect_resized(photo, resolution), include_hand=hands, include_face=face)
    people = []
    for pose in poses:
        person = {"pose_keypoints_2d": pose_render.encode_points(
            [None if k is None else (k.x, k.y) for k in pose.body.keypoints], 18)}
        for name, points, enabled in (("hand_left_keypoints_2d", pose.left_hand, hands),
                                      ("hand_right_keypoints_2d", pose.right_hand, hands),
                                      ("face_keypoints_2d", pose.face, face)):
            person[name] = pose_render.encode_points(
                [(k.x, k.y) for k in points], pose_render.COUNTS[name]) if enabled and points else None
        people.append(person)
    return {"people": people, "canvas_width": int(photo.shape[1]), "canvas_height": int(photo.shape[0])}
