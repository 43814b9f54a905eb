"""Our SDXL sampler on the checkpoint core already loaded (PF_SDXLFromModel): diffusers modules
built over the very tensors ComfyUI holds, no second copy.

For a run, ComfyUI's memory manager loads the MODEL, CLIP and VAE it was given (with their weight
patches applied: core's LoraLoader, any node that adds weight patches), exactly as core's samplers
do. Then each network is built empty and given ComfyUI's tensors: the UNet and VAE state dicts
prefixed as a checkpoint names them and converted by diffusers' own key conversion (views: a key
renamed, a 1x1 conv reshaped), the two CLIP text models by their transformers keys, which ComfyUI
uses too. The diffusers configs come from the loaded networks themselves (ComfyUI's UNet config, the
CLIP shapes, head counts and activations), so any SDXL-layout model fits. The modules live for that
run only; ComfyUI stays the owner of the weights.

What cannot carry over is said, not silently dropped:
- patches on the MODEL's functions (attention replace/patches, model or CFG function wrappers,
  object patches such as a sampling override) act inside core's samplers only: logged, and the run
  goes on without them (PF_IPAdapter gives our sampler an image prompt);
- CLIP Set Last Layer: logged, our encoding uses SDXL's penultimate layer as core does by default;
- a network ComfyUI loads only partly (low VRAM): refused before sampling, naming PF_SDXLLoader,
  which streams what does not fit.
"""
import logging
import os

from ..host import comfy, residency
from . import families, libs, sdxl_file

log = logging.getLogger("PoseForge")
MODEL_OPTIONS = ("model_function_wrapper", "sampler_cfg_function", "sampler_post_cfg_function",
                 "sampler_pre_cfg_function", "denoise_mask_function")
UNET_PREFIX, VAE_PREFIX = "model.diffusion_model.", "first_stage_model."
VAE_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sdxl_config", "vae", "config.json")  # SDXL's


class CoreModelError(ValueError):
    pass


def handle(model, clip, vae):
    """What PF_SDXL carries for core's networks (checked to be SDXL-shaped, nothing loaded)."""
    config = getattr(getattr(getattr(model, "model", None), "model_config", None), "unet_config", None)
    if not isinstance(config, dict) or not config.get("adm_in_channels") or len(config.get("channel_mult", ())) < 2:
        raise CoreModelError("PF_SDXLFromModel takes an SDXL MODEL (core's Load Checkpoint on an SDXL file): this "
                             "MODEL is not one.")
    for name, value, attr in (("clip", clip, "cond_stage_model"), ("vae", vae, "first_stage_model")):
        if not hasattr(value, attr):
            raise CoreModelError(f"{name} must be core's {name.upper()} output (Load Checkpoint).")
    if not all(hasattr(clip.cond_stage_model, part) for part in ("clip_l", "clip_g")):
        raise CoreModelError("clip must be SDXL's two text encoders (CLIP-L and bigG) as core's loader gives them.")
    return {"model": model, "clip": clip, "vae": vae}


def not_carried(core):
    """Words for what the MODEL and CLIP have that our sampler cannot take."""
    model, clip = core["model"], core["clip"]
    found = []
    transformer = model.model_options.get("transformer_options", {})
    for kind in ("patches", "patches_replace"):
        names = sorted(f"{k}" for k, v in transformer.get(kind, {}).items() if v)
        if names:
            found.append(f"attention {kind.replace('_', ' ')} ({', '.join(names)})")
    found += [name for name in MODEL_OPTIONS if model.model_options.get(name)]
    patches = sorted(set(getattr(model, "object_patches", None) or ()) - {"model_sampling"})  # read by prediction()
    if patches:
        found.append(f"object patches ({', '.join(patches)})")
    if getattr(clip, "layer_idx", None) is not None:
        found.append(f"CLIP Set Last Layer ({clip.layer_idx})")
    return found


