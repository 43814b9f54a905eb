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
from . import families, ipadapter, libs, lora, prompt, schedulers, sdxl_file

log = logging.getLogger("PoseForge")
HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_DIR = os.path.join(HERE, "sdxl_config")
CONTROLNET_CONFIG_DIR = os.path.join(CONFIG_DIR, "controlnet")
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
    """The ControlNet Resident of `path` (a diffusers-key file or a diffusers folder)."""
    def load():
        families.check_controlnet(path)
        weights_file = families.controlnet_weights(path)
        folder = os.path.dirname(weights_file)
        config = folder if os.path.exists(os.path.join(folder, "config.json")) else CONTROLNET_CONFIG_DIR
        if weights_file.lower().endswith(weights.SAFETENSORS):
            return sdxl_file.controlnet(weights_file, families.read_json(os.path.join(config, "config.json")),
                                        torch_dtype(dtype_name))
        return libs.diffusers().ControlNetModel.from_single_file(weights_file, config=config, local_files_only=True,
                                                                 torch_dtype=torch_dtype(dtype_name),
                                                                 low_cpu_mem_usage=True)

    return residency.get(("controlnet", weights.identity(path), resolved(dtype_name)), load)


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


def evaluations(request):
    """How many times `generate` calls `step` per pose: the UNet evaluations of its scheduler."""
    config = component_config(request["ckpt"], "scheduler", "scheduler_config.json")
    return schedulers.evaluations(request["scheduler"], config, request["num_inference_steps"],
                                  request.get("denoise", 1.0))


def generate(request, step):
    """Run one SDXL job. request: the sampler's inputs (prompt, negative_prompt, width, height,
    num_inference_steps, guidance_scale, scheduler, seed, samples; for ControlNet runs
    controlnet_scale, control_start, control_end) and ckpt, controlnet (paths; controlnet None
    without poses), dtype, `poses` (HxWx3 uint8 maps at the output size, or absent), `loras`
    [(path, strength_model, strength_clip)] and `ip_adapter` (the engines/ipadapter handle plus
    the `adapter` path, the `encoder` (a path, or a CLIP_VISION ComfyUI loaded) and the adapter's
    `info` from local/ipadapter.check_pair, or None), `latent` (unscaled SDXL latents to start from, as a
    ComfyUI LATENT holds them, batch 1, `samples` or one per image; None: from an empty latent) and
    `denoise` (1: from noise; below 1: that much of the schedule, from the latent, as core's KSampler).
    `step(preview=None)` is called after every UNet evaluation (`evaluations(request)` times per pose).
    Returns (a list of HxWx3 float32 arrays in 0..1: per pose (or once without poses), `samples` images
    with seeds seed, seed+1, ...; their unscaled latents, (n, 4, h/8, w/8) float32 on the CPU)."""
    if request.get("core") is not None:
        from . import sdxl_core

        parts = sdxl_core.parts(request["core"])  # over the tensors ComfyUI just loaded, for this run
    else:
        parts = checkpoint(request["ckpt"], request["dtype"])
    dtype_name = request["dtype"] if request.get("core") is None else _name_of(parts["unet"].net.dtype)
    cn = controlnet(request["controlnet"], dtype_name) if request.get("controlnet") else None
    with residency.holding(*parts.values(), cn):  # an IP-Adapter or LoRA run changes them: one run at a time
        return _generate(request, step, parts, cn)


