"""POSE_KEYPOINT <-> pose maps in the standard OpenPose colours and limb order.

A POSE_KEYPOINT is a list with one dict per image:
    {"people": [{"pose_keypoints_2d": [x, y, c] * 18,
                 "hand_left_keypoints_2d": [x, y, c] * 21 | None,
                 "hand_right_keypoints_2d": [x, y, c] * 21 | None,
                 "face_keypoints_2d": [x, y, c] * 70 | None}],
     "canvas_width": W, "canvas_height": H}
We write coordinates normalized to 0..1 (as controlnet_aux does; c = 1.0 when
present, [0, 0, 0] when missing) and read both that and pixel coordinates (as
DWPose and ComfyUI's own pose nodes write), deciding per frame. 25-point BODY_25
bodies are converted to COCO-18. Also where a pose lands on an output of another shape
(`placed`) and the square around a person's face (`face_square`).
"""
import colorsys
import math

from ..host.images import MAX_SIDE, work_scale

LIMBS = [(2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
         (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18)]  # 1-based, OpenPose COCO-18 order
BODY_COLOURS = [(255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
                (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255),
                (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85)]
HAND_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]
HAND_COLOURS = [tuple(c * 255 for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1.0, 1.0))
                for i in range(len(HAND_EDGES))]
COUNTS = {"pose_keypoints_2d": 18, "hand_left_keypoints_2d": 21, "hand_right_keypoints_2d": 21,
          "face_keypoints_2d": 70}
EPS = 0.01


class KeypointError(ValueError):
    pass


def encode_points(points, count):
    """[(x, y) normalized | None] -> flat [x, y, c] * count; off-canvas or missing -> 0, 0, 0."""
    flat = []
    for i in range(count):
        p = points[i] if points is not None and i < len(points) else None
        if p is None or p[0] < 0 or p[1] < 0:
            flat += [0.0, 0.0, 0.0]
        else:
            flat += [float(p[0]), float(p[1]), 1.0]
    return flat


MAX_PEOPLE = 100  # people drawn in one frame
MAX_POINTS = {"pose_keypoints_2d": 25, "hand_left_keypoints_2d": 21, "hand_right_keypoints_2d": 21,
              "face_keypoints_2d": 70}
FAR = 64.0  # a point more than this many canvases away from the canvas is no pose


def frame(people, width, height):
    """A POSE_KEYPOINT frame of detected people [{"body", "left_hand", "right_hand", "face": [(x, y)
    normalized | None] | None}] on a width x height canvas."""
    def encoded(points, name):
        return None if points is None else encode_points(points, COUNTS[name])

    return {"people": [{"pose_keypoints_2d": encode_points(p["body"], 18),
                        "hand_left_keypoints_2d": encoded(p["left_hand"], "hand_left_keypoints_2d"),
                        "hand_right_keypoints_2d": encoded(p["right_hand"], "hand_right_keypoints_2d"),
                        "face_keypoints_2d": encoded(p["face"], "face_keypoints_2d")} for p in people],
            "canvas_width": int(width), "canvas_height": int(height)}


def _triplets(flat, name):
    if flat is None:
        return None
    if not isinstance(flat, (list, tuple)):
        raise KeypointError(f"{name} must be a list of x, y, confidence numbers, not {type(flat).__name__}")
    if len(flat) % 3 or len(flat) > 3 * MAX_POINTS[name]:
        raise KeypointError(f"{name} must hold x, y, confidence triplets (at most {MAX_POINTS[name]}); got "
                            f"{len(flat)} numbers")
    for value in flat:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise KeypointError(f"{name} holds {value!r}: every coordinate and confidence must be a finite number")
    return [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)]


def canvas_side(frame, name):
    """canvas_width / canvas_height of a frame as a whole number of pixels (0 when absent)."""
    value = frame.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise KeypointError(f"{name} must be a number of pixels, not {value!r}")
    if not 0 <= value <= MAX_SIDE:
        raise KeypointError(f"{name}={value:g} is outside 0..{MAX_SIDE} pixels")
    return int(value)


BODY_25_TO_COCO = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]  # drops MidHip and the feet
OFF_CANVAS = 0.5  # normalized points may lie up to half a canvas outside it
STICK_WIDTH = 4  # controlnet-aux's limb half-width, in pixels of the drawing canvas
DRAW_SHORT_SIDE = 512  # controlnet-aux's default detect resolution


def _body(points, name):
    """18 COCO body points; BODY_25 (OpenPose's other body model) is converted, others refused."""
    if points is None or len(points) in (0, 18):
        return points
    if len(points) == 25:
        return [points[i] for i in BODY_25_TO_COCO]
    raise KeypointError(f"{name} has {len(points)} points: PoseForge draws 18-point COCO (OpenPose) bodies and "
                        "converts 25-point BODY_25; other layouts (e.g. 17-point COCO-WholeBody) cannot be drawn as "
                        "OpenPose maps")


