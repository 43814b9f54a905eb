"""Tiny random-weight CLIP vision encoders and IP-Adapter files in the real layouts.

Encoders (transformers keys, as ComfyUI's clip_vision files hold them):
- `tiny-vit-h/model.safetensors` + config.json (h94's image_encoder folder layout):
  hidden 32, image_embeds 24 - stands in for ViT-H-14;
- `tiny-bigg/model.safetensors` + config.json: hidden 40, image_embeds 32 - for bigG;
- `tiny-vit-b.safetensors`, a single file with no config, 768 wide (a width whose head
  count PoseForge knows, so its config comes from the shapes) and with position_ids.

Adapters (h94's original layout, keys numbered 1, 3, 5, ... over the UNet's attention
processors in order, cross-attention only, model-formats.md 2.1):
- `tiny-base_vit-h.safetensors`: ImageProjModel reading the vit-h image_embeds (24);
- `tiny-plus_vit-h.bin`: Resampler (depth 4, dim_head 64, 16 queries) reading the vit-h
  hidden states (32), saved as {"image_proj": ..., "ip_adapter": ...};
- `tiny-base_bigg.safetensors`: ImageProjModel reading the bigG image_embeds (32).
"""
import json
import os

import torch

TOKENS = 4
QUERIES = 16
RESAMPLER_DIM = 128  # 2 heads of 64: diffusers derives heads = to_q.out // 64


def encoder(hidden, embeds, layers=2, heads=4, intermediate=37, seed=0):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                              num_attention_heads=heads, patch_size=8, image_size=32, projection_dim=embeds,
                              hidden_act="gelu", layer_norm_eps=1e-5)
    return CLIPVisionModelWithProjection(config).eval()


def cross_layers(unet):
    """[(number, hidden)] of the IP-Adapter keys for `unet`, as the reference numbers them."""
    out, number = [], 0  # index in the list of all processors: attn1 even, attn2 odd
    channels = unet.config.block_out_channels
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            number += 1
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name.split(".")[1])]
        else:
            hidden = channels[int(name.split(".")[1])]
        out.append((number, hidden))
        number += 1
    return out


def _norm(n, g):
    return {"weight": 1 + 0.1 * torch.randn(n, generator=g), "bias": 0.1 * torch.randn(n, generator=g)}


def ip_layers(unet, g, std=0.3):
    cross = unet.config.cross_attention_dim
    return {f"{n}.{kv}.weight": std * torch.randn(hidden, cross, generator=g)
            for n, hidden in cross_layers(unet) for kv in ("to_k_ip", "to_v_ip")}


def base_proj(width, cross, g):
    proj = {"proj.weight": 0.2 * torch.randn(TOKENS * cross, width, generator=g),
            "proj.bias": 0.1 * torch.randn(TOKENS * cross, generator=g)}
    proj.update({f"norm.{k}": v for k, v in _norm(cross, g).items()})
    return proj


def resampler(width, cross, g, dim=RESAMPLER_DIM, depth=4):
    def w(*shape):
        return torch.randn(*shape, generator=g) / shape[-1] ** 0.5

    proj = {"latents": torch.randn(1, QUERIES, dim, generator=g) / dim ** 0.5,
            "proj_in.weight": w(dim, width), "proj_in.bias": 0.1 * torch.randn(dim, generator=g),
            "proj_out.weight": w(cross, dim), "proj_out.bias": 0.1 * torch.randn(cross, generator=g)}
    proj.update({f"norm_out.{k}": v for k, v in _norm(cross, g).items()})
    for i in range(depth):
        for norm in ("norm1", "norm2"):
            proj.update({f"layers.{i}.0.{norm}.{k}": v for k, v in _norm(dim, g).items()})
        proj.update({f"layers.{i}.0.to_q.weight": w(dim, dim), f"layers.{i}.0.to_kv.weight": w(2 * dim, dim),
                     f"layers.{i}.0.to_out.weight": w(dim, dim), f"layers.{i}.1.1.weight": w(4 * dim, dim),
                     f"layers.{i}.1.3.weight": w(dim, 4 * dim)})
        proj.update({f"layers.{i}.1.0.{k}": v for k, v in _norm(dim, g).items()})
    return proj


def _save_encoder(model, folder, name, with_config=True, position_ids=False):
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if position_ids:
        state["vision_model.embeddings.position_ids"] = torch.arange(17).unsqueeze(0)
    path = os.path.join(folder, name)
    save_file(state, path)
    if with_config:
        config = model.config.to_dict()
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config, f)
    return path


def save(models_root, unet):
    """Write the encoders and adapters under models_root; returns {name: (path, model or None)}."""
    from safetensors.torch import save_file

    vision = os.path.join(models_root, "clip_vision")
    ipa = os.path.join(models_root, "ipadapter")
    os.makedirs(ipa, exist_ok=True)
    out = {}
    for name, hidden, embeds, seed in (("tiny-vit-h", 32, 24, 1), ("tiny-bigg", 40, 32, 2)):
        model = encoder(hidden, embeds, seed=seed)
        out[name] = (_save_encoder(model, os.path.join(vision, name), "model.safetensors"), model)
    vit_b = encoder(768, 24, layers=1, heads=12, intermediate=64, seed=3)
    out["tiny-vit-b"] = (_save_encoder(vit_b, vision, "tiny-vit-b.safetensors", with_config=False,
                                       position_ids=True), vit_b)

    g = torch.Generator().manual_seed(4)
    cross = unet.config.cross_attention_dim
    flat = {}
    for name, proj in (("tiny-base_vit-h.safetensors", base_proj(24, cross, g)),
                       ("tiny-base_bigg.safetensors", base_proj(32, cross, g))):
        flat = {**{f"image_proj.{k}": v for k, v in proj.items()},
                **{f"ip_adapter.{k}": v for k, v in ip_layers(unet, g).items()}}
        save_file(flat, os.path.join(ipa, name))
        out[name] = (os.path.join(ipa, name), None)
    plus = {"image_proj": resampler(32, cross, g), "ip_adapter": ip_layers(unet, g)}
    torch.save(plus, os.path.join(ipa, "tiny-plus_vit-h.bin"))
    out["tiny-plus_vit-h.bin"] = (os.path.join(ipa, "tiny-plus_vit-h.bin"), None)
    return out