def prediction(core):
    """How the MODEL samples (local/schedulers.PREDICTIONS but auto), from its model sampling as core's
    samplers use it: the checkpoint's v_pred / ztsnr, or a ModelSamplingDiscrete node's choice."""
    sampling = core["model"].get_model_object("model_sampling")
    kinds = comfy.module("comfy.model_sampling")
    discrete = isinstance(sampling, kinds.ModelSamplingDiscrete) and isinstance(sampling, kinds.EPS)
    if not discrete or isinstance(sampling, (kinds.EDM, kinds.X0)):
        raise CoreModelError(f"this MODEL samples as {type(sampling).__name__}: PoseForge's sampler runs "
                             "epsilon and v-prediction SDXL models only; use core's KSampler for it.")
    if not isinstance(sampling, kinds.V_PREDICTION):
        return "eps"
    return "v_prediction_zsnr" if getattr(sampling, "zsnr", False) else "v_prediction"


def parts(core):
    """{text_encoder, text_encoder_2, unet, vae} Residents over ComfyUI's loaded tensors, for one run."""
    mm = comfy.module("comfy.model_management")
    model, clip, vae = core["model"], core["clip"], core["vae"]
    skipped = not_carried(core)
    if skipped:
        log.warning("PoseForge PF_SDXLFromModel: %s act only in core's samplers and do not carry over to "
                    "PoseForge's sampler; this run goes on without them.", "; ".join(skipped))
    patchers = [model, clip.patcher, vae.patcher]
    mm.load_models_gpu(patchers)  # as core's samplers: on the device, weight patches (LoRAs) applied
    for what, patcher in zip(("MODEL", "CLIP", "VAE"), patchers):
        if getattr(patcher.model, "model_lowvram", False) or patcher.loaded_size() < patcher.model_size():
            raise CoreModelError(
                f"ComfyUI holds the {what} only partly on the device (low VRAM): its offloaded weights are cast in "
                "as core's sampler runs, which PoseForge's sampler cannot share. Use PF_SDXLLoader with the "
                "checkpoint file instead (it streams what does not fit), or free memory.")
    unet = build_unet(model)
    te, te2 = build_text(clip, unet)
    nets = {"text_encoder": te, "text_encoder_2": te2, "unet": unet,
            "vae": build_vae(vae, model.model.latent_format.scale_factor)}
    return {name: residency.Resident(("core", name, id(net)), net.eval(), external=True) for name, net in nets.items()}