def frame_parts(frame, threshold=0.0):
    """[{part: [(x, y) normalized | None]}] for each person of a frame. Pixel or normalized
    coordinates are decided once per frame from the canvas size (so one point slightly off the
    canvas cannot flip a normalized person to pixels); points with confidence <= threshold
    count as missing."""
    canvas_w, canvas_h = canvas_side(frame, "canvas_width"), canvas_side(frame, "canvas_height")
    found = frame.get("people") or []
    if len(found) > MAX_PEOPLE:
        raise KeypointError(f"a frame holds {len(found)} people; PoseForge draws at most {MAX_PEOPLE}")
    people = []
    for person in found:
        if not isinstance(person, dict):
            raise KeypointError(f"each person in 'people' must be a dict of keypoint lists, not {person!r:.40}")
        parts = {name: _triplets(person.get(name), name) for name in COUNTS}
        parts["pose_keypoints_2d"] = _body(parts["pose_keypoints_2d"], "pose_keypoints_2d")
        people.append(parts)
    visible = [p for parts in people for pts in parts.values() if pts for p in pts if p[2] > threshold]
    largest = max((max(abs(p[0]), abs(p[1])) for p in visible), default=0.0)
    pixels = largest > 1.0 + OFF_CANVAS
    if pixels and not (canvas_w and canvas_h):
        raise KeypointError("keypoints are in pixels but the frame has no canvas_width/canvas_height")
    sx, sy = (canvas_w, canvas_h) if pixels else (1.0, 1.0)
    if largest > FAR * max(sx, sy):
        raise KeypointError(f"a keypoint lies at {largest:g}, more than {FAR:g} canvases away from the canvas: "
                            "these are not pose coordinates")
    return [{name: None if pts is None else [(x / sx, y / sy) if c > threshold else None for x, y, c in pts]
             for name, pts in parts.items()} for parts in people]


def draw_size(width, height, short_side=DRAW_SHORT_SIDE):
    """The canvas controlnet-aux draws (and detects) on for an image of width x height: short
    side `short_side`, both sides rounded to multiples of 64 (its resize_image); for thin
    images the long side stays within MAX_ASPECT times the short side (host/images.py)."""
    k = work_scale(width, height, short_side)
    return max(64, int(round(width * k / 64.0)) * 64), max(64, int(round(height * k / 64.0)) * 64)


def render_frame(frame, width=None, height=None, body=True, hands=True, face=True, stick_width=STICK_WIDTH,
                 threshold=0.0, short_side=DRAW_SHORT_SIDE):
    """One POSE_KEYPOINT frame -> HxWx3 uint8 pose map (size: width/height or the canvas).
    Drawn as controlnet-aux draws it (on a canvas of short side `short_side`, then resized
    with INTER_LINEAR), so limbs keep the same width relative to the image at every size."""
    W, H = output_size(frame, width, height)
    return draw_people(frame_parts(frame, threshold), W, H, body, hands, face, stick_width, short_side)


def output_size(frame, width=None, height=None):
    """(W, H) of the map `render_frame` draws for `frame`: width/height, else its canvas."""
    if not isinstance(frame, dict) or not isinstance(frame.get("people") or [], list):
        raise KeypointError("each POSE_KEYPOINT frame must be a dict with a 'people' list")
    W = int(width or canvas_side(frame, "canvas_width"))
    H = int(height or canvas_side(frame, "canvas_height"))
    if W < 1 or H < 1:
        raise KeypointError("no output size: set width and height, or give canvas_width/canvas_height")
    return W, H


def draw_people(people, W, H, body=True, hands=True, face=True, stick_width=STICK_WIDTH, short_side=DRAW_SHORT_SIDE):
    """People ({part: [(x, y) normalized | None]}) drawn into a W x H pose map, on the draw canvas."""
    import cv2
    import numpy as np

    dw, dh = draw_size(W, H, short_side)
    canvas = np.zeros((dh, dw, 3), np.uint8)
    for parts in people:
        if body and parts["pose_keypoints_2d"]:
            draw_body(canvas, parts["pose_keypoints_2d"], stick_width)
        if hands:
            for side in ("hand_left_keypoints_2d", "hand_right_keypoints_2d"):
                if parts[side]:
                    draw_hand(canvas, parts[side])
        if face and parts["face_keypoints_2d"]:
            draw_face(canvas, parts["face_keypoints_2d"])
    return canvas if (dw, dh) == (W, H) else cv2.resize(canvas, (W, H), interpolation=cv2.INTER_LINEAR)


def draw_body(canvas, points, stickwidth=STICK_WIDTH):
    import cv2

    H, W, _ = canvas.shape
    points = list(points) + [None] * (18 - len(points))
    for (a, b), colour in zip(LIMBS, BODY_COLOURS):
        p, q = points[a - 1], points[b - 1]
        if p is None or q is None:
            continue
        xs, ys = (p[0] * W, q[0] * W), (p[1] * H, q[1] * H)
        length = ((xs[0] - xs[1]) ** 2 + (ys[0] - ys[1]) ** 2) ** 0.5  # as controlnet_aux computes it
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        poly = cv2.ellipse2Poly((int(sum(xs) / 2), int(sum(ys) / 2)), (int(length / 2), stickwidth),
                                int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, poly, [int(c * 0.6) for c in colour])
    for p, colour in zip(points, BODY_COLOURS):
        if p is not None:
            cv2.circle(canvas, (int(p[0] * W), int(p[1] * H)), 4, colour, thickness=-1)
    return canvas


