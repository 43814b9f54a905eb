"""SDXL text-to-image and SDXL + OpenPose ControlNet: local (diffusers) or Segmind
(`sdxl1.0-txt2img`, `sdxl-openpose`, `ip-sdxl-openpose`), behind one signature (engines/backend.py).

A request is the sampler's inputs under their own names: sdxl (the PF_SDXL handle or None),
prompt, negative_prompt, width, height, num_inference_steps, guidance_scale, scheduler, seed,
samples, ip_adapter (PF_IPADAPTER or None), control (PF_CONTROL: more ControlNets, or None), latent
and denoise (a pass from a LATENT), inpaint_image, mask, mask_grow and mask_feather (inpainting);
for pose runs also pose (PF_POSE or a pose-map IMAGE), controlnet_scale, control_start, control_end
and pose_fit. Each side returns ((IMAGE, LATENT), details).
"""
import math

from ..host import images
from ..host.progress import Progress
from ..local import schedulers
from . import ipadapter, pose_match
from .sdxl_inputs import (MASK_LIMIT, POSE_FITS, SIZE, SDXLRequestError, controlnet_entries, inpainting, is_pose,
                          pose_count, pose_maps, pose_photos, sized)

DTYPES = ["auto", "fp16", "bf16", "fp32"]
PREDICTIONS = list(schedulers.PREDICTIONS)
STRENGTH_MAX = 10.0  # a PF_ControlNet's strength, as core's Apply ControlNet
POSE_MATCHES, MATCH_TRIES = pose_match.MODES, pose_match.MAX_TRIES
SCHEDULERS = schedulers.NAMES
NO_LOADER = ("checkpoints", "an SDXL checkpoint: connect a PF_SDXLLoader node to the `sdxl` input", None)
NO_CONTROLNET = "an OpenPose ControlNet for PF_SDXLOpenPose: choose one in PF_SDXLLoader's `controlnet` (it is 'none')"
SEED_MAX = 999_999_999_999_999  # Segmind's largest seed, so a seed means the same on both backends


def union_modes():
    """PF_ControlNet's modes: auto (a ControlNet of one kind), then a union's control types."""
    from ..local import controlnets  # not at start-up: it brings the model cache with it

    return ["auto"] + list(controlnets.MODES)


def handle(ckpt, controlnet, dtype, prediction="auto"):
    """PF_SDXL: which files to load (nothing is loaded until a sampler runs), how the checkpoint samples
    (`auto`: as it says), and no LoRA yet."""
    folder, name = ("diffusers", ckpt[len("[diffusers] "):]) if ckpt.startswith("[diffusers] ") else ("checkpoints", ckpt)
    if prediction not in PREDICTIONS:
        raise SDXLRequestError(f"prediction must be one of {', '.join(PREDICTIONS)}, not {prediction!r}.")
    return {"ckpt": (folder, name), "controlnet": None if controlnet == "none" else controlnet, "dtype": dtype,
            "prediction": prediction, "loras": []}


def with_control(control, controlnet, image, mode, strength, start, end):
    """PF_CONTROL: `control` (a list, or None) with one more ControlNet entry (the given list is left as it
    is: ComfyUI reuses a node's output)."""
    for name, value, hi in (("strength", strength, STRENGTH_MAX), ("start", start, 1.0), ("end", end, 1.0)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= hi):
            raise SDXLRequestError(f"PF_ControlNet {name} {value} must be a number within 0..{hi:g}.")
    if not start < end:
        raise SDXLRequestError(f"PF_ControlNet start {start} must be below its end {end}.")
    entry = {"name": controlnet, "image": image, "mode": mode, "strength": float(strength), "start": float(start),
             "end": float(end)}
    return list(control or []) + [entry]


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


def check(request):
    """The checks of what the local engine can do, before any heavy work (Segmind's own ranges are
    checked only when Segmind runs)."""
    lo, hi = SIZE
    for side, value in zip(("width", "height"), sized(request)[2:]):
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
    control = request.get("control")
    if control is not None and not (isinstance(control, list) and all(isinstance(c, dict) for c in control)):
        raise SDXLRequestError("control must be PF_ControlNet's PF_CONTROL output.")


