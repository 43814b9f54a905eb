"""A tiny random-weight SDXL written as a real LDM/SGM single file, and a tiny SDXL
ControlNet written as a diffusers-key file in an xinsir-style folder.

The configs follow shared/reference/model-formats.md section 5: two text encoders of
different widths (diffusers tells CLIP-L from bigG by width), cross_attention_dim =
their sum, a 4-level VAE (the ControlNet hint embedder downsamples by 8), the real
49408-token CLIP vocabulary. The second encoder's projection is square, as bigG's is
(ComfyUI's CLIP builds it square): the UNet's added embedding takes 6 x 8 + 48. The diffusers -> LDM conversion below is ours and
depth-aware; loading the file back through diffusers and comparing every tensor
(tests/test_sdxl.py) proves it.
"""
import json
import os
import shutil

import torch

PACK_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "local", "sdxl_config")


def build():
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=96,
        cross_attention_dim=80)
    vae = AutoencoderKL(block_out_channels=[8, 8, 8, 8], norm_num_groups=4, in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        latent_channels=4, sample_size=64)
    common = dict(intermediate_size=37, num_attention_heads=4, num_hidden_layers=5, vocab_size=49408,
                  bos_token_id=49406, eos_token_id=49407, pad_token_id=1, projection_dim=32)
    te = CLIPTextModel(CLIPTextConfig(hidden_size=32, hidden_act="quick_gelu", **common))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=48, hidden_act="gelu", **dict(common, projection_dim=48)))
    controlnet = ControlNetModel.from_unet(unet)
    with torch.no_grad():  # from_unet zero-initialises the zero convs (and the hint's last conv): no effect at all
        for param in controlnet.parameters():
            if not param.any():
                param.normal_(0.0, 0.5)
    return {"unet": unet, "vae": vae, "text_encoder": te, "text_encoder_2": te2, "controlnet": controlnet}


# -- diffusers -> LDM/SGM keys -------------------------------------------------
RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
          ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
UNET_TOP = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
            ("add_embedding.linear_1.", "label_emb.0.0."), ("add_embedding.linear_2.", "label_emb.0.2."),
            ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2.")]


def unet_prefixes(config):
    """[(diffusers prefix, LDM prefix)] for a UNet of any depth."""
    levels, n = len(config.block_out_channels), config.layers_per_block
    pairs = list(UNET_TOP)
    for i in range(levels):
        for j in range(n):
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{(n + 1) * i + j + 1}.0."))
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{(n + 1) * i + j + 1}.1."))
        if i < levels - 1:
            pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(n + 1) * (i + 1)}.0.op."))
        has_attention = "CrossAttn" in config.up_block_types[i]
        for j in range(n + 1):
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{(n + 1) * i + j}.0."))
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{(n + 1) * i + j}.1."))
        if i < levels - 1:
            pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{(n + 1) * i + n}.{2 if has_attention else 1}."))
    pairs += [("mid_block.resnets.0.", "middle_block.0."), ("mid_block.attentions.0.", "middle_block.1."),
              ("mid_block.resnets.1.", "middle_block.2.")]
    return pairs


def _rename(key, pairs):
    """(LDM prefix, rest of the key, diffusers prefix) for the longest matching prefix."""
    ours, theirs = max((p for p in pairs if key.startswith(p[0])), key=lambda p: len(p[0]))
    return theirs, key[len(ours):], ours


def unet_to_ldm(unet):
    pairs, resnet = unet_prefixes(unet.config), dict(RESNET)
    out = {}
    for key, value in unet.state_dict().items():
        theirs, rest, ours = _rename(key, pairs)
        if ".resnets." in ours:
            head, _, tail = rest.partition(".")
            rest = resnet.get(head, head) + "." + tail
        out["model.diffusion_model." + theirs + rest] = value
    return out