def _generate(request, step, parts, cn):
    import torch

    dev = device.torch_device()
    sched, call = schedulers.build(request["scheduler"], component_config(request["ckpt"], "scheduler",
                                                                          "scheduler_config.json"))
    nets = {name: r.net for name, r in parts.items()}
    pipe = _pipeline(nets, sched, cn.net if cn else None, dev)  # the LoRAs go in through it
    # it samples without the text encoders: it would cast our embeddings to their dtype, which on
    # the CPU (stored in 16 bits, see sdxl_file) is not the UNet's
    sampler = _pipeline(dict(nets, text_encoder=None, text_encoder_2=None), sched, cn.net if cn else None, dev,
                        img2img=request.get("denoise", 1.0) < 1.0)
    samples, guided = request["samples"], request["guidance_scale"] > 1.0
    ip = request.get("ip_adapter")
    adapter = ipadapter.adapter(ip["adapter"], parts["unet"]) if ip else None

    with lora.applied(pipe, request.get("loras") or []):
        encoders = (parts["text_encoder"], parts["text_encoder_2"])
        with torch.no_grad(), residency.phase(encoders, streamable=encoders, what="SDXL text encoders") as nets:
            embeds = prompt_embeds(pipe.tokenizer, pipe.tokenizer_2, nets, request["prompt"],
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
        poses = request.get("poses") or [None]
        latents = []

        def on_step(pipe_, i, t, kwargs):
            step(preview=preview(kwargs["latents"]) if preview else None)
            return kwargs

        reserve = activations(request, dtype, with_controlnet=cn is not None)
        with residency.phase([parts["unet"], cn, adapter], streamable=(parts["unet"], cn), reserve=reserve,
                             what="SDXL UNet" + (" + ControlNet" if cn else "")), \
                (ipadapter.installed(pipe, adapter.net, ipadapter.block_scales(pipe.unet, ip["mode"], ip["scale"]))
                 if ip else contextlib.nullcontext()), \
                text_masked((pipe.unet, cn.net if cn else None), text_mask):  # phase 2: UNet (+ ControlNet, IP-Adapter)
            for index, pose in enumerate(poses):
                first = request["seed"] + index * samples
                start = _start(request, parts["vae"].net.config, index, len(poses))
                if request.get("denoise", 1.0) <= 0.0:
                    latents.append(start)  # nothing to sample: the latent as it came
                    continue
                generators = [torch.Generator("cpu").manual_seed(first + k) for k in range(samples)]
                args = dict(embeds, **call, width=request["width"], height=request["height"],
                            num_inference_steps=request["num_inference_steps"],
                            guidance_scale=request["guidance_scale"], generator=generators,
                            num_images_per_prompt=samples, output_type="latent", callback_on_step_end=on_step)
                control = "image"
                if start is not None:  # img2img: the schedule KSampler would run at this denoise
                    length, strength = schedulers.partial(request["num_inference_steps"], request["denoise"])
                    args.update(image=start.to(dev, dtype), strength=strength, num_inference_steps=length)
                    control = "control_image"
                    if cn is None:
                        del args["width"], args["height"]  # the latent sets the size
                if cn is not None:
                    args.update({control: _pil(pose)}, controlnet_conditioning_scale=request["controlnet_scale"],
                                control_guidance_start=request["control_start"],
                                control_guidance_end=request["control_end"])
                latents.append(sampler(**args).images)

    vae, = residency.use(parts["vae"])  # phase 3: VAE, in fp32
    images = [img for batch in latents for img in decode(vae, batch)]
    return images, torch.cat([unscaled(vae.config, batch.float().cpu()) for batch in latents])


def _start(request, vae_config, index, poses):
    """The model-space latents pose `index` starts from (`samples` of them), or None from noise
    (denoise 1): the LATENT input's (1 for all, one per sample, or one per image) or an empty one."""
    import torch

    if request.get("denoise", 1.0) >= 1.0:
        return None
    samples, given = request["samples"], request.get("latent")
    if given is None:
        given = torch.zeros(1, 4, request["height"] // 8, request["width"] // 8)  # core's Empty Latent Image
    if given.shape[0] == samples * poses and poses > 1:
        given = given[index * samples:(index + 1) * samples]
    elif given.shape[0] == 1:
        given = given.expand(samples, -1, -1, -1)
    return scaled(vae_config, given.float())


def scaled(vae_config, latents):
    """Unscaled VAE latents (ComfyUI's LATENT) -> the UNet's latent space, as the pipelines do."""
    mean, std = _moments(vae_config, latents)
    if mean is None:
        return latents * vae_config.scaling_factor
    return (latents - mean) * vae_config.scaling_factor / std


def unscaled(vae_config, latents):
    """The UNet's latent space -> unscaled VAE latents (what the VAE decodes, ComfyUI's LATENT)."""
    mean, std = _moments(vae_config, latents)
    if mean is None:
        return latents / vae_config.scaling_factor
    return latents * std / vae_config.scaling_factor + mean


def _moments(vae_config, like):
    import torch

    mean, std = getattr(vae_config, "latents_mean", None), getattr(vae_config, "latents_std", None)
    if mean is None or std is None:
        return None, None
    return torch.tensor(mean).view(1, -1, 1, 1).to(like), torch.tensor(std).view(1, -1, 1, 1).to(like)


def activations(request, dtype, with_controlnet):
    """Bytes a sampling step needs beside the weights: ComfyUI's own estimate for SDXL (latent area
    x batch x dtype size x 0.01 x 0.8 MiB; twice the batch with guidance), a ControlNet adding as much."""
    import torch

    batch = request["samples"] * (2 if request["guidance_scale"] > 1.0 else 1)
    area = batch * (request["height"] // 8) * (request["width"] // 8)
    per = int(area * dtype.itemsize * 0.01 * 0.8 * 2 ** 20)
    return per * (2 if with_controlnet else 1)


def prompt_embeds(tokenizer, tokenizer_2, encoders, text, negative=None):
    """The pipeline's embedding arguments for `text` (and `negative`, None: no guidance), encoded as
    ComfyUI encodes a prompt (local/prompt.py)."""
    positive, pooled = prompt.encode((tokenizer, tokenizer_2), encoders, text)
    if negative is None:
        return {"prompt_embeds": positive, "pooled_prompt_embeds": pooled}
    against, against_pooled = prompt.encode((tokenizer, tokenizer_2), encoders, negative)
    positive, against, mask = prompt.same_length(positive, against)
    embeds = {"prompt_embeds": positive, "pooled_prompt_embeds": pooled, "negative_prompt_embeds": against,
              "negative_pooled_prompt_embeds": against_pooled}
    return dict(embeds, text_mask=mask) if mask is not None else embeds


@contextlib.contextmanager
def text_masked(modules, mask):
    """`mask` ([negative row, positive row], 1 keep / 0 padding, from prompt.same_length) given to every
    cross-attention layer of `modules` (the UNet, the ControlNet) while the block runs, as the additive
    attention mask diffusers' processors take; None: nothing."""
    if mask is None:
        yield
        return

    biases = {}  # (device, dtype, batch) -> the additive mask: made once, not in every layer at every step

    def hook(layer, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # [negatives..., positives...]
        key = (hidden.device, hidden.dtype, hidden.shape[0])
        if key not in biases:
            rows = mask.to(hidden.device, hidden.dtype).repeat_interleave(hidden.shape[0] // 2, 0)
            biases[key] = ((1 - rows) * -10000.0)[:, None, :]  # as the UNet turns its own mask into
        kwargs["attention_mask"] = biases[key]
        return args, kwargs

    layers = [m for net in modules if net is not None for m in net.modules() if getattr(m, "is_cross_attention", False)]
    handles = [layer.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


VAE_BYTES = 2178 * 64 * 4  # per latent pixel: ComfyUI's estimate of an SD VAE decode, in fp32
TILE = 64  # latent pixels a tile (512 px), overlapping by a quarter, as ComfyUI's tiled decode


def decode(vae, latents):
    """SDXL latents -> list of HxWx3 float32 arrays in 0..1 (VAE in its own dtype, fp32 here). As
    many images at once as the device's free memory holds by ComfyUI's estimate; tiled when one
    does not fit, or when a decode runs out of memory anyway (said in the log)."""
    dev = next(vae.parameters()).device
    per_image = VAE_BYTES * latents.shape[-2] * latents.shape[-1]
    free = residency.free_memory(dev)
    tiled = free is not None and per_image > free
    size = len(latents) if free is None else max(1, min(len(latents), free // per_image))
    if tiled:
        log.info("PoseForge: VAE decode tiled (%.2f GiB free on %s, %.2f GiB a whole image)", free / 2 ** 30,
                 dev, per_image / 2 ** 30)
    try:
        return device.halving(lambda chunk: _decoded(vae, chunk, tiled), list(latents), size, "VAE decode batch")
    except device.oom_errors():
        if tiled:
            raise
        log.warning("PoseForge: out of memory decoding a whole image: decoding it in tiles")
        device.empty_cache()
        return device.halving(lambda chunk: _decoded(vae, chunk, True), list(latents), 1, "VAE decode batch")


def _decoded(vae, chunk, tiled):
    import torch

    with torch.no_grad():
        z = unscaled(vae.config, torch.stack(chunk).to(next(vae.parameters()).device, torch.float32))
        if tiled:
            images = _tiled(vae, z.to(vae.dtype))
        else:
            images = vae.decode(z.to(vae.dtype)).sample
    images = ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    return list(images)


def _tiled(vae, z):
    """diffusers' tiled decode with tiles of TILE latent pixels (its default is the model's whole
    training size, 1024 px for SDXL: no saving at the sizes people use)."""
    saved = vae.tile_latent_min_size, vae.tile_sample_min_size, vae.tile_overlap_factor
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.tile_latent_min_size, vae.tile_sample_min_size, vae.tile_overlap_factor = TILE, TILE * scale, 0.25
    try:
        return vae.tiled_decode(z).sample
    finally:
        vae.tile_latent_min_size, vae.tile_sample_min_size, vae.tile_overlap_factor = saved


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