def files(request):
    """{role: (folder, file, source)}: ckpt, controlnet (pose runs), control0.. (PF_ControlNet), lora0..
    (PF_SDXLLoRA), ipadapter and clip_vision (with an image prompt)."""
    from ..local import controlnets, families, lora

    check(request)
    if is_pose(request):
        pose_match.check(request, SEED_MAX)  # the detector scores on this machine, whichever backend samples
    sdxl_handle = request["sdxl"]
    if sdxl_handle is None:
        return {"ckpt": NO_LOADER}
    wanted = {} if sdxl_handle.get("core") else {"ckpt": (*sdxl_handle["ckpt"], families.SDXL_SOURCE)}
    if is_pose(request):  # none chosen: missing for the local side only (Segmind needs no ControlNet file)
        wanted["controlnet"] = ("controlnet", sdxl_handle["controlnet"] or NO_CONTROLNET, families.OPENPOSE_SOURCE)
    for index, spec in enumerate(request.get("control") or []):
        wanted[f"control{index}"] = ("controlnet", spec["name"], controlnets.UNION_SOURCE)
    for index, spec in enumerate(sdxl_handle.get("loras", [])):
        wanted[f"lora{index}"] = ("loras", spec["name"], lora.SOURCE)
    if request.get("ip_adapter") is not None:
        wanted.update(ipadapter.files(request["ip_adapter"]))
    return wanted


def local(request, paths):
    return pose_match.run(request, lambda job: _sampled(job, paths))


def _sampled(request, paths):
    import numpy as np
    import torch

    from ..local import lora, sdxl

    sdxl_handle = request["sdxl"]
    loras = []
    for index, spec in enumerate(sdxl_handle.get("loras", [])):
        cross = sdxl.component_config(paths["ckpt"], "unet")["cross_attention_dim"]
        lora.check(paths[f"lora{index}"], cross)  # from its tensor names and shapes: before anything loads
        loras.append((paths[f"lora{index}"], spec["strength_model"], spec["strength_clip"]))
    latent, pixels, width, height = sized(request)
    job = dict(request, ckpt=paths.get("ckpt"), core=sdxl_handle.get("core"), dtype=sdxl_handle["dtype"],
               prediction=sdxl_handle.get("prediction", "auto"), loras=loras, width=width, height=height,
               latent=latent, inpaint_image=pixels, denoise=request.get("denoise", 1.0), frames=pose_count(request))
    job["prediction"] = sdxl.prediction(job)  # the checkpoint's own, unless the loader says
    sdxl.check_prompts(job)
    if is_pose(request):
        job["poses"] = pose_maps(job)
    job["controlnets"] = controlnet_entries(request, paths, job)
    job.update(inpainting(request, job))
    notes = []
    if request.get("ip_adapter") is not None:
        from ..local import ipadapter as local_ip

        encoder = request["ip_adapter"].get("loaded_clip_vision") or paths["clip_vision"]
        info, _ = local_ip.check_pair(paths["ipadapter"], encoder)  # they fit: before any load
        refs, notes = ipadapter.references(request["ip_adapter"])
        job["ip_adapter"] = dict(request["ip_adapter"], adapter=paths["ipadapter"], encoder=encoder, info=info,
                                 images=refs)
    with Progress(sdxl.evaluations(job) * job["frames"], "SDXL") as bar:  # what is computed: Heun, DPM2 twice a step
        out, latents = sdxl.generate(job, bar.step)
    result = torch.from_numpy(np.stack(out).astype(np.float32))
    details = {"image_count": len(out), "seed": request["seed"], "prediction": job["prediction"]}
    return (result, {"samples": latents}), dict(details, face_crop=notes) if notes else details


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
    if request.get("inpaint_image") is not None or request.get("mask") is not None:
        raise SDXLRequestError("Segmind's endpoints do not inpaint: an inpaint_image and mask run locally only "
                               "(backend 'local').")
    if request.get("control"):
        names = ", ".join(c["name"] for c in request["control"])
        raise SDXLRequestError(f"Segmind runs one pose ControlNet of its own: the PF_ControlNet entries ({names}) "
                               "run locally only (backend 'local'), or disconnect `control`.")
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
    return pose_match.run(request, _sent)


def _sent(request):
    from .backend import segmind_run

    endpoint, jobs, ignored = segmind_jobs(request)
    ip = request.get("ip_adapter")
    if ip is not None and ipadapter.crops_faces(ip):  # the checks are done: the detector runs only to send
        face = ipadapter.segmind_image(ip)
        jobs = [dict(job, ip_image=face) for job in jobs]
    out, info = segmind_run(endpoint, jobs)
    return (out, None), dict(info, image_count=int(out.shape[0]), segmind_ignores=ignored)