# -- configs from the loaded networks ---------------------------------------------------
def unet_config(config, time_embed):
    """diffusers' UNet2DConditionModel config for ComfyUI's SDXL-layout UNet config."""
    mult, base = config["channel_mult"], config["model_channels"]
    per = config["num_res_blocks"]
    per = per[0] if isinstance(per, (list, tuple)) else per
    depth = [config["transformer_depth"][level * per] for level in range(len(mult))]
    middle = config.get("transformer_depth_middle", depth[-1])
    if middle != depth[-1]:
        raise CoreModelError(f"this UNet's middle block has {middle} transformer layers and its last level "
                             f"{depth[-1]}: diffusers' SDXL UNet has them equal.")
    channels = [base * m for m in mult]
    per_head = config.get("num_head_channels", -1)
    heads = [c // per_head if per_head and per_head > 0 else config["num_heads"] for c in channels]
    return {"sample_size": 128, "in_channels": config["in_channels"], "out_channels": config["out_channels"],
            "block_out_channels": channels, "layers_per_block": per,
            "down_block_types": ["CrossAttnDownBlock2D" if d else "DownBlock2D" for d in depth],
            "up_block_types": ["CrossAttnUpBlock2D" if d else "UpBlock2D" for d in reversed(depth)],
            "transformer_layers_per_block": [max(d, 1) for d in depth], "attention_head_dim": heads,
            "cross_attention_dim": config["context_dim"], "use_linear_projection": config["use_linear_in_transformer"],
            "addition_embed_type": "text_time", "addition_time_embed_dim": time_embed,
            "projection_class_embeddings_input_dim": config["adm_in_channels"], "norm_num_groups": 32}


def text_config(part):
    """transformers' CLIPTextConfig kwargs for one of ComfyUI's CLIP text models (clip_l / clip_g)."""
    clip_model = comfy.module("comfy.clip_model")
    text = part.transformer.text_model
    layer = text.encoder.layers[0]
    acts = {id(fn): name for name, fn in clip_model.ACTIVATIONS.items()}
    act = acts.get(id(layer.mlp.activation))
    if act is None:
        raise CoreModelError("this CLIP text model uses an activation PoseForge does not know")
    embed = text.embeddings
    return {"hidden_size": embed.token_embedding.weight.shape[1], "vocab_size": embed.token_embedding.weight.shape[0],
            "max_position_embeddings": embed.position_embedding.weight.shape[0],
            "intermediate_size": layer.mlp.fc1.weight.shape[0], "num_hidden_layers": len(text.encoder.layers),
            "num_attention_heads": layer.self_attn.heads, "hidden_act": act, "layer_norm_eps": 1e-5,
            "projection_dim": part.transformer.text_projection.weight.shape[0],
            "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1}


# -- the modules, over ComfyUI's tensors -------------------------------------------------
def over(model, converted, what):
    """`model` (built empty) given the tensors of `converted` ({its key: a view of ComfyUI's tensor})
    as they are: same storage, no copy."""
    state = {key: value for key, (_, value) in
             sdxl_file.matched(model, converted, f"the {what} ComfyUI loaded", CoreModelError).items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model


def build_unet(model):
    diffusers = libs.diffusers()
    from diffusers.loaders import single_file_utils as su

    base = model.model
    config = unet_config(base.model_config.unet_config, base.embedder.dim)
    net = sdxl_file.empty(lambda: diffusers.UNet2DConditionModel.from_config(config))
    sd = {UNET_PREFIX + k: v for k, v in base.diffusion_model.state_dict().items()}
    over(net, su.convert_ldm_unet_checkpoint(sd, net.config), "MODEL")
    cast = getattr(base, "manual_cast_dtype", None)
    if cast is not None:  # stored narrower than ComfyUI computes: cast block by block as it runs
        net.pf_compute_dtype = cast
    return net


def build_text(clip, unet):
    """(CLIP-L, bigG with projection) transformers models over ComfyUI's text encoder tensors; stored in
    16 bits (ComfyUI's choice on the CPU), they compute in the UNet's dtype, cast block by block."""
    import torch

    transformers = libs.transformers()
    models = []
    for part, cls in (("clip_l", transformers.CLIPTextModel), ("clip_g", transformers.CLIPTextModelWithProjection)):
        theirs = getattr(clip.cond_stage_model, part)
        config = transformers.CLIPTextConfig(**text_config(theirs))
        net = sdxl_file.empty(lambda: cls(config))
        prefix = "transformer."
        sd = {k[len(prefix):]: v for k, v in theirs.state_dict().items() if k.startswith(prefix)}
        over(net, sdxl_file.unwrapped(net, sd), "CLIP")
        stored = next(net.parameters()).dtype
        if stored in (torch.float16, torch.bfloat16) and unet.dtype.itemsize > stored.itemsize:
            net.pf_compute_dtype = unet.dtype
        models.append(net)
    return tuple(models)


def build_vae(vae, scale_factor):
    diffusers = libs.diffusers()
    from diffusers.loaders import single_file_utils as su

    theirs = vae.first_stage_model
    config = dict(families.read_json(VAE_CONFIG), scaling_factor=scale_factor,
                  latent_channels=theirs.state_dict()["decoder.conv_in.weight"].shape[1])
    net = sdxl_file.empty(lambda: diffusers.AutoencoderKL.from_config(config))
    sd = {VAE_PREFIX + k: v for k, v in theirs.state_dict().items()}
    return over(net, su.convert_ldm_vae_checkpoint(sd, net.config), "VAE")
