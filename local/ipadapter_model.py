"""IP-Adapter on ComfyUI's own MODEL: PF_IPAdapterApply patches the cross-attention of a clone of
core's ModelPatcher (`set_model_attn2_replace`, the model-patch API ComfyUI's own model patches use),
so core's KSampler, SamplerCustomAdvanced and every sampler pack sample with the image prompt.

Each cross-attention layer computes ComfyUI's own attention (`optimized_attention`, the one the
user's flags chose) and adds, per adapter, `scale x attention(q, to_k_ip(tokens), to_v_ip(tokens))`
- what diffusers' IPAdapterAttnProcessor2_0 adds - before the layer's output projection, which
ComfyUI applies. The tokens are the adapter's image projection of the reference embeddings
(local/ipadapter.py: files told apart by content, the encoder pair checked, several images averaged
or concatenated, a negative image for the unconditional half), worked out once when the node runs.

- `start_at` / `end_at`: fractions of the run turned into sigmas by the model's own sampling (as
  core's ControlNet), the patch acting while start's sigma >= sigma >= end's;
- `attn_mask`: a ComfyUI MASK, resized to each attention resolution, multiplies the adapter's term,
  so the reference acts in that region only;
- several PF_IPAdapterApply on one MODEL chain: one patch per layer holds every adapter; a replace
  patch another pack set first is kept and called for the base attention.

The adapter's per-layer key/value weights and image projection are a Resident
(host/residency.py), given to the clone as an additional model: ComfyUI loads them with the UNet
for sampling and unloads them with it. The MODEL that came in is never changed: the patch lives on
the clone only.
"""
import functools
import math
import os
import threading

from ..host import comfy, residency, weights
from . import ipadapter


class PatchError(ValueError):
    pass


# -- which layers, in which order -------------------------------------------------
def layers(unet_config):
    """[(ComfyUI's attn2 patch key (block name, block id, transformer index), diffusers' layer name)] of
    every cross-attention layer in the order IP-Adapter files number them (diffusers' attention
    processors: down blocks, up blocks, middle), from ComfyUI's UNet config."""
    per = unet_config["num_res_blocks"]
    per = per if isinstance(per, (list, tuple)) else [per] * len(unet_config["channel_mult"])
    depth_in = list(unet_config["transformer_depth"])
    depth_out = list(reversed(unet_config["transformer_depth_output"]))  # ComfyUI pops them from the end
    middle = unet_config.get("transformer_depth_middle")
    found, block, index = [], 1, 0
    for level, count in enumerate(per):
        for j in range(count):
            found += [(("input", block, k), f"down_blocks.{level}.attentions.{j}.transformer_blocks.{k}.attn2")
                      for k in range(depth_in[index])]
            block, index = block + 1, index + 1
        block += 1 if level < len(per) - 1 else 0  # the downsampler
    block = 0
    for level, count in enumerate(reversed(per)):
        for j in range(count + 1):
            found += [(("output", block, k), f"up_blocks.{level}.attentions.{j}.transformer_blocks.{k}.attn2")
                      for k in range(depth_out[block])]
            block += 1
    if middle is not None and middle >= 0:
        found += [(("middle", 0, k), f"mid_block.attentions.0.transformer_blocks.{k}.attn2") for k in range(middle)]
    return found


def layer_scales(names, mode, scale):
    """{diffusers layer name: scale} for `mode`, the same layers local/ipadapter.block_scales picks on a
    diffusers UNet: every layer (standard), or InstantStyle's one attention (style: the second of the
    first up block with attention; composition: the second of the deepest down block with attention)."""
    if mode == "standard":
        return {n: float(scale) for n in names}
    side = "up_blocks" if mode == "style" else "down_blocks"
    levels = sorted({int(n.split(".")[1]) for n in names if n.startswith(side + ".")})
    level = levels[0] if mode == "style" else levels[-1]
    attentions = sorted({int(n.split(".")[3]) for n in names if n.startswith(f"{side}.{level}.")})
    chosen = f"{side}.{level}.attentions.{attentions[min(1, len(attentions) - 1)]}."
    return {n: float(scale) if n.startswith(chosen) else 0.0 for n in names}


# -- the adapter's weights, a Resident -----------------------------------------------
@functools.lru_cache(maxsize=1)
def _weights_class():
    import torch

    class IPAdapterLayers(torch.nn.Module):
        """An IP-Adapter's image projection and, per cross-attention layer, its to_k_ip / to_v_ip."""

        def __init__(self, image_proj, keys, values):
            super().__init__()
            self.image_proj = image_proj
            self.to_k_ip = torch.nn.ParameterList(keys)
            self.to_v_ip = torch.nn.ParameterList(values)

    return IPAdapterLayers


