"""Pose extraction: OpenPose (controlnet-aux's networks) or DWPose (local/dwpose.py), into one
POSE_KEYPOINT / pose map / PF_POSE form. Local only: Segmind has no pose endpoint (its pose
models extract the pose from the photo themselves, so a Segmind sampler is sent the photo
PF_POSE carries)."""
from ..host import images
from ..host.progress import Progress

DETECTORS = ["openpose", "dwpose"]


class PoseRequestError(ValueError):
    pass


def bundle(maps, keypoints, source, **draw):
    """PF_POSE: the rendered maps (local samplers), keypoints, source photos (Segmind) and how the maps
    were drawn (so a sampler of another output shape can draw the keypoints again alike)."""
    return {"map": maps, "keypoints": keypoints, "source": source, "draw": draw}


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


def extract(image, detector="openpose", detect_body=True, detect_hands=False, detect_face=False, resolution=512,
            stick_width=4):
    """(pose map IMAGE at the photos' size, POSE_KEYPOINT frames, PF_POSE, people per photo)."""
    from ..local import pose_render

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
    return pose_map, frames, bundle(pose_map, frames, images.from_uint8(photos), **draw), [len(f["people"])
                                                                                          for f in frames]


def render(keypoints, width=0, height=0, draw_body=True, draw_hands=True, draw_face=True, stick_width=4,
           threshold=0.0, resolution=512):
    """(pose map IMAGE, PF_POSE) of POSE_KEYPOINT frames."""
    from ..local import pose_render

    frames = [keypoints] if isinstance(keypoints, dict) else list(keypoints or [])
    if not frames:
        raise pose_render.KeypointError("POSE_KEYPOINT is empty: no frames to draw")
    draw = dict(body=draw_body, hands=draw_hands, face=draw_face, stick_width=stick_width, threshold=threshold,
                short_side=resolution)
    maps = [pose_render.render_frame(f, width, height, **draw) for f in frames]
    if len({m.shape for m in maps}) > 1:
        raise pose_render.KeypointError("frames have different canvas sizes; set width and height to draw "
                                        "them as one batch")
    pose_map = images.from_uint8(maps)
    return pose_map, bundle(pose_map, frames, None, **draw)
