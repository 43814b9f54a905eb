"""SDXL text-to-image and SDXL + OpenPose ControlNet: local (diffusers) or Segmind
(`sdxl1.0-txt2img`, `sdxl-openpose`, `ip-sdxl-openpose`), behind one signature (engines/backend.py).

A request is the sampler's inputs under their own names: sdxl (the PF_SDXL handle or None),
prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
samples, ip_adapter (PF_IPADAPTER or None); for pose runs also pose (PF_POSE or a pose-map
IMAGE), controlnet_scale, control_start, control_end and pose_fit. Each side returns ((IMAGE,), details).
"""
from ..host import images
from ..host.progress import Progress
from ..local import schedulers
from . import ipadapter

DTYPES = ["auto", "fp16", "bf16", "fp32"]
SCHEDULERS = schedulers.NAMES
POSE_FITS = ["fit", "crop", "stretch"]
NO_LOADER = ("checkpoints", "an SDXL checkpoint: connect a PF_SDXLLoader node to the `sdxl` input", None)
NO_CONTROLNET = "an OpenPose ControlNet for PF_SDXLOpenPose: choose one in PF_SDXLLoader's `controlnet` (it is 'none')"
SIZE = (64, 4096)  # what the local engine takes, in multiples of 8 (the widgets start at 256)
SEED_MAX = 999_999_999_999_999  # Segmind's largest seed, so a seed means the same on both backends
LATENT_CHANNELS = 4


class SDXLRequestError(ValueError):
    pass


def handle(ckpt, controlnet, dtype):
    """PF_SDXL: which files to load (nothing is loaded until a sampler runs), and no LoRA yet."""
    folder, name = ("diffusers", ckpt[len("[diffusers] "):]) if ckpt.startswith("[diffusers] ") else ("checkpoints", ckpt)
    return {"ckpt": (folder, name), "controlnet": None if controlnet == "none" else controlnet, "dtype": dtype,
            "loras": []}


def from_core(model, clip, vae, controlnet, checked=True):
    """PF_SDXL over the MODEL, CLIP and VAE core loaded (local/sdxl_core.py): no file, no second copy.
    `checked` False: the editor's plan, whose stand-ins are no networks."""
    from ..local import sdxl_core

    core = sdxl_core.handle(model, clip, vae) if checked else {"model": model, "clip": clip, "vae": vae}
    return {"ckpt": None, "core": core,
            "controlnet": None if controlnet == "none" else controlnet, "dtype": "auto", "loras": []}


def with_lora(sdxl, lora_name, strength_model, strength_clip):
    """A new PF_SDXL handle: `sdxl` with one more LoRA (the given handle is left as it is: ComfyUI
    reuses a node's output)."""
    if sdxl.get("core") is not None:
        raise SDXLRequestError("This PF_SDXL is core's loaded model (PF_SDXLFromModel), whose weights ComfyUI "
                               "owns: put core's LoraLoader before PF_SDXLFromModel instead of PF_SDXLLoRA.")
    for name, value in (("strength_model", strength_model), ("strength_clip", strength_clip)):
        if not -4.0 <= value <= 4.0:  # NaN fails this too
            raise SDXLRequestError(f"{name} {value} must be within -4..4.")
    lora = {"name": lora_name, "strength_model": float(strength_model), "strength_clip": float(strength_clip)}
    return dict(sdxl, loras=list(sdxl.get("loras", [])) + [lora])


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
    if latent.get("noise_mask") is not None:
        raise SDXLRequestError("This LATENT carries a noise mask (Set Latent Noise Mask, VAE Encode for Inpainting): "
                               "PoseForge's samplers do not inpaint yet; use core's KSampler for a masked pass.")
    lo, hi = SIZE
    if not (lo <= samples.shape[-1] * 8 <= hi and lo <= samples.shape[-2] * 8 <= hi):
        raise SDXLRequestError(f"the latent is {samples.shape[-1] * 8}x{samples.shape[-2] * 8} pixels: the local "
                               f"engine takes {lo}..{hi} a side.")
    images = pose_count(request) * request["samples"]
    if samples.shape[0] not in (1, request["samples"], images):
        raise SDXLRequestError(f"the latent holds {samples.shape[0]} image(s): give 1 (used for every image), "
                               f"`samples` ({request['samples']}: one per sample, for each pose) or one per output "
                               f"image ({images}).")
    if not bool(torch.isfinite(samples).all()):
        raise SDXLRequestError("the latent holds values that are not finite (NaN or infinity).")
    return samples


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
    """(the LATENT input's samples, checked, or None; the output's width and height: the latent's when
    there is one, as for core's KSampler, else the widgets')."""
    samples = latent_samples(request)
    if samples is None:
        return None, request["width"], request["height"]
    return samples, samples.shape[-1] * 8, samples.shape[-2] * 8