def adapter_weights(path, dtype):
    """The Resident of an adapter file's weights in `dtype` (image projection by diffusers' own conversion)."""
    def load():
        import torch

        unet_class = ipadapter.libs.diffusers().UNet2DConditionModel
        state = ipadapter.split(weights.load(path))
        proj = unet_class._convert_ip_adapter_image_proj_to_diffusers(None, state["image_proj"],
                                                                      low_cpu_mem_usage=False)
        count = sum(1 for k in state["ip_adapter"] if k.endswith(".to_k_ip.weight"))
        keys = [torch.nn.Parameter(state["ip_adapter"][f"{2 * i + 1}.to_k_ip.weight"], requires_grad=False)
                for i in range(count)]
        values = [torch.nn.Parameter(state["ip_adapter"][f"{2 * i + 1}.to_v_ip.weight"], requires_grad=False)
                  for i in range(count)]
        return _weights_class()(proj, keys, values).to(dtype)

    return residency.get(("ipadapter_layers", weights.identity(path), str(dtype)), load)


# -- the patch ------------------------------------------------------------------------
class Reference:
    """One adapter on one MODEL: its weights Resident, its tokens ([unconditional, conditional], each
    (1, tokens, width), float32 on the CPU), per-layer scales, the sigma range and the mask."""

    def __init__(self, resident, tokens, scales, sigma_start, sigma_end, mask):
        self.resident, self.tokens, self.scales = resident, tokens, scales
        self.sigma_start, self.sigma_end, self.mask = sigma_start, sigma_end, mask
        self._placed = {}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):  # ModelPatcher.clone deep-copies model_options: shared, never changed
        return self

    def placed(self, dev, dtype):
        """The tokens on `dev` in `dtype` (moved once per device and dtype)."""
        key = (str(dev), dtype)
        with self._lock:
            if key not in self._placed:
                self._placed[key] = self.tokens.to(dev, dtype)
            return self._placed[key]

    def acts(self, extra_options):
        sigmas = extra_options.get("sigmas")
        if sigmas is None:
            return True
        sigma = float(sigmas.detach().flatten()[0])
        return self.sigma_end <= sigma <= self.sigma_start


class Attn2Patch:
    """ComfyUI's attn2 replace patch for one layer: the base attention (ComfyUI's, or the patch that was
    there before) plus each reference's term. Called as patch(q, k, v, extra_options)."""

    def __init__(self, layer, references, previous=None):
        self.layer, self.references, self.previous = layer, list(references), previous

    def __deepcopy__(self, memo):  # as Reference: a new patch is made for a change (with_reference)
        return self

    def with_reference(self, reference):
        return Attn2Patch(self.layer, self.references + [reference], self.previous)

    def __call__(self, q, k, v, extra_options):
        attention = comfy.module("comfy.ldm.modules.attention").optimized_attention
        heads = extra_options["n_heads"]
        precision = extra_options.get("attn_precision")
        if self.previous is not None:
            out = self.previous(q, k, v, extra_options)
        else:
            out = attention(q, k, v, heads, attn_precision=precision)
        for ref in self.references:
            scale = ref.scales[self.layer]
            if scale == 0.0 or not ref.acts(extra_options):
                continue
            tokens = _batch(ref.placed(q.device, q.dtype), extra_options.get("cond_or_uncond") or [0], q.shape[0])
            net = ref.resident.net
            key_w = net.to_k_ip[self.layer].to(q.device, q.dtype)
            value_w = net.to_v_ip[self.layer].to(q.device, q.dtype)
            term = attention(q, tokens @ key_w.T, tokens @ value_w.T, heads, attn_precision=precision)
            if ref.mask is not None:
                term = term * _mask_at(ref.mask, q.shape[1], extra_options.get("original_shape"), term)
            out = out + scale * term
        return out


def _batch(tokens, cond_or_uncond, batch):
    """The tokens for a batch of `batch` rows made of len(cond_or_uncond) equal chunks, each
    conditional (0: the reference) or unconditional (1: the negative)."""
    import torch

    chunk = batch // len(cond_or_uncond)
    return torch.cat([tokens[1 if c == 0 else 0].expand(chunk, -1, -1) for c in cond_or_uncond])


