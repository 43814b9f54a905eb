"""OpenPose body / hand / face detection through controlnet-aux.

Weights: body_pose_model.pth, hand_pose_model.pth, facenet.pth from the
`openpose` model folder, or from a Hugging Face cache the user already has
(lllyasviel/Annotators). Nothing is downloaded. The networks load with
torch.load(weights_only=True) (torch >= 2.6 default), are cached per device,
and are released when ComfyUI frees memory.
"""
from ..host import device, memory, models
from . import pose_render

SOURCE = "https://huggingface.co/lllyasviel/Annotators"
BODY, HAND, FACE = "body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"
NET_BYTES = 220 * 2 ** 20  # the three networks together, fp32


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


def _load(kind, path, dev):
    def load():
        from controlnet_aux.open_pose import Body, Face, Hand

        net = {"body": Body, "hand": Hand, "face": Face}[kind](path)
        return net.to(dev)

    return memory.cached(("openpose", kind, path, str(dev)), load, dev, NET_BYTES // 3)


def detector(hands=False, face=False):
    """An OpenposeDetector holding the networks needed, cached between runs."""
    from controlnet_aux.open_pose import OpenposeDetector

    dev = device.torch_device()
    paths = locate(wanted(hands, face))
    body_path, rest = paths[0], paths[1:]
    hand_net = _load("hand", rest.pop(0), dev) if hands else None
    face_net = _load("face", rest.pop(0), dev) if face else None
    return OpenposeDetector(_load("body", body_path, dev), hand_net, face_net)


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
