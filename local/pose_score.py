"""How well an image kept the pose it was asked for: the people a detector finds in it against the
target pose's, joint by joint, as COCO scores keypoints.

For a target person and a person found, each body joint the target has (OpenPose's COCO-18) scores
its keypoint similarity exp(-d^2 / (2 s^2 k^2)): d is the joint's distance in pixels, s^2 the area of
the target person's box (the box of its visible joints: COCO uses the person's segment area, which a
pose does not have), k = 2 sigma with COCO's per-joint sigma (the neck, which COCO lacks, takes the
shoulders'). A joint the image lost scores 0. The person's OKS is the mean over the target's joints.
People are matched one to one, most similar pair first (the same in either order); the image's score
is the matched OKS summed over max(people asked, people found), so a missing or an extra person
lowers it, and an image with nobody in it scores 0. A target with nobody in it scores 1 for an image
with nobody, else 0.
"""
import math

JOINTS = ["nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
          "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
          "left_eye", "right_ear", "left_ear"]  # OpenPose's COCO-18 order
SIGMAS = [0.026, 0.079, 0.079, 0.072, 0.062, 0.079, 0.072, 0.062, 0.107, 0.087, 0.089, 0.107, 0.087, 0.089, 0.025,
          0.025, 0.035, 0.035]  # COCO's, in that order (the neck: the shoulders')


def person(target, found, width, height):
    """(OKS, {joint: {"distance": d / s or None, "similarity": 0..1}}) of one person `found` (18 points,
    (x, y) normalized or None; None: nobody) against `target`, on a width x height image."""
    visible = [(i, p) for i, p in enumerate(target[:18]) if p is not None]
    if not visible:
        return 0.0, {}
    xs, ys = [p[0] * width for _, p in visible], [p[1] * height for _, p in visible]
    area = max((max(xs) - min(xs)) * (max(ys) - min(ys)), 1.0)  # one pixel at the least: a lone joint
    joints = {}
    for i, p in visible:
        q = found[i] if found is not None and i < len(found) else None
        if q is None:
            joints[JOINTS[i]] = {"distance": None, "similarity": 0.0}
            continue
        d2 = ((q[0] - p[0]) * width) ** 2 + ((q[1] - p[1]) * height) ** 2
        similarity = math.exp(-d2 / (2 * area * (2 * SIGMAS[i]) ** 2))
        joints[JOINTS[i]] = {"distance": round(math.sqrt(d2 / area), 6), "similarity": round(similarity, 6)}
    return sum(j["similarity"] for j in joints.values()) / len(joints), joints


def frame(targets, founds, width, height):
    """{"score", "people": [{"target", "found", "oks", "joints"}], "missing", "extra"} of an image whose people
    found are `founds` against the target pose's `targets` (each a list of 18 body points)."""
    if not targets:
        return {"score": 0.0 if founds else 1.0, "people": [], "missing": 0, "extra": len(founds)}
    pairs = {(t, f): person(target, found, width, height)
             for t, target in enumerate(targets) for f, found in enumerate(founds)}
    ranked = sorted(pairs, key=lambda key: (-pairs[key][0], key))
    matched, used_t, used_f = [], set(), set()
    for t, f in ranked:
        if t not in used_t and f not in used_f:
            used_t.add(t)
            used_f.add(f)
            matched.append((t, f))
    people = []
    for t, target in enumerate(targets):
        f = next((f for tt, f in matched if tt == t), None)
        oks, joints = pairs[(t, f)] if f is not None else person(target, None, width, height)
        people.append({"target": t, "found": f, "oks": round(oks, 6), "joints": joints})
    score = sum(p["oks"] for p in people) / max(len(targets), len(founds))
    return {"score": round(score, 6), "people": people, "missing": len(targets) - len(matched),
            "extra": len(founds) - len(matched)}
