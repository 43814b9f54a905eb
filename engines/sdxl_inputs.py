"""What an SDXL sampler's inputs become for the local engine (engines/sdxl.py): the start of a run (a
LATENT, or an image to inpaint with its mask) checked and sized, the poses and control maps at the output
size, and the ControlNets a run stacks, each checked before anything loads.
"""
from ..host import images
from ..local.inpaint import LIMIT as MASK_LIMIT

POSE_FITS = ["fit", "crop", "stretch"]
SIZE = (64, 4096)  # what the local engine takes, in multiples of 8 (the widgets start at 256)
LATENT_CHANNELS = 4


class SDXLRequestError(ValueError):
    pass


def is_pose(request):
    return "pose" in request


def latent_samples(request):
    """The LATENT input's samples (n, 4, h, w), checked; None without one."""
    import torch

    latent = request.get("latent")
    if latent is None:
        return None
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not torch.is_tensor(samples) or samples.dim() != 4 or samples.shape[1] != LATENT_CHANNELS:
        shape = tuple(samples.shape) if torch.is_tensor(samples) else type(samples).__name__
        raise SDXLRequestError(f"latent must be an SDXL LATENT, samples (batch, 4, height/8, width/8), not {shape}.")
    mask = latent.get("noise_mask")
    if mask is not None and (not torch.is_tensor(mask) or mask.dim() not in (2, 3, 4) or 0 in mask.shape):
        raise SDXLRequestError("the latent's noise_mask must be a mask tensor (core's Set Latent Noise Mask makes "
                               "one).")
    _check_batch(request, samples.shape[0], "the latent", samples.shape[-1] * 8, samples.shape[-2] * 8)
    if not bool(torch.isfinite(samples).all()):
        raise SDXLRequestError("the latent holds values that are not finite (NaN or infinity).")
    return samples


def _check_batch(request, count, what, width, height):
    """A start for the run (a latent, an image to inpaint) of `count` images at width x height pixels."""
    lo, hi = SIZE
    if not (lo <= width <= hi and lo <= height <= hi):
        raise SDXLRequestError(f"{what} is {width}x{height} pixels: the local engine takes {lo}..{hi} a side.")
    images = pose_count(request) * request["samples"]
    if count not in (1, request["samples"], images):
        raise SDXLRequestError(f"{what} holds {count} image(s): give 1 (used for every image), `samples` "
                               f"({request['samples']}: one per sample, for each pose) or one per output image "
                               f"({images}).")


def inpaint_pixels(request):
    """The image to inpaint (float [n, H, W, 3], cropped to multiples of 8 about its centre, as core's VAE
    Encode crops), checked with its mask; None without one."""
    import torch

    pixels, mask = request.get("inpaint_image"), request.get("mask")
    if pixels is None and mask is None:
        return None
    if pixels is None or mask is None:
        missing = "mask (MASK: 1 where to generate)" if mask is None else "inpaint_image (the picture to keep)"
        raise SDXLRequestError(f"Inpainting takes an inpaint_image and a mask together: connect {missing}.")
    if request.get("latent") is not None:
        raise SDXLRequestError("Give either a LATENT or an inpaint_image, not both (the image is the start).")
    for name in ("mask_grow", "mask_feather"):
        value = request.get(name, 0)
        if not isinstance(value, int) or not 0 <= value <= MASK_LIMIT:
            raise SDXLRequestError(f"{name} {value!r} must be a whole number of pixels within 0..{MASK_LIMIT}.")
    if not torch.is_tensor(mask) or mask.dim() not in (2, 3) or 0 in mask.shape:
        raise SDXLRequestError(f"mask must be a ComfyUI MASK [batch, height, width], not {getattr(mask, 'shape', mask)}.")
    if not torch.is_tensor(pixels) or pixels.dim() != 4 or pixels.shape[-1] not in (3, 4):
        raise SDXLRequestError("inpaint_image must be a ComfyUI IMAGE [batch, height, width, 3].")
    h, w = pixels.shape[1] // 8 * 8, pixels.shape[2] // 8 * 8
    _check_batch(request, pixels.shape[0], "the inpaint_image", w, h)
    count = mask.shape[0] if mask.dim() == 3 else 1
    if count not in (1, pixels.shape[0]):
        raise SDXLRequestError(f"the mask holds {count} masks for {pixels.shape[0]} image(s): give 1 or one per image.")
    top, left = (pixels.shape[1] - h) // 2, (pixels.shape[2] - w) // 2
    return torch.nan_to_num(pixels[:, top:top + h, left:left + w, :3].float(), nan=0.0).clamp(0, 1)


def pose_count(request):
    """How many poses a run samples (1 without a pose)."""
    if not is_pose(request):
        return 1
    pose = request["pose"]
    if isinstance(pose, dict) and pose.get("keypoints"):
        return len(pose["keypoints"])
    maps = pose["map"] if isinstance(pose, dict) else pose
    return len(maps) if hasattr(maps, "__len__") else 1