def vae_to_ldm(vae):
    levels = len(vae.config.block_out_channels)
    pairs = [("encoder.mid_block.attentions.0.", "encoder.mid.attn_1."),
             ("decoder.mid_block.attentions.0.", "decoder.mid.attn_1."),
             ("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for part in ("encoder", "decoder"):
        pairs += [(f"{part}.mid_block.resnets.{i}.", f"{part}.mid.block_{i + 1}.") for i in range(2)]
    for i in range(levels):
        pairs += [(f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.") for j in range(2)]
        pairs += [(f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{levels - 1 - i}.block.{j}.") for j in range(3)]
        if i < levels - 1:
            pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
            pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample."))
    attention = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")]
    out = {}
    for key, value in vae.state_dict().items():
        new = key
        if not key.startswith(("quant_conv", "post_quant_conv", "encoder.conv_in", "encoder.conv_out",
                               "decoder.conv_in", "decoder.conv_out")):
            theirs, rest, _ = _rename(key, pairs)
            new = theirs + rest
        new = new.replace("conv_shortcut", "nin_shortcut")
        if ".mid.attn_1." in new:
            for a, b in attention:
                new = new.replace(".attn_1." + a, ".attn_1." + b)
            if value.ndim == 2:
                value = value[:, :, None, None]  # LDM attention uses 1x1 convs
        out["first_stage_model." + new] = value
    return out


def clip_l_to_ldm(te):
    out = {}
    for key, value in te.state_dict().items():
        key = key if key.startswith("text_model.") else "text_model." + key
        out["conditioner.embedders.0.transformer." + key] = value
    return out


def open_clip_to_ldm(te2):
    """CLIPTextModelWithProjection -> OpenCLIP layout (packed q/k/v, x @ text_projection)."""
    sd = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in te2.state_dict().items()}
    p = "conditioner.embedders.1.model."
    out = {p + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
           p + "positional_embedding": sd["embeddings.position_embedding.weight"],
           p + "ln_final.weight": sd["final_layer_norm.weight"], p + "ln_final.bias": sd["final_layer_norm.bias"],
           p + "text_projection": sd["text_projection.weight"].T.contiguous()}
    for i in range(te2.config.num_hidden_layers):
        src, dst = f"encoder.layers.{i}.", f"{p}transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[dst + f"attn.in_proj_{part}"] = torch.cat([sd[src + f"self_attn.{x}_proj.{part}"] for x in "qkv"])
            out[dst + f"attn.out_proj.{part}"] = sd[src + f"self_attn.out_proj.{part}"]
            out[dst + f"ln_1.{part}"] = sd[src + f"layer_norm1.{part}"]
            out[dst + f"ln_2.{part}"] = sd[src + f"layer_norm2.{part}"]
            out[dst + f"mlp.c_fc.{part}"] = sd[src + f"mlp.fc1.{part}"]
            out[dst + f"mlp.c_proj.{part}"] = sd[src + f"mlp.fc2.{part}"]
    return out


def save(models_root, name="tiny_sdxl.safetensors", cn_folder="tiny-openpose-sdxl"):
    """Write the checkpoint (+ its `<name>.config/` beside it) and the ControlNet folder;
    returns (models, checkpoint path, controlnet folder)."""
    from safetensors.torch import save_file

    parts = build()
    ckpt_dir = os.path.join(models_root, "checkpoints")
    os.makedirs(ckpt_dir, exist_ok=True)
    sd = {**unet_to_ldm(parts["unet"]), **vae_to_ldm(parts["vae"]), **clip_l_to_ldm(parts["text_encoder"]),
          **open_clip_to_ldm(parts["text_encoder_2"])}
    path = os.path.join(ckpt_dir, name)
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    config = os.path.splitext(path)[0] + ".config"
    shutil.copytree(PACK_CONFIG, config, ignore=shutil.ignore_patterns("controlnet", "tokenizer*"),
                    dirs_exist_ok=True)
    for part in ("unet", "vae"):
        parts[part].save_config(os.path.join(config, part))
    for part in ("text_encoder", "text_encoder_2"):
        parts[part].config.save_pretrained(os.path.join(config, part))
    cn_dir = os.path.join(models_root, "controlnet", cn_folder)
    parts["controlnet"].save_pretrained(cn_dir, safe_serialization=True)
    return parts, path, cn_dir


def save_core(models_root, parts, name="tiny_sdxl_core.safetensors"):
    """The same tiny UNet and text encoders (stored in fp16, as the real file) with a VAE of SD's own architecture (ComfyUI builds every SD
    VAE at 128 channels x [1, 2, 4, 4], random weights here), so that core's CheckpointLoaderSimple loads
    the file once tests/tiny_comfy has taught ComfyUI the tiny sizes; returns (its VAE, the path)."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    torch.manual_seed(1)
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], norm_num_groups=32, in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                        latent_channels=4, sample_size=64, layers_per_block=2, scaling_factor=0.13025)
    text = {**clip_l_to_ldm(parts["text_encoder"]), **open_clip_to_ldm(parts["text_encoder_2"])}
    sd = {**unet_to_ldm(parts["unet"]), **vae_to_ldm(vae),
          **{k: v.half() if v.is_floating_point() else v for k, v in text.items()}}  # as SDXL files store them
    path = os.path.join(models_root, "checkpoints", name)
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    config = os.path.splitext(path)[0] + ".config"
    shutil.copytree(os.path.join(models_root, "checkpoints", "tiny_sdxl.config"), config, dirs_exist_ok=True)
    vae.save_config(os.path.join(config, "vae"))
    return vae, path


def controlnet_to_ldm(controlnet, hint_blocks):
    """A diffusers ControlNetModel -> the original ControlNet layout (input_blocks, input_hint_block,
    zero_convs, middle_block_out), which ComfyUI's ControlNet loader detects by model (tests/tiny_comfy)."""
    import types

    config = controlnet.config
    shape = types.SimpleNamespace(block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
                                  up_block_types=["UpBlock2D"] * len(config.block_out_channels))  # no up blocks
    pairs, resnet = unet_prefixes(shape), dict(RESNET)
    pairs = [p for p in pairs if not p[0].startswith(("up_blocks", "conv_norm_out", "conv_out"))]
    extra = [("controlnet_cond_embedding.conv_in.", "input_hint_block.0."),
             ("controlnet_cond_embedding.conv_out.", f"input_hint_block.{2 * (hint_blocks + 1)}."),
             ("controlnet_mid_block.", "middle_block_out.0.")]
    extra += [(f"controlnet_cond_embedding.blocks.{i}.", f"input_hint_block.{2 * (i + 1)}.") for i in range(hint_blocks)]
    extra += [(f"controlnet_down_blocks.{i}.", f"zero_convs.{i}.0.") for i in range(len(controlnet.controlnet_down_blocks))]
    out = {}
    for key, value in controlnet.state_dict().items():
        theirs, rest, ours = _rename(key, pairs + extra)
        if ".resnets." in ours:
            head, _, tail = rest.partition(".")
            rest = resnet.get(head, head) + "." + tail
        out[theirs + rest] = value.contiguous()
    return out


def save_core_controlnet(models_root, parts, name="tiny-openpose-sdxl-ldm.safetensors"):
    """The tiny ControlNet in the original layout (what core's ControlNetLoader reads), in controlnet/."""
    from safetensors.torch import save_file

    cn = parts["controlnet"]
    path = os.path.join(models_root, "controlnet", name)
    save_file(controlnet_to_ldm(cn, len(cn.controlnet_cond_embedding.blocks)), path)
    return path


def _randomized(net, seed):
    """`net` with every all-zero tensor (zero convs, the union's zero projections) drawn at random: a ControlNet
    that does nothing tests nothing."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            if not param.any():
                param.normal_(0.0, 0.5)
    return net


def save_controlnets(models_root, parts):
    """More ControlNets for the tiny SDXL, as users have them: a second plain one (a 'depth' ControlNet, its
    own random weights, in a diffusers folder), and xinsir's union layout - a folder with a config.json
    that says 6 control types, the union file, and the ProMax file of 8 types beside it (the real ProMax
    shares the union's config). Returns {name: (module, path)} with paths relative to controlnet/."""
    from diffusers import ControlNetModel, ControlNetUnionModel
    from safetensors.torch import save_file

    folder = os.path.join(models_root, "controlnet")
    config = {k: v for k, v in parts["controlnet"].config.items() if not k.startswith("_")}
    torch.manual_seed(5)
    depth = _randomized(ControlNetModel.from_config(config), 5)
    depth.save_pretrained(os.path.join(folder, "tiny-depth-sdxl"), safe_serialization=True)
    out = {"depth": (depth, "tiny-depth-sdxl/diffusion_pytorch_model.safetensors")}
    union_dir = os.path.join(folder, "tiny-union-sdxl")
    union_config = dict(config, num_trans_channel=32, num_trans_head=4, num_trans_layer=1, num_proj_channel=32)
    for name, types, file in (("union", 6, "diffusion_pytorch_model.safetensors"),
                              ("promax", 8, "diffusion_pytorch_model_promax.safetensors")):
        torch.manual_seed(types)
        net = _randomized(ControlNetUnionModel(**{k: v for k, v in union_config.items() if k != "mid_block_type"},
                                               num_control_type=types), types)
        if name == "union":  # config.json: 6 control types, and no union class name (told apart by content)
            net.save_pretrained(union_dir, safe_serialization=True)
            with open(os.path.join(union_dir, "config.json"), encoding="utf-8") as f:
                written = json.load(f)
            with open(os.path.join(union_dir, "config.json"), "w", encoding="utf-8") as f:
                json.dump(dict(written, _class_name="ControlNetModel"), f)
        else:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, os.path.join(union_dir, file))
        out[name] = (net, f"tiny-union-sdxl/{file}")
    return out


def save_vpred(models_root, parts, name="tiny_vpred.safetensors"):
    """The tiny SDXL as a v-prediction, zero-terminal-SNR single file: NoobAI-XL's marker keys `v_pred` and
    `ztsnr` (empty tensors) beside the same weights; returns its path."""
    from safetensors.torch import save_file

    sd = {**unet_to_ldm(parts["unet"]), **vae_to_ldm(parts["vae"]), **clip_l_to_ldm(parts["text_encoder"]),
          **open_clip_to_ldm(parts["text_encoder_2"]), "v_pred": torch.tensor([]), "ztsnr": torch.tensor([])}
    path = os.path.join(models_root, "checkpoints", name)
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    shutil.copytree(os.path.join(models_root, "checkpoints", "tiny_sdxl.config"), os.path.splitext(path)[0] + ".config",
                    dirs_exist_ok=True)
    return path
