"""Pose-true images: a pose sampler's images scored against the pose they were asked for (engines/pose.match:
the same detector as the target pose's, OKS per person, local/pose_score.py), and kept best first.

`pose_match` on PF_SDXLOpenPose:
- off: nothing is detected;
- score: each image's score is reported (the node's output, per image, and a per-joint JSON report);
- sort: the images of each pose come back best first;
- best: only the best `best_k` of each pose's `samples`;
- reseed: while an image scores below `min_score`, the whole batch is drawn again with the next seeds
  (seed + round x images), at most `max_tries` more times, and each image keeps its best draw; the seeds
  tried for each image are reported.
Each image costs one detector pass (a round of reseed: one more sampling and one more pass per image).
Works on both backends: the images are scored here, on this machine.
"""
from ..host.images import to_uint8
from . import pose as pose_engine

MODES = ["off", "score", "sort", "best", "reseed"]
MAX_TRIES = 8


class PoseMatchError(ValueError):
    pass


def check(request, seed_max):
    """What `pose_match` needs, before anything runs: its settings, seeds within `seed_max` for every round,
    keypoints to score against, and the detector's files (MissingModelFiles names them)."""
    mode = request.get("pose_match", "off")
    if mode not in MODES:
        raise PoseMatchError(f"pose_match must be one of {', '.join(MODES)}, not {mode!r}.")
    if mode == "off":
        return
    if not 1 <= request.get("best_k", 1) <= request["samples"]:
        raise PoseMatchError(f"best_k {request.get('best_k')} must be within 1..samples ({request['samples']}).")
    if not 0.0 <= request.get("min_score", 0.5) <= 1.0:
        raise PoseMatchError(f"min_score {request.get('min_score')} must be within 0..1.")
    tries = request.get("max_tries", 2)
    if not isinstance(tries, int) or not 1 <= tries <= MAX_TRIES:
        raise PoseMatchError(f"max_tries {tries!r} must be within 1..{MAX_TRIES}.")
    frames = _frames(request)
    if mode == "reseed" and request["seed"] + (tries + 1) * len(frames) * request["samples"] > seed_max:
        raise PoseMatchError(f"reseed draws up to {tries} more batches with the next seeds: the seed must stay "
                             f"within 0..{seed_max}.")
    pose_engine.check_detector(detector(request))


def _frames(request):
    pose = request["pose"]
    frames = pose.get("keypoints") if isinstance(pose, dict) else None
    if not frames:
        raise PoseMatchError("pose_match scores the images against the pose's keypoints: connect a PF_POSE from "
                             "PF_OpenPoseExtract or PF_PoseRender (a pose-map IMAGE has none), or set it to off.")
    return frames


def detector(request):
    """The detector that scores the images: the one that found the target pose (the default one for a pose
    drawn by hand)."""
    return request["pose"].get("detector") or pose_engine.default_detector()


def run(request, sample):
    """`sample(request)` -> ((IMAGE, LATENT or None), details), with the pose match `request` asks for (checked
    by `check`)."""
    mode, seed = request.get("pose_match", "off"), request["seed"]
    if mode == "off":
        return sample(request)
    frames, name = _frames(request), detector(request)
    (images, latent), details = sample(request)
    count = len(images)
    per, targets = count // len(frames), pose_engine.per_image(frames, count)
    fit = request.get("pose_fit", "fit")
    reports = pose_engine.match(to_uint8(images, "image"), targets, fit, name)
    kept, tried = [seed + i for i in range(count)], [[seed + i] for i in range(count)]
    if mode == "reseed":
        for round_ in range(1, request.get("max_tries", 2) + 1):
            low = [i for i, r in enumerate(reports) if r["score"] < request.get("min_score", 0.5)]
            if not low:
                break
            shift = round_ * count
            (again, again_latent), _ = sample(dict(request, seed=seed + shift))
            scored = pose_engine.match(to_uint8(again, "image"), targets, fit, name)
            for i in low:
                tried[i].append(seed + shift + i)
                if scored[i]["score"] > reports[i]["score"]:
                    images[i], reports[i], kept[i] = again[i], dict(scored[i], image=i), seed + shift + i
                    if latent is not None:
                        latent["samples"][i] = again_latent["samples"][i]
    order = list(range(count))
    if mode in ("sort", "best"):
        keep = request.get("best_k", 1) if mode == "best" else per
        order = [i for start in range(0, count, per)
                 for i in sorted(range(start, start + per), key=lambda i: -reports[i]["score"])[:keep]]
        images = images[order]
        if latent is not None:
            latent = {"samples": latent["samples"][order]}
    details = dict(details, image_count=len(order), pose_match=mode, detector=name,
                   pose_scores=[reports[i]["score"] for i in order], seeds=[kept[i] for i in order],
                   pose_report=[pose_engine.report([reports[i] for i in order])])
    if mode == "reseed":
        details["seeds_tried"] = [tried[i] for i in order]
    return (images, latent), details