def check(request):
    """The checks of what the local engine can do, before any heavy work (Segmind's own ranges are
    checked only when Segmind runs)."""
    lo, hi = SIZE
    for side, value in zip(("width", "height"), sized(request)[1:]):
        if value % 8 or not lo <= value <= hi:
            raise SDXLRequestError(f"{side} {value} must be a multiple of 8 within {lo}..{hi} (SDXL works "
                                   "best near 1024x1024).")
    if not 0.0 <= request.get("denoise", 1.0) <= 1.0:
        raise SDXLRequestError(f"denoise {request['denoise']} must be within 0..1.")
    if not 1 <= request["num_inference_steps"] <= 150:
        raise SDXLRequestError("num_inference_steps must be within 1..150.")
    if not 1 <= request["samples"] <= 16:
        raise SDXLRequestError("samples must be within 1..16.")
    if not isinstance(request["seed"], int) or not 0 <= request["seed"] <= SEED_MAX:
        raise SDXLRequestError(f"seed must be a whole number within 0..{SEED_MAX}.")
    schedulers.check(request["scheduler"])
    if is_pose(request):
        if not 0 <= request["control_start"] < request["control_end"] <= 1:
            raise SDXLRequestError("control_start must be below control_end, both within 0..1.")
        if request["pose_fit"] not in POSE_FITS:
            raise SDXLRequestError(f"pose_fit must be one of {', '.join(POSE_FITS)}, not {request['pose_fit']!r}.")


def files(request):
    """{role: (folder, file, source)}: ckpt, controlnet (pose runs), lora0.. (PF_SDXLLoRA), ipadapter and
    clip_vision (with an image prompt)."""
    from ..local import families, lora

    check(request)
    sdxl_handle = request["sdxl"]
    if sdxl_handle is None:
        return {"ckpt": NO_LOADER}
    wanted = {} if sdxl_handle.get("core") else {"ckpt": (*sdxl_handle["ckpt"], families.SDXL_SOURCE)}
    if is_pose(request):  # none chosen: missing for the local side only (Segmind needs no ControlNet file)
        wanted["controlnet"] = ("controlnet", sdxl_handle["controlnet"] or NO_CONTROLNET, families.OPENPOSE_SOURCE)
    for index, spec in enumerate(sdxl_handle.get("loras", [])):
        wanted[f"lora{index}"] = ("loras", spec["name"], lora.SOURCE)
    if request.get("ip_adapter") is not None:
        wanted.update(ipadapter.files(request["ip_adapter"]))
    return wanted


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
    maps = images.to_uint8(pose["map"] if isinstance(pose, dict) else pose, "pose")
    return [pose_render.fit_map(m, *out, fit) for m in maps]


def pose_photos(pose):
    """The source photos a Segmind pose model needs (it extracts the pose itself)."""
    source = pose.get("source") if isinstance(pose, dict) else None
    if source is None:
        raise SDXLRequestError("Segmind's sdxl-openpose extracts the pose from a photo, but this pose has none (it "
                               "was rendered or drawn, not extracted from a photo): use backend 'local', or feed "
                               "PF_OpenPoseExtract's pose from the photo.")
    return images.to_uint8(source, "pose photo")


