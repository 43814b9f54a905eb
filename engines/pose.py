"""Pose extraction: OpenPose (controlnet-aux's networks) or DWPose (local/dwpose.py), into one
POSE_KEYPOINT / pose map / PF_POSE form. Local only: Segmind has no pose endpoint (its pose
models extract the pose from the photo themselves, so a Segmind sampler is sent the photo
PF_POSE carries)."""
from ..host import images
from ..host.progress import Progress

DETECTORS = ["openpose", "dwpose"]


class PoseRequestError(ValueError):
    pass


def bundle(maps, keypoints, source, detector=None, **draw):
    """PF_POSE: the rendered maps (local samplers), keypoints, source photos (Segmind), the detector that
    found them (None: drawn) and how the maps were drawn (so a sampler of another output shape can draw
    the keypoints again alike)."""
    return {"map": maps, "keypoints": keypoints, "source": source, "detector": detector, "draw": draw}


def default_detector():
    """openpose while its body file is present (or DWPose's files are not), else dwpose."""
    from ..local import dwpose, openpose, pose_files

    body_file, repo = openpose.wanted(False, False)["body"]
    return "dwpose" if pose_files.find(body_file, repo) is None and dwpose.available() else "openpose"


def _detector(name, hands, face):
    """photo -> the people found, as local/openpose.detect_people gives them."""
    from ..local import dwpose, openpose

    if name == "openpose":
        det = openpose.detector(hands=hands, face=face)
        return lambda photo, resolution: openpose.detect_people(det, openpose.detect_resized(photo, resolution),
                                                                hands, face)
    if name != "dwpose":
        raise PoseRequestError(f"detector must be one of {', '.join(DETECTORS)}, not {name!r}.")
    nets = dwpose.networks()

    def detect(photo, resolution):  # DWPose looks at the whole photo: its networks crop and scale it themselves
        found = dwpose.detect_people(nets, photo)
        return [dict(p, left_hand=p["left_hand"] if hands else None, right_hand=p["right_hand"] if hands else None,
                     face=p["face"] if face else None) for p in found]

    return detect


def check_detector(name):
    """Raise MissingModelFiles (naming each file and folder) when detector `name` cannot run here: before
    a run whose images it will score is started."""
    from ..local import dwpose, openpose, pose_files

    if name not in DETECTORS:
        raise PoseRequestError(f"detector must be one of {', '.join(DETECTORS)}, not {name!r}.")
    if name == "openpose":
        pose_files.locate(openpose.wanted(False, False))
    else:
        dwpose.files()


def match(photos, targets, fit, detector):
    """The pose-match report of each of `photos` (HxWx3 uint8; local/pose_score.frame, with "image" and
    "detector"): the body joints `detector` finds in it against its target, a POSE_KEYPOINT frame (one per
    photo) placed on it as the sampler placed it (`fit`, engines/sdxl's pose_fit)."""
    from ..local import pose_render, pose_score

    detect = _detector(detector, False, False)
    reports = []
    with Progress(len(photos), "pose match") as bar:
        for index, (photo, target) in enumerate(zip(photos, targets)):
            height, width = photo.shape[:2]
            wanted = [p["pose_keypoints_2d"] for p in pose_render.placed(target, width, height, fit)
                      if p["pose_keypoints_2d"]]
            found = [p["body"] for p in detect(photo, pose_render.DRAW_SHORT_SIDE)]
            reports.append(dict(pose_score.frame(wanted, found, width, height), image=index, detector=detector))
            bar.step()
    return reports


def score(images_in, pose, detector="same", fit="fit"):
    """(scores, JSON report, the detector) of PF_PoseScore: each image of IMAGE `images_in` against the
    PF_POSE `pose` (one frame for every image, or one per image, or per image of each pose's samples)."""
    frames = pose.get("keypoints") if isinstance(pose, dict) else None
    if not frames:
        raise PoseRequestError("the pose has no keypoints to score against: connect PF_OpenPoseExtract's or "
                               "PF_PoseRender's pose.")
    photos = images.to_uint8(images_in, "images")
    targets = per_image(frames, len(photos))
    name = (pose.get("detector") or default_detector()) if detector == "same" else detector
    check_detector(name)
    reports = match(photos, targets, fit, name)
    return [r["score"] for r in reports], report(reports), name


