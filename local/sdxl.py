"""SDXL text-to-image and SDXL + OpenPose ControlNet sampling through diffusers.

Files: an SDXL checkpoint (one file in the original LDM/SGM layout, or a diffusers
folder) and optionally a ControlNet (a diffusers-key file such as thibaud's
OpenPoseXL2.safetensors, or a diffusers folder such as xinsir's). Always offline:
diffusers gets the configs that ship in `sdxl_config/` (or the diffusers config
that sits beside the file: `<name>.config/` for a checkpoint, `config.json` in a
ControlNet's folder) and `local_files_only`; the CLIP tokenizer comes from
ComfyUI's own `comfy/sd1_tokenizer/` inside the host and from `clip_vocab/`
(MIT, OpenAI CLIP's BPE) outside it. Nothing global is set.

Each component (text encoders, UNet, ControlNet, VAE) is a Resident of
host/residency.py and is on the device only for its phase: encode, sample, decode.
The VAE is kept in fp32, so fp16 runs never decode black images. With an IP-Adapter
(local/ipadapter.py) the CLIP vision encoder joins the first phase, the adapter the
second, and the adapter is in the UNet only while the run samples.
"""
import contextlib
import functools
import logging
import os

from ..host import comfy, device, residency, weights
from . import controlnets, families, inpaint, ipadapter, libs, lora, prompt, schedulers, sdxl_file, vae

log = logging.getLogger("PoseForge")
HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_DIR = os.path.join(HERE, "sdxl_config")
VOCAB_DIR = os.path.join(HERE, "clip_vocab")
def resolved(name):
    """The dtype name `auto` means here: fp16 on CUDA, fp32 elsewhere (others are themselves), so
    `auto` and `fp16` on CUDA share one cache entry."""
    if name == "auto":
        return "fp16" if device.torch_device().type == "cuda" else "fp32"
    return name


def _name_of(dtype):
    """The dtype name torch_dtype() maps to `dtype` (fp32 for any other)."""
    return next((name for name in ("fp16", "bf16") if torch_dtype(name) == dtype), "fp32")


def torch_dtype(name):
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[resolved(name)]


# -- loading -------------------------------------------------------------------
def tokenizers():
    """(tokenizer, tokenizer_2) for SDXL: CLIP BPE with 77 tokens; the second pads with '!'."""
    folder = VOCAB_DIR
    comfy_root = _comfy_root()
    if comfy_root and os.path.exists(os.path.join(comfy_root, "sd1_tokenizer", "vocab.json")):
        folder = os.path.join(comfy_root, "sd1_tokenizer")
    return _tokenizers(folder)


