"""Tiny random LoRAs for the tiny SDXL (tests/tiny_sdxl.py) in the layouts people have, and files
for other models: what PF_SDXLLoRA loads and what it must refuse.

- kohya / A1111: `lora_unet_<SGM module>` (input_blocks / middle_block / output_blocks),
  `lora_te1_text_model_*`, `lora_te2_text_model_*`, each `.lora_down.weight`, `.lora_up.weight`
  and `.alpha`, on the layers kohya's trainer targets (attention q/k/v/out, the feed-forward and
  proj_in/proj_out of every transformer block; q/k/v/out_proj and fc1/fc2 of the text encoders);
- diffusers / PEFT: `unet.<module>.lora_A.weight` / `lora_B.weight`, `text_encoder.*`, `text_encoder_2.*`;
- an SD1.5 LoRA (`lora_te_*`, cross-attention reading 768-wide text), a Flux LoRA, and a file
  that is no LoRA at all.
"""
import os

import torch

from tiny_sdxl import RESNET, _rename, unet_prefixes

RANK = 4
UNET_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out")
TE_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2")


def _linears(model, targets):
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.endswith(targets)]


def _pair(module, gen, scale):
    down = torch.randn(RANK, module.in_features, generator=gen) * scale
    up = torch.randn(module.out_features, RANK, generator=gen) * scale
    return down, up


def kohya(parts, seed=0, scale=0.1, locon=False):
    """A kohya-format LoRA (SGM UNet names) for `parts` (tiny_sdxl.build()); `locon`: LyCORIS LoCon,
    which also puts 3x3 LoRA convs on every ResNet block's two convolutions."""
    gen = torch.Generator().manual_seed(seed)
    pairs = unet_prefixes(parts["unet"].config)
    out = {}
    for name, module in parts["unet"].named_modules() if locon else ():
        if isinstance(module, torch.nn.Conv2d) and ".resnets." in name and name.endswith(("conv1", "conv2")):
            theirs, rest, _ = _rename(name + ".", pairs)
            key = "lora_unet_" + (theirs + dict(RESNET)[rest.rstrip(".")]).replace(".", "_")
            out[key + ".lora_down.weight"] = torch.randn(RANK, module.in_channels, 3, 3, generator=gen) * scale
            out[key + ".lora_up.weight"] = torch.randn(module.out_channels, RANK, 1, 1, generator=gen) * scale
            out[key + ".alpha"] = torch.tensor(float(RANK))
    for name, module in _linears(parts["unet"], UNET_TARGETS):
        theirs, rest, _ = _rename(name + ".", pairs)
        key = "lora_unet_" + (theirs + rest).rstrip(".").replace(".", "_")
        out[key + ".lora_down.weight"], out[key + ".lora_up.weight"] = _pair(module, gen, scale)
        out[key + ".alpha"] = torch.tensor(float(RANK))
    for prefix, encoder in (("lora_te1_", parts["text_encoder"]), ("lora_te2_", parts["text_encoder_2"])):
        for name, module in _linears(encoder, TE_TARGETS):
            key = prefix + "text_model_" + name.removeprefix("text_model.").replace(".", "_")
            out[key + ".lora_down.weight"], out[key + ".lora_up.weight"] = _pair(module, gen, scale)
            out[key + ".alpha"] = torch.tensor(float(RANK))
    return out


def diffusers_format(parts, seed=1, scale=0.1):
    """A diffusers / PEFT-format LoRA (what `save_lora_weights` writes) for `parts`."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for prefix, model, targets in (("unet.", parts["unet"], UNET_TARGETS),
                                   ("text_encoder.text_model.", parts["text_encoder"], TE_TARGETS),
                                   ("text_encoder_2.", parts["text_encoder_2"], TE_TARGETS)):
        for name, module in _linears(model, targets):
            down, up = _pair(module, gen, scale)
            out[f"{prefix}{name}.lora_A.weight"], out[f"{prefix}{name}.lora_B.weight"] = down, up
    return out


def sd15(seed=2):
    gen = torch.Generator().manual_seed(seed)
    return {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
            torch.randn(RANK, 768, generator=gen),
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight":
            torch.randn(320, RANK, generator=gen),
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.randn(RANK, 768, generator=gen),
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.randn(768, RANK, generator=gen)}


def flux(seed=3):
    gen = torch.Generator().manual_seed(seed)
    return {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.randn(RANK, 3072, generator=gen),
            "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.randn(9216, RANK, generator=gen)}


def save(models_root, parts):
    """Write the LoRAs into <models_root>/loras; returns their file names by kind."""
    from safetensors.torch import save_file

    folder = os.path.join(models_root, "loras")
    os.makedirs(folder, exist_ok=True)
    files = {"kohya": ("tiny-kohya.safetensors", kohya(parts)),
             "kohya_b": ("tiny-kohya-b.safetensors", kohya(parts, seed=7)),
             "locon": ("tiny-locon.safetensors", kohya(parts, seed=9, locon=True)),
             "diffusers": ("tiny-diffusers.safetensors", diffusers_format(parts)),
             "sd15": ("sd15-style.safetensors", sd15()), "flux": ("flux-style.safetensors", flux()),
             "not_lora": ("not-a-lora.safetensors", {"conv.weight": torch.zeros(4, 4, 3, 3)})}
    for name, tensors in files.values():
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(folder, name))
    return {kind: name for kind, (name, _) in files.items()}