def per_image(frames, count):
    """The POSE_KEYPOINT frame each of `count` images was made for: one frame for every image, or the same
    number of images for each frame, in order (a pose sampler's poses x samples)."""
    if count % len(frames):
        raise PoseRequestError(f"{count} image(s) for {len(frames)} pose(s): give one image per pose, or the same "
                               "number for each pose.")
    return [frames[i * len(frames) // count] for i in range(count)]


def report(reports):
    """The per-joint JSON report a node's output carries (and the editor shows)."""
    import json

    return json.dumps(list(reports), separators=(",", ":"))


def face_squares(photos, detector):
    """For each of `photos` (HxWx3 uint8), the square (left, top, side) around the largest face `detector`
    finds (local/pose_render.face_square), or None where it finds none."""
    from ..local import pose_render

    detect = _detector(detector, False, False)
    found = []
    for photo in photos:
        height, width = photo.shape[:2]
        squares = [pose_render.face_square(p["body"], width, height) for p in detect(photo, pose_render.DRAW_SHORT_SIDE)]
        found.append(max((s for s in squares if s is not None), key=lambda s: s[2], default=None))
    return found


def check_resolution(resolution):
    """The short side maps are drawn at: 64..MAX_SIDE (the widget stops at 2048; scripts may ask more)."""
    if not isinstance(resolution, int) or not 64 <= resolution <= images.MAX_SIDE:
        raise PoseRequestError(f"resolution {resolution!r} must be a whole number of pixels within 64..{images.MAX_SIDE}.")


def extract(image, detector="openpose", detect_body=True, detect_hands=False, detect_face=False, resolution=512,
            stick_width=4):
    """(pose map IMAGE at the photos' size, POSE_KEYPOINT frames, PF_POSE, people per photo)."""
    from ..local import pose_render

    check_resolution(resolution)
    photos = images.to_uint8(image, "image")
    detect = _detector(detector, detect_hands, detect_face)
    draw = dict(body=detect_body, hands=detect_hands, face=detect_face, stick_width=stick_width, short_side=resolution)
    frames, maps = [], []
    with Progress(len(photos), detector) as bar:
        for photo in photos:
            frames.append(pose_render.frame(detect(photo, resolution), photo.shape[1], photo.shape[0]))
            maps.append(pose_render.render_frame(frames[-1], **draw))
            bar.step()
    pose_map = images.from_uint8(maps)
    return pose_map, frames, bundle(pose_map, frames, images.from_uint8(photos), detector, **draw), [
        len(f["people"]) for f in frames]


MAX_EDIT = 4 * 2 ** 20  # characters of an edited pose (a frame of 100 people is about 60 000)
MAX_FRAMES = 1024  # frames drawn in one batch (a video's poses)
MAX_PIXELS = 2 ** 27  # pixels of all the maps of one batch: 512 maps of 512x512 (the IMAGE: 1.6 GB)


def edited(text):
    """The POSE_KEYPOINT frames of the pose edited on PF_PoseRender (its `pose` widget: JSON, a frame
    or a list of frames), or None when nothing was edited."""
    import json

    from ..local import pose_render

    if not text or not text.strip():
        return None
    if len(text) > MAX_EDIT:
        raise pose_render.KeypointError(f"the edited pose is {len(text)} characters long; at most {MAX_EDIT}")
    try:
        found = json.loads(text)
    except RecursionError:
        raise pose_render.KeypointError("the edited pose nests lists too deep to be POSE_KEYPOINT JSON") from None
    except ValueError as exc:
        raise pose_render.KeypointError(f"the edited pose is not POSE_KEYPOINT JSON ({exc}): clear it on the node, "
                                        "or load a pose file") from None
    return [found] if isinstance(found, dict) else found


def render(keypoints=None, width=0, height=0, draw_body=True, draw_hands=True, draw_face=True, stick_width=4,
           threshold=0.0, resolution=512, pose=""):
    """(pose map IMAGE, PF_POSE, frames) of the pose edited on the node, else of POSE_KEYPOINT frames."""
    from ..local import pose_render

    check_resolution(resolution)
    frames = edited(pose)
    if frames is None:
        frames = [keypoints] if isinstance(keypoints, dict) else list(keypoints or [])
    if not isinstance(frames, list) or not frames:
        raise pose_render.KeypointError("no pose to draw: connect keypoints (POSE_KEYPOINT), or place a pose in the "
                                        "node's editor")
    sizes = [pose_render.output_size(f, width, height) for f in frames[:MAX_FRAMES + 1]]
    pixels = sum(w * h for w, h in sizes)
    if len(frames) > MAX_FRAMES or pixels > MAX_PIXELS:  # before any map is drawn
        raise pose_render.KeypointError(
            f"{len(frames)} frames of {pixels:,} pixels in all are too many to draw: at most {MAX_FRAMES} frames "
            f"and {MAX_PIXELS:,} pixels (set width and height, or draw fewer frames)")
    draw = dict(body=draw_body, hands=draw_hands, face=draw_face, stick_width=stick_width, threshold=threshold,
                short_side=resolution)
    maps = [pose_render.render_frame(f, width, height, **draw) for f in frames]
    if len({m.shape for m in maps}) > 1:
        raise pose_render.KeypointError("frames have different canvas sizes; set width and height to draw "
                                        "them as one batch")
    pose_map = images.from_uint8(maps)
    return pose_map, bundle(pose_map, frames, None, **draw), frames


def tables():
    """How pose maps are drawn and read (local/pose_render.py), for the editor to draw as the server
    does: limbs (1-based joint pairs) and their colours, hand edges and colours, points per part,
    the most people a frame holds, frames a batch draws and pixels a canvas side has, and BODY_25 ->
    COCO-18 (which BODY_25 points the 18 are)."""
    from ..local import pose_render as r

    return {"limbs": r.LIMBS, "colours": r.BODY_COLOURS, "hand_edges": r.HAND_EDGES,
            "hand_colours": [[round(c) for c in colour] for colour in r.HAND_COLOURS], "parts": r.COUNTS,
            "max_people": r.MAX_PEOPLE, "max_frames": MAX_FRAMES, "max_side": images.MAX_SIDE,
            "body_25_to_coco": r.BODY_25_TO_COCO}