@functools.lru_cache(maxsize=2)
def _tokenizers(folder):
    CLIPTokenizer = libs.transformers().CLIPTokenizer
    files = (os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
    return (CLIPTokenizer(*files, model_max_length=77),
            CLIPTokenizer(*files, model_max_length=77, pad_token="!"))


def _comfy_root():
    path = getattr(comfy.module("comfy"), "__path__", None)
    return list(path)[0] if path else None


def checkpoint(path, dtype_name="auto"):
    """{text_encoder, text_encoder_2, unet, vae} Residents of an SDXL checkpoint, loaded at
    first use and cached by file identity: a .safetensors single file memory-mapped straight
    into the modules (local/sdxl_file.py), a diffusers folder or a .ckpt through diffusers."""
    ident = weights.identity(path)
    names = ("text_encoder", "text_encoder_2", "unet", "vae")
    dtype_name = resolved(dtype_name)

    def load():
        import torch

        families.check_checkpoint(path)  # reads the tensor names only: before any heavy import or load
        dtype = torch_dtype(dtype_name)
        if not os.path.isdir(path) and path.lower().endswith(weights.SAFETENSORS):
            configs = {part: component_config(path, part) for part in names}
            on_cpu = device.torch_device().type == "cpu"  # text encoders as stored there (RAM), as ComfyUI
            parts = sdxl_file.sdxl_parts(path, configs, dtype, torch.float32, text_as_stored=on_cpu)  # VAE in fp32
        else:
            diffusers = libs.diffusers()
            tok, tok2 = tokenizers()
            common = dict(torch_dtype=dtype, local_files_only=True, tokenizer=tok, tokenizer_2=tok2,
                          low_cpu_mem_usage=True)
            if os.path.isdir(path):
                pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(path, **common)
            else:
                pipe = diffusers.StableDiffusionXLPipeline.from_single_file(path, config=config_dir(path), **common)
            parts = {name: getattr(pipe, name) for name in names}
            parts["vae"] = parts["vae"].to(torch.float32)
        log.info("PoseForge: loaded SDXL %s (%s)", os.path.basename(path), dtype)
        return parts

    return residency.get_group({n: ("sdxl", n, ident, dtype_name) for n in names}, load)


def controlnet(path, dtype_name="auto"):
    """The ControlNet Resident of `path` in the run's dtype (local/controlnets.py)."""
    return controlnets.load(path, torch_dtype(dtype_name))


def config_dir(ckpt_path):
    """The diffusers config folder of a checkpoint: a diffusers folder is its own; a single file
    uses a `<name>.config/` folder beside it when there is one, else the SDXL configs we ship."""
    if ckpt_path is None:  # core's loaded model (local/sdxl_core.py): SDXL's own configs
        return CONFIG_DIR
    if os.path.isdir(ckpt_path):
        return ckpt_path
    beside = os.path.splitext(ckpt_path)[0] + ".config"
    return beside if os.path.exists(os.path.join(beside, "model_index.json")) else CONFIG_DIR


def component_config(ckpt_path, part, name="config.json"):
    """A component's diffusers config (e.g. "unet", or "scheduler" / "scheduler_config.json") of a
    checkpoint, read without loading anything."""
    return families.read_json(os.path.join(config_dir(ckpt_path), part, name))


# -- sampling, phase by phase -----------------------------------------------------
_PINNED = {}


def _pipeline(nets, sched, cn_net, dev, img2img=False):
    """A diffusers SDXL (ControlNet; `img2img`: starting from given latents) pipeline over the given
    modules whose execution device is `dev`, whatever device the idle components sit on (they are
    moved phase by phase)."""
    diffusers = libs.diffusers()
    base = {(False, False): diffusers.StableDiffusionXLPipeline,
            (True, False): diffusers.StableDiffusionXLControlNetPipeline,
            (False, True): diffusers.StableDiffusionXLImg2ImgPipeline,
            (True, True): diffusers.StableDiffusionXLControlNetImg2ImgPipeline}[(cn_net is not None, img2img)]
    if base not in _PINNED:
        _PINNED[base] = type(base.__name__, (base,), {"_execution_device": property(lambda self: self._pf_device)})
    extra = {"controlnet": cn_net} if cn_net is not None else {}
    tok, tok2 = tokenizers()
    pipe = _PINNED[base](vae=nets["vae"], text_encoder=nets["text_encoder"], text_encoder_2=nets["text_encoder_2"],
                         tokenizer=tok, tokenizer_2=tok2, unet=nets["unet"],
                         scheduler=sched, add_watermarker=False, **extra)
    pipe._pf_device = dev
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_prompts(request):
    """Refuse a prompt past local/prompt.py's bounds (or with a weight that is not a finite number of
    reasonable size) before anything loads: both encoders' tokenizers chunk alike."""
    tok, _ = tokenizers()
    for text in (request["prompt"], request["negative_prompt"]):
        prompt.chunks(tok, text, tok.eos_token_id)


def prediction(request):
    """How the run samples (schedulers.PREDICTIONS but auto): the loader's choice, else what the checkpoint says
    (a single file's v_pred / ztsnr keys, core's model sampling, a diffusers folder's scheduler config)."""
    chosen = request.get("prediction") or "auto"
    if chosen != "auto":
        return chosen
    if request.get("core") is not None:
        from . import sdxl_core

        return sdxl_core.prediction(request["core"])
    path = request["ckpt"]
    said = None if os.path.isdir(path) else families.prediction(weights.keys(path))
    if said:
        return said
    config = component_config(path, "scheduler", "scheduler_config.json")
    if config.get("prediction_type") != "v_prediction":
        return "eps"
    return "v_prediction_zsnr" if config.get("rescale_betas_zero_snr") else "v_prediction"


def scheduler_config(request):
    """The checkpoint's scheduler config, set to sample as the run's `prediction` says."""
    config = component_config(request["ckpt"], "scheduler", "scheduler_config.json")
    return schedulers.predicting(config, request["prediction"]) if request.get("prediction") else config


def evaluations(request):
    """How many times `generate` calls `step` per pose: the UNet evaluations of its scheduler."""
    return schedulers.evaluations(request["scheduler"], scheduler_config(request), request["num_inference_steps"],
                                  request.get("denoise", 1.0))


def generate(request, step):
    """Run one SDXL job. request: the sampler's inputs (prompt, negative_prompt, width, height,
    num_inference_steps, guidance_scale, scheduler, seed, samples) and ckpt (a path, or `core`: core's
    loaded networks), dtype, `prediction` (see `prediction`; None: the config's), `frames` (poses to sample
    for, 1 without), `controlnets` [{path, mode (a union's control type or None), maps (HxWx3 uint8 at the
    output size: one per frame, or one for all), scale, start, end}] in the order they are stacked (none at
    scale 0), `loras` [(path, strength_model, strength_clip)] and `ip_adapter` (the engines/ipadapter handle
    plus the `adapter` path, the `encoder` (a path, or a CLIP_VISION ComfyUI loaded) and the adapter's `info`
    from local/ipadapter.check_pair, or None), `latent` (unscaled SDXL latents to start from, as a ComfyUI
    LATENT holds them, batch 1, `samples` or one per image; None: from an empty latent), `denoise` (1: from
    noise; below 1: that much of the schedule, from the latent, as core's KSampler), `noise_mask` (a LATENT's
    mask at the latent size, as `latent`'s batch: only where it is 1 is generated) and `keep` ((pixels
    [n, H, W, 3], their feathered mask [n, H, W]) to inpaint: encoded as the latent, the mask's region
    generated and pasted back into them; local/inpaint.py).
    `step(preview=None)` is called after every UNet evaluation (`evaluations(request)` times per frame).
    Returns (a list of HxWx3 float32 arrays in 0..1: per frame, `samples` images with seeds seed, seed+1,
    ...; their unscaled latents, (n, 4, h/8, w/8) float32 on the CPU)."""
    if request.get("core") is not None:
        from . import sdxl_core

        parts = sdxl_core.parts(request["core"])  # over the tensors ComfyUI just loaded, for this run
    else:
        parts = checkpoint(request["ckpt"], request["dtype"])
    dtype_name = request["dtype"] if request.get("core") is None else _name_of(parts["unet"].net.dtype)
    entries = [dict(spec, resident=controlnet(spec["path"], dtype_name)) for spec in request.get("controlnets", [])]
    with residency.holding(*parts.values(), *(e["resident"] for e in entries)):  # an IP-Adapter or LoRA run
        return _generate(request, step, parts, entries)  # changes them: one run at a time


def _generate(request, step, parts, entries):
    import torch

    dev = device.torch_device()
    sched, call = schedulers.build(request["scheduler"], scheduler_config(request))
    nets = {name: r.net for name, r in parts.items()}
    cn = controlnets.stack([(e["resident"].net, e["mode"]) for e in entries]) if entries else None
    pipe = _pipeline(nets, sched, cn, dev)  # the LoRAs go in through it
    # it samples without the text encoders: it would cast our embeddings to their dtype, which on
    # the CPU (stored in 16 bits, see sdxl_file) is not the UNet's
    sampler = _pipeline(dict(nets, text_encoder=None, text_encoder_2=None), sched, cn, dev,
                        img2img=request.get("denoise", 1.0) < 1.0)
    samples, guided = request["samples"], request["guidance_scale"] > 1.0
    ip = request.get("ip_adapter")
    adapter = ipadapter.adapter(ip["adapter"], parts["unet"]) if ip else None
    keep = request.get("keep")
    given, mask = request.get("latent"), request.get("noise_mask")
    if keep is not None:  # the image to keep, as latents: phase 0
        given = vae.encode(residency.use(parts["vae"])[0], keep[0])
        mask = inpaint.latent_mask(keep[1])
    elif given is None and request.get("denoise", 1.0) < 1.0:
        given = torch.zeros(1, 4, request["height"] // 8, request["width"] // 8)  # core's Empty Latent Image

    with lora.applied(pipe, request.get("loras") or []):
        encoders = (parts["text_encoder"], parts["text_encoder_2"])
        with torch.no_grad(), residency.phase(encoders, streamable=encoders, what="SDXL text encoders") as nets:
            embeds = prompt.pipeline_embeds(pipe.tokenizer, pipe.tokenizer_2, nets, request["prompt"],
                                            request["negative_prompt"] if guided else None)  # phase 1
        dtype = parts["unet"].net.dtype  # the embeddings (and the image encoder) in the UNet's dtype
        if ip:
            encoder = ipadapter.encoder(ip["encoder"], dtype) if isinstance(ip["encoder"], str) else ip["encoder"]
            image_embeds = ipadapter.image_embeds(encoder, ip["info"], ip["images"], ip["negative"], ip["combine"],
                                                  guided=guided)
            embeds["ip_adapter_image_embeds"] = [image_embeds.to(dev, dtype)]
        text_mask = embeds.pop("text_mask", None)
        embeds = {k: v.to(dev, dtype) if torch.is_tensor(v) else v for k, v in embeds.items()}

        preview = _previewer()
        frames = request.get("frames", 1)
        latents, kept = [], {}

        def on_step(pipe_, i, t, kwargs):
            if kept:
                kwargs["latents"] = inpaint.blend(pipe_, i, kwargs["latents"], **kept)
            step(preview=preview(kwargs["latents"]) if preview else None)
            return kwargs

        resident_cns = [e["resident"] for e in entries]
        reserve = activations(request, dtype, controlnets=len(entries))
        with residency.phase([parts["unet"], *resident_cns, adapter], streamable=(parts["unet"], *resident_cns),
                             reserve=reserve, what="SDXL UNet" + (" + ControlNet" * bool(entries))), \
                (ipadapter.installed(pipe, adapter.net, ipadapter.block_scales(pipe.unet, ip["mode"], ip["scale"]))
                 if ip else contextlib.nullcontext()), \
                prompt.masked((pipe.unet, *(r.net for r in resident_cns)), text_mask):  # phase 2: UNet, ControlNets
            for index in range(frames):
                first = request["seed"] + index * samples
                start = _for_frame(given, samples, index, frames)
                start = None if start is None else vae.scaled(parts["vae"].net.config, start.float())
                if request.get("denoise", 1.0) <= 0.0:
                    latents.append(start)  # nothing to sample: the latent as it came
                    continue
                generators = [torch.Generator("cpu").manual_seed(first + k) for k in range(samples)]
                args = dict(embeds, **call, width=request["width"], height=request["height"],
                            num_inference_steps=request["num_inference_steps"],
                            guidance_scale=request["guidance_scale"], generator=generators,
                            num_images_per_prompt=samples, output_type="latent", callback_on_step_end=on_step)
                control = "image"
                if request.get("denoise", 1.0) < 1.0:  # img2img: the schedule KSampler would run at this denoise
                    length, strength = schedulers.partial(request["num_inference_steps"], request["denoise"])
                    args.update(image=start.to(dev, dtype), strength=strength, num_inference_steps=length)
                    control = "control_image"
                    if cn is None:
                        del args["width"], args["height"]  # the latent sets the size
                if mask is not None:
                    shape = (samples, 4, request["height"] // 8, request["width"] // 8)
                    kept.update(known=start.to(dev, dtype), mask=_for_frame(mask, samples, index, frames).to(dev, dtype),
                                noise=inpaint.initial_noise(range(first, first + samples), shape, dev, dtype))
                if entries:
                    args.update({control: [_pil(e["maps"][index if len(e["maps"]) > 1 else 0]) for e in entries]},
                                controlnet_conditioning_scale=[e["scale"] for e in entries],
                                control_guidance_start=[e["start"] for e in entries],
                                control_guidance_end=[e["end"] for e in entries])
                latents.append(sampler(**args).images)

    decoder, = residency.use(parts["vae"])  # phase 3: VAE, in fp32
    images = [img for batch in latents for img in vae.decode(decoder, batch)]
    if keep is not None:
        images = inpaint.composite(images, *(torch.cat([_for_frame(t, samples, f, frames) for f in range(frames)])
                                             for t in keep))
    return images, torch.cat([vae.unscaled(decoder.config, batch.float().cpu()) for batch in latents])


def _for_frame(batch, samples, index, frames):
    """The `samples` rows of `batch` (1 for every image, `samples`: one per sample, or one per output image)
    that frame `index` uses; None for None."""
    if batch is None:
        return None
    if len(batch) == samples * frames and frames > 1:
        return batch[index * samples:(index + 1) * samples]
    return batch.expand(samples, *batch.shape[1:]) if len(batch) == 1 else batch


def activations(request, dtype, controlnets=0):
    """Bytes a sampling step needs beside the weights: ComfyUI's own estimate for SDXL (latent area
    x batch x dtype size x 0.01 x 0.8 MiB; twice the batch with guidance), each ControlNet adding as much."""
    import torch

    batch = request["samples"] * (2 if request["guidance_scale"] > 1.0 else 1)
    area = batch * (request["height"] // 8) * (request["width"] // 8)
    per = int(area * dtype.itemsize * 0.01 * 0.8 * 2 ** 20)
    return per * (1 + controlnets)


def _pil(pose):
    from PIL import Image

    return Image.fromarray(pose)


def _previewer():
    """latents -> a small PIL preview, using ComfyUI's own SDXL latent->RGB factors inside the
    host (no previews outside it: nothing would show them)."""
    formats = comfy.module("comfy.latent_formats")
    if formats is None or not hasattr(formats, "SDXL"):
        return None
    import torch
    from PIL import Image

    fmt = formats.SDXL()
    factors = torch.tensor(fmt.latent_rgb_factors)
    bias = torch.tensor(getattr(fmt, "latent_rgb_factors_bias", None) or [0.0, 0.0, 0.0])

    def preview(latents):
        rgb = torch.einsum("chw,cr->hwr", latents[0].float().cpu(), factors) + bias
        return Image.fromarray(((rgb.clamp(-1, 1) + 1) * 127.5).byte().numpy())

    return preview
