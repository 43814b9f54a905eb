"""SDXL text-to-image and SDXL + OpenPose ControlNet: local (diffusers) or Segmind
(`sdxl1.0-txt2img`, `sdxl-openpose`), behind one signature.

A request is a dict: sdxl (the PF_SDXL handle or None), prompt, negative_prompt,
width, height, steps, guidance, scheduler, seed, samples; for pose runs also pose
(PF_POSE or a pose-map IMAGE), controlnet_scale, control_start, control_end and
ip_adapter (PF_IPADAPTER of engines/ipadapter.py, or None; Segmind then runs
`ip-sdxl-openpose`). Each side returns ((IMAGE,), details).
"""
from ..host import images, models
from ..host.progress import Progress
from . import ipadapter

DTYPES = ["auto", "fp16", "bf16", "fp32"]
NO_LOADER = ("checkpoints", "an SDXL checkpoint: connect a PF_SDXLLoader node to the `sdxl` input", None)


class SDXLRequestError(ValueError):
    pass


def handle(ckpt, controlnet, dtype):
    """PF_SDXL: which files to load (nothing is loaded until a sampler runs)."""
    folder, name = ("diffusers", ckpt[len("[diffusers] "):]) if ckpt.startswith("[diffusers] ") else ("checkpoints", ckpt)
    return {"ckpt": (folder, name), "controlnet": None if controlnet == "none" else controlnet, "dtype": dtype}


def is_pose(request):
    return "pose" in request


def files(request):
    from ..local import sdxl

    check(request)
    handle_ = request["sdxl"]
    if handle_ is None:
        return [NO_LOADER]
    wanted = [(*handle_["ckpt"], sdxl.SDXL_SOURCE)]
    if is_pose(request):
        if handle_["controlnet"] is None:
            raise SDXLRequestError("PF_SDXLOpenPose needs an OpenPose ControlNet: choose one in PF_SDXLLoader's "
                                   f"`controlnet` (it is 'none'). Get one from {sdxl.OPENPOSE_SOURCE}.")
        wanted.append(("controlnet", handle_["controlnet"], sdxl.OPENPOSE_SOURCE))
    if request.get("ip_adapter") is not None:
        wanted += ipadapter.files(request["ip_adapter"])
    return wanted


def check(request):
    """The checks every backend shares, before any heavy work."""
    for side in ("width", "height"):
        if request[side] % 8 or request[side] < 64:
            raise SDXLRequestError(f"{side} {request[side]} must be a multiple of 8 and at least 64 "
                                   "(SDXL works best near 1024x1024).")
    if request["steps"] < 1:
        raise SDXLRequestError("steps must be at least 1.")
    if not 1 <= request["samples"] <= 4:
        raise SDXLRequestError("samples must be between 1 and 4.")
    if is_pose(request) and not 0 <= request["control_start"] < request["control_end"] <= 1:
        raise SDXLRequestError("control_start must be below control_end, both within 0..1.")


def pose_maps(pose):
    """The pose maps (uint8 RGB) of a PF_POSE or of a plain pose-map IMAGE."""
    return images.to_uint8(pose["map"] if isinstance(pose, dict) else pose, "pose")


def pose_photos(pose):
    """The source photos a Segmind pose model needs (it extracts the pose itself)."""
    source = pose.get("source") if isinstance(pose, dict) else None
    if source is None:
        raise SDXLRequestError("Segmind's sdxl-openpose extracts the pose from a photo, but this pose has none (it "
                               "was rendered or drawn, not extracted from a photo): use backend 'local', or feed "
                               "PF_OpenPoseExtract's pose from the photo.")
    return images.to_uint8(source, "pose photo")


def local(request):
    import numpy as np
    import torch

    from ..local import sdxl

    handle_ = request["sdxl"]
    paths = models.require(files(request))
    job = dict(request, ckpt=paths[0], controlnet=paths[1] if is_pose(request) else None, dtype=handle_["dtype"])
    if is_pose(request):
        job["poses"] = pose_maps(request["pose"])
    if request.get("ip_adapter") is not None:
        from ..local import ipadapter as local_ip

        adapter_path, encoder_path = paths[-2:]
        info, _ = local_ip.check_pair(adapter_path, encoder_path)  # they fit, read from their shapes: before any load
        job["ip_adapter"] = dict(request["ip_adapter"], adapter=adapter_path, encoder=encoder_path, info=info)
    count = len(job.get("poses") or [None])
    with Progress(request["steps"] * count, "SDXL") as bar:
        out = sdxl.generate(job, bar.step)
    result = torch.from_numpy(np.stack(out).astype(np.float32))
    return (result,), {"image_count": len(out), "seed": request["seed"]}


def segmind(request):
    from ..segmind.client import Client

    common = {"prompt": request["prompt"], "negative_prompt": request.get("negative_prompt") or None,
              "samples": 1, "scheduler": request["scheduler"], "num_inference_steps": request["steps"],
              "guidance_scale": request["guidance"]}
    ignored = []
    if is_pose(request):
        photos = pose_photos(request["pose"])
        common["controlnet_scale"] = request["controlnet_scale"]
        endpoint = "sdxl-openpose"
        if request.get("ip_adapter") is not None:
            fields, skipped = ipadapter.segmind_fields(request["ip_adapter"])
            common.update(fields)
            ignored += skipped
            endpoint = "ip-sdxl-openpose"
        jobs = [dict(common, image=images.from_uint8([photo]), seed=request["seed"] + i * request["samples"] + k)
                for i, photo in enumerate(photos) for k in range(request["samples"])]
        ignored += [name for name, default in (("control_start", 0.0), ("control_end", 1.0))
                    if request[name] != default]
        ignored += ["width", "height"]  # the output size is Segmind's
    else:
        jobs = [dict(common, img_width=request["width"], img_height=request["height"], refiner=False,
                     seed=request["seed"] + k) for k in range(request["samples"])]
        endpoint = "sdxl1.0-txt2img"
    out, info = Client().run(endpoint, jobs)
    if ignored:
        info["segmind_ignores"] = ", ".join(ignored)
    return (out,), dict(info, image_count=int(out.shape[0]))