def sized(request):
    """(the LATENT input's samples, checked, or None; the image to inpaint, checked, or None; the output's width
    and height: the latent's or the image's when there is one, as for core's KSampler, else the widgets')."""
    samples, pixels = latent_samples(request), inpaint_pixels(request)
    if samples is not None:
        return samples, None, samples.shape[-1] * 8, samples.shape[-2] * 8
    if pixels is not None:
        return None, pixels, pixels.shape[2], pixels.shape[1]
    return None, None, request["width"], request["height"]


def pose_maps(request):
    """The pose maps (uint8 RGB, the output's size: `request`'s width and height, a job's being the
    latent's when it has one) the ControlNet receives: a PF_POSE with keypoints
    whose canvas has another aspect is drawn again at the output size, fitted or cropped (its
    skeleton's proportions kept); a plain pose-map IMAGE is letterboxed or centre-cropped; `stretch`
    only resizes."""
    from ..local import pose_render

    pose, out, fit = request["pose"], (request["width"], request["height"]), request["pose_fit"]
    if isinstance(pose, dict) and pose.get("keypoints"):
        return [pose_render.fit_frame(frame, *out, fit, **pose.get("draw", {})) for frame in pose["keypoints"]]
    return control_maps(pose["map"] if isinstance(pose, dict) else pose, request, "pose")


def control_maps(image, request, what):
    """An IMAGE batch as control maps (uint8 RGB at the output size), fitted as the run's `pose_fit` says so
    that they stay aligned with the pose (text-to-image: `crop`, as core's Apply ControlNet)."""
    from ..local import pose_render

    fit = request.get("pose_fit", "crop")
    return [pose_render.fit_map(m, request["width"], request["height"], fit) for m in images.to_uint8(image, what)]


def controlnet_entries(request, paths, job):
    """The ControlNets a local run stacks (local/sdxl.generate's `controlnets`): the pose's, then each
    PF_ControlNet entry; one at strength 0 is left out (the run is the run without it). Each file is checked
    to be a ControlNet PoseForge runs and its union mode resolved before anything loads."""
    from ..local import controlnets

    entries = []
    if is_pose(request) and request["controlnet_scale"] != 0:
        entries.append(dict(path=paths["controlnet"], maps=job["poses"], scale=request["controlnet_scale"],
                            start=request["control_start"], end=request["control_end"],
                            mode=controlnets.checked_mode(paths["controlnet"], "openpose", "the pose", pose=True)))
    for index, spec in enumerate(request.get("control") or []):
        path, what = paths[f"control{index}"], f"PF_ControlNet ({spec['name']})"
        mode = controlnets.checked_mode(path, spec["mode"], f"{what}'s mode", pose=False)
        maps = control_maps(spec["image"], job, f"{what} image")
        if len(maps) not in (1, job["frames"]):
            raise SDXLRequestError(f"{what} has {len(maps)} control images for {job['frames']} pose(s): give 1 (for "
                                   "every pose) or one per pose.")
        if spec["strength"] != 0:
            entries.append(dict(path=path, maps=maps, scale=spec["strength"], start=spec["start"], end=spec["end"],
                                mode=mode))
    return entries


def inpainting(request, job):
    """{noise_mask, keep} of a local job (local/sdxl.generate): a LATENT's noise mask at the latent's size
    and batch, or the image to inpaint with its grown and feathered mask (local/inpaint.py)."""
    import torch

    from ..local import inpaint

    latent, pixels = job["latent"], job["inpaint_image"]
    if latent is not None and isinstance(request["latent"].get("noise_mask"), torch.Tensor):
        mask = inpaint.noise_mask(request["latent"]["noise_mask"], latent.shape[-2], latent.shape[-1])
        return {"noise_mask": _repeated(mask, latent.shape[0]), "keep": None}
    if pixels is None:
        return {"noise_mask": None, "keep": None}
    mask = inpaint.pixel_mask(request["mask"], pixels.shape[1], pixels.shape[2], request.get("mask_grow", 0),
                              request.get("mask_feather", 0))
    return {"noise_mask": None, "keep": (pixels, _repeated(mask, pixels.shape[0]))}


def _repeated(batch, count):
    """`batch` repeated to `count` rows and cut (core's repeat_to_batch_size)."""
    return batch.repeat(-(-count // batch.shape[0]), *[1] * (batch.dim() - 1))[:count]


def pose_photos(pose):
    """The source photos a Segmind pose model needs (it extracts the pose itself)."""
    source = pose.get("source") if isinstance(pose, dict) else None
    if source is None:
        raise SDXLRequestError("Segmind's sdxl-openpose extracts the pose from a photo, but this pose has none (it "
                               "was rendered or drawn, not extracted from a photo): use backend 'local', or feed "
                               "PF_OpenPoseExtract's pose from the photo.")
    return images.to_uint8(source, "pose photo")