def local(request, paths):
    import numpy as np
    import torch

    from ..local import lora, sdxl

    sdxl_handle = request["sdxl"]
    loras = []
    for index, spec in enumerate(sdxl_handle.get("loras", [])):
        cross = sdxl.component_config(paths["ckpt"], "unet")["cross_attention_dim"]
        lora.check(paths[f"lora{index}"], cross)  # from its tensor names and shapes: before anything loads
        loras.append((paths[f"lora{index}"], spec["strength_model"], spec["strength_clip"]))
    latent, width, height = sized(request)
    job = dict(request, ckpt=paths.get("ckpt"), core=sdxl_handle.get("core"), controlnet=paths.get("controlnet"),
               dtype=sdxl_handle["dtype"], loras=loras, width=width, height=height, latent=latent,
               denoise=request.get("denoise", 1.0))
    sdxl.check_prompts(job)
    if is_pose(request):
        job["poses"] = pose_maps(job)
    if request.get("ip_adapter") is not None:
        from ..local import ipadapter as local_ip

        encoder = request["ip_adapter"].get("loaded_clip_vision") or paths["clip_vision"]
        info, _ = local_ip.check_pair(paths["ipadapter"], encoder)  # they fit: before any load
        job["ip_adapter"] = dict(request["ip_adapter"], adapter=paths["ipadapter"], encoder=encoder, info=info)
    count = len(job.get("poses") or [None])
    with Progress(sdxl.evaluations(job) * count, "SDXL") as bar:  # what is computed: Heun, DPM2 evaluate twice a step
        out, latents = sdxl.generate(job, bar.step)
    result = torch.from_numpy(np.stack(out).astype(np.float32))
    return (result, {"samples": latents}), {"image_count": len(out), "seed": request["seed"]}


def segmind_jobs(request):
    """(endpoint, one job per image, inputs Segmind ignores); raises what Segmind cannot run."""
    sdxl_handle = request["sdxl"] or {}
    if sdxl_handle.get("core") is not None:
        raise SDXLRequestError("Segmind runs its own SDXL: a PF_SDXL from core's loaded model (PF_SDXLFromModel) "
                               "runs locally only (backend 'local'), or use PF_SDXLLoader for Segmind.")
    if sdxl_handle.get("loras"):
        raise SDXLRequestError("Segmind's endpoints take no LoRA: use backend 'local' for PF_SDXLLoRA, or remove it.")
    if request.get("latent") is not None or request.get("denoise", 1.0) != 1.0:
        raise SDXLRequestError("Segmind's endpoints start from noise: a LATENT input or a denoise below 1 runs "
                               "locally only (backend 'local').")
    if request.get("latent_out"):
        raise SDXLRequestError("Segmind returns images, not latents: the LATENT output is local only (connect the "
                               "IMAGE output, or use backend 'local').")
    problem = schedulers.segmind_problem(request["scheduler"])
    if problem:
        raise SDXLRequestError(f"Segmind cannot run this: {problem}.")
    common = {name: request[name] for name in ("prompt", "scheduler", "num_inference_steps", "guidance_scale")}
    common.update(negative_prompt=request["negative_prompt"] or None, samples=1)
    ignored = []
    ip = request.get("ip_adapter")
    if is_pose(request):
        photos = pose_photos(request["pose"])
        common["controlnet_scale"] = request["controlnet_scale"]
        endpoint = "sdxl-openpose"
        if ip is not None:
            fields, skipped = ipadapter.segmind_fields(ip)
            common.update(fields)
            ignored += skipped
            endpoint = "ip-sdxl-openpose"
        jobs = [dict(common, image=images.from_uint8([photo]), seed=request["seed"] + i * request["samples"] + k)
                for i, photo in enumerate(photos) for k in range(request["samples"])]
        ignored += ["control_start", "control_end", "width", "height", "pose_fit"]  # the output size is Segmind's
    else:
        if ip is not None:
            raise SDXLRequestError("No Segmind endpoint takes an image prompt without a pose: use backend 'local' "
                                   "for PF_SDXLText2Image with an ip_adapter, or PF_SDXLOpenPose on Segmind.")
        jobs = [dict(common, width=request["width"], height=request["height"], refiner=False,
                     seed=request["seed"] + k) for k in range(request["samples"])]
        endpoint = "sdxl1.0-txt2img"
    return endpoint, jobs, ignored


def segmind(request):
    from .backend import segmind_run

    endpoint, jobs, ignored = segmind_jobs(request)
    out, info = segmind_run(endpoint, jobs)
    return (out, None), dict(info, image_count=int(out.shape[0]), segmind_ignores=ignored)