def _mask_at(mask, length, original_shape, like):
    """`mask` (1, H, W) in 0..1 at the attention's resolution: (1, length, 1)."""
    import torch.nn.functional as F

    if not original_shape:
        raise PatchError("the attention mask needs ComfyUI's original_shape in the transformer options")
    height, width = original_shape[-2:]
    for level in range(8):
        h, w = math.ceil(height / 2 ** level), math.ceil(width / 2 ** level)
        if h * w == length:
            break
    else:
        raise PatchError(f"no resolution of the {width}x{height} latent has {length} attention positions")
    small = F.interpolate(mask[None].to(like.device, like.dtype), size=(h, w), mode="bilinear", align_corners=False)
    return small.reshape(1, length, 1)


# -- the node's work ------------------------------------------------------------------
def check_model(model, info, name):
    """The MODEL is a UNet whose cross-attention fits the adapter (width and layer count)."""
    config = getattr(getattr(getattr(model, "model", None), "model_config", None), "unet_config", None)
    if not isinstance(config, dict) or "transformer_depth" not in config:
        raise PatchError("PF_IPAdapterApply takes an SDXL MODEL (core's Load Checkpoint): this MODEL has no UNet "
                         "PoseForge knows.")
    found = layers(config)
    ipadapter.check_fit(info, name, len(found), config.get("context_dim"), "this MODEL", PatchError)
    return found


def tokens(resident, info, encoder, ip):
    """[unconditional, conditional] image-prompt tokens, (2, tokens, width) float32 on the CPU."""
    import torch

    net, = residency.use(resident)
    param = next(net.image_proj.parameters())
    encoder = ipadapter.encoder(encoder, param.dtype) if isinstance(encoder, str) else encoder
    embeds = ipadapter.image_embeds(encoder, info, ip["images"], ip["negative"], ip["combine"], guided=True)
    two, count = embeds.shape[:2]
    with torch.no_grad():
        projected = net.image_proj(embeds.reshape(two * count, *embeds.shape[2:]).to(param.device, param.dtype))
    return projected.reshape(two, count * projected.shape[1], projected.shape[2]).float().cpu()


def check_mask(mask):
    """A ComfyUI MASK (H, W) or (1, H, W), finite, within 0..1 after clamping: (1, H, W) float32."""
    import torch

    if mask is None:
        return None
    if not torch.is_tensor(mask) or mask.dim() not in (2, 3) or (mask.dim() == 3 and mask.shape[0] != 1):
        shape = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
        raise PatchError(f"attn_mask must be one MASK (height x width), not {shape}.")
    if min(mask.shape[-2:]) < 1 or not bool(torch.isfinite(mask).all()):
        raise PatchError("attn_mask is empty or holds values that are not finite.")
    return mask.reshape(1, *mask.shape[-2:]).float().clamp(0, 1).cpu()


def apply(model, ip, paths, start_at, end_at, mask=None):
    """A clone of `model` (core's ModelPatcher) with the PF_IPADAPTER `ip` in its cross-attention."""
    if not 0.0 <= start_at <= end_at <= 1.0:  # NaN fails this too
        raise PatchError(f"start_at {start_at} and end_at {end_at} must satisfy 0 <= start_at <= end_at <= 1.")
    name = os.path.basename(paths["ipadapter"])
    encoder = ip.get("loaded_clip_vision") or paths["clip_vision"]
    info, _ = ipadapter.check_pair(paths["ipadapter"], encoder)
    found = check_model(model, info, name)
    mask = check_mask(mask)
    resident = adapter_weights(paths["ipadapter"], model.model_dtype())
    scales = layer_scales([n for _, n in found], ip["mode"], ip["scale"])
    sampling = model.get_model_object("model_sampling")
    ref = Reference(resident, tokens(resident, info, encoder, ip), [scales[n] for _, n in found],
                    sampling.percent_to_sigma(start_at), sampling.percent_to_sigma(end_at), mask)
    patched = model.clone()
    replaced = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for index, (key, _) in enumerate(found):
        before = replaced.get(key)
        patch = before.with_reference(ref) if isinstance(before, Attn2Patch) else Attn2Patch(index, [ref], before)
        patched.set_model_attn2_replace(patch, *key)
    chained = [m for m in patched.get_additional_models_with_key("poseforge_ipadapter")]
    patched.set_additional_models("poseforge_ipadapter", chained + [residency.patcher(resident)])
    return patched