def draw_hand(canvas, points):
    import cv2

    H, W, _ = canvas.shape
    px = [None if p is None else (int(p[0] * W), int(p[1] * H)) for p in points]
    for (a, b), colour in zip(HAND_EDGES, HAND_COLOURS):
        if a < len(px) and b < len(px) and px[a] and px[b] and min(*px[a], *px[b]) > EPS:
            cv2.line(canvas, px[a], px[b], colour, thickness=2)
    for p in px:
        if p and min(p) > EPS:
            cv2.circle(canvas, p, 4, (0, 0, 255), thickness=-1)
    return canvas


def draw_face(canvas, points):
    import cv2

    H, W, _ = canvas.shape
    for p in points:
        if p is not None:
            x, y = int(p[0] * W), int(p[1] * H)
            if x > EPS and y > EPS:
                cv2.circle(canvas, (x, y), 3, (255, 255, 255), thickness=-1)
    return canvas


# -- a pose on an output of another shape ------------------------------------------------
SAME_SHAPE = 0.01  # aspect ratios this close are the same shape


def placement(src_w, src_h, width, height, mode):
    """(scale x, scale y, offset x, offset y) that put a src_w x src_h canvas on width x height:
    `fit` whole and centred, `crop` covering it and centred, `stretch` onto it."""
    if mode == "stretch":
        return width / src_w, height / src_h, 0.0, 0.0
    s = (min if mode == "fit" else max)(width / src_w, height / src_h)
    return s, s, (width - src_w * s) / 2, (height - src_h * s) / 2


def same_shape(w, h, width, height):
    return abs(w / h - width / height) <= SAME_SHAPE * width / height


def fit_map(pose_map, width, height, mode):
    """A pose map (uint8) for a width x height output: letterboxed (`fit`) or centre-cropped (`crop`)
    when its shape differs; as it is when the shape is the same or `stretch` (the sampler resizes it)."""
    import cv2
    import numpy as np

    h, w = pose_map.shape[:2]
    if mode == "stretch" or same_shape(w, h, width, height):
        return pose_map
    sx, sy, ox, oy = placement(w, h, width, height, mode)
    matrix = np.array([[sx, 0, ox], [0, sy, oy]], np.float64)
    return cv2.warpAffine(pose_map, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


def fit_frame(frame, width, height, mode, body=True, hands=True, face=True, stick_width=STICK_WIDTH,
              threshold=0.0, short_side=DRAW_SHORT_SIDE):
    """A POSE_KEYPOINT frame drawn at width x height, its skeleton's proportions kept: the frame's
    canvas is fitted or cropped onto the output (`placement`) and the limbs drawn at the output's
    size, so they keep their width too."""
    return draw_people(placed(frame, width, height, mode, threshold), width, height, body, hands, face, stick_width,
                       short_side)


def placed(frame, width, height, mode, threshold=0.0):
    """The people of a POSE_KEYPOINT frame ({part: [(x, y) normalized | None]}) where they land on a
    width x height output: the frame's canvas fitted, cropped or stretched onto it (`placement`)."""
    cw, ch = canvas_side(frame, "canvas_width") or width, canvas_side(frame, "canvas_height") or height
    sx, sy, ox, oy = placement(cw, ch, width, height, "stretch" if same_shape(cw, ch, width, height) else mode)

    def moved(points):
        return None if points is None else [
            None if p is None else ((ox + p[0] * cw * sx) / width, (oy + p[1] * ch * sy) / height) for p in points]

    return [{name: moved(points) for name, points in parts.items()} for parts in frame_parts(frame, threshold)]


HEAD = (0, 14, 15, 16, 17)  # nose, eyes, ears: the body points on a face
FACE_MARGIN = 2.0  # a face crop's side over the face's size: the face with its hair and a margin, as FFHQ


def face_square(body, width, height):
    """(left, top, side) in pixels of a square crop around the face of a person's 18 body points (normalized)
    on a width x height image: centred on the head points, FACE_MARGIN times the face's size (their span, or
    2.2 eye distances when that is more), inside the image; None with fewer than two head points."""
    points = [(body[i][0] * width, body[i][1] * height) for i in HEAD if i < len(body) and body[i] is not None]
    if len(points) < 2:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    eyes = [body[i] for i in (14, 15) if i < len(body) and body[i] is not None]
    between = math.hypot((eyes[0][0] - eyes[1][0]) * width, (eyes[0][1] - eyes[1][1]) * height) if len(eyes) == 2 else 0
    side = min(width, height, max(2, round(FACE_MARGIN * max(max(xs) - min(xs), max(ys) - min(ys), 2.2 * between))))
    cx, cy = sum(xs) / len(xs), sum(ys) / len(ys)
    left = min(max(0, round(cx - side / 2)), width - side)
    top = min(max(0, round(cy - side / 2)), height - side)
    return left, top, side
