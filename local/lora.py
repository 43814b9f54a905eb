"""SDXL LoRAs for one run, through diffusers' own LoRA loading (peft).

Files: kohya / A1111 LoRAs (`lora_unet_*`, `lora_te1_*`, `lora_te2_*`, with or without `.alpha`),
diffusers / PEFT keys (`unet.*.lora_A.weight`, ...), LyCORIS LoCon where diffusers' converters
take it; the speed LoRAs (Lightning, LCM, Hyper, DMD2) are plain LoRAs. What a file is comes
from its tensor names and shapes, before anything loads: a LoRA for another model (SD1.x, SD2.x,
Flux, or a UNet whose text features are another width) or a file that is no LoRA is refused,
naming the file and what it is.

A run puts its LoRAs into the shared UNet and text encoders (`applied`): diffusers converts and
loads each file into peft layers, sets `strength_model` on the UNet and `strength_clip` on both
text encoders, and the layers are fused into the weights, so sampling costs what it costs
without a LoRA. The weights they change are kept aside first and copied back afterwards, also
after a cancel or an error, and so is the rest of what LoRA loading changes on a network (peft
freezes every parameter, `requires_grad` False, which makes some CPU kernels round otherwise;
diffusers sets attributes such as `peft_config` and `lora_scale`): the next run sees the
networks exactly as they were and gives the same image, bit for bit.
A LoRA's tensors are a Resident (host/residency.py): cached, counted by ComfyUI's memory manager
while on the device.
"""
import contextlib
import os

from ..host import residency, weights
from . import families, libs

SOURCE = "https://civitai.com or https://huggingface.co (an SDXL LoRA, e.g. ByteDance/SDXL-Lightning)"
LYCORIS_OTHER = ("hada_w1_a", "lokr_w1", "oft_blocks", "diff_b")  # LoHa, LoKr, OFT, full-diff: not LoRA
WIDTHS = {768: "SD1.x", 1024: "SD2.x", 2048: "SDXL", 4096: "Flux or SD3 (T5)"}  # text features -> family


class LoRAError(ValueError):
    pass


def _cross_width(shapes):
    """The text-feature width a LoRA's cross-attention key/value layers read, or None."""
    for name, shape in shapes.items():
        low = name.lower()
        if ("attn2" in low and ("to_k" in low or "to_v" in low)
                and any(part in low for part in ("lora_down", "lora_a", "lora.down")) and len(shape) == 2):
            return shape[1]
    return None


def describe(shapes):
    """What a file holding these tensors is, for a refusal: None when it is an SDXL-layout LoRA."""
    names = list(shapes)
    if not any("lora" in n.lower() for n in names):
        if any(marker in n for n in names for marker in LYCORIS_OTHER):
            return "a LyCORIS LoHa/LoKr/OFT file, which diffusers cannot load (only LoRA and LoCon)"
        family = families.checkpoint_family(names)
        return "not a LoRA" + ("" if family == "not a Stable Diffusion checkpoint" else f" but {family}")
    if any(n.startswith(("double_blocks", "single_blocks", "lora_unet_double_blocks", "lora_unet_single_blocks",
                         "transformer.single_transformer_blocks", "diffusion_model.double_blocks")) for n in names):
        return "a Flux LoRA"
    if any(n.startswith("lora_te_") for n in names):
        return "an SD1.x/SD2.x LoRA (its text encoder is lora_te_, not lora_te1_/lora_te2_)"
    return None


def check(path, cross_attention_dim):
    """Refuse a file that is no LoRA for this SDXL UNet (whose text features are `cross_attention_dim`
    wide), from its tensor names and shapes, before anything loads."""
    name = os.path.basename(path)
    try:
        shapes = weights.shapes(path)
    except weights.WeightFileError as exc:
        raise LoRAError(f"{name} cannot be read as a LoRA: {exc}") from None
    problem = describe(shapes)
    width = _cross_width(shapes)
    if problem is None and width is not None and width != cross_attention_dim:
        problem = (f"a LoRA for {WIDTHS.get(width, f'a model with {width}-wide text features')}, not for this "
                   f"SDXL model ({cross_attention_dim}-wide)")
    if problem:
        raise LoRAError(f"{name} is {problem}: PF_SDXLLoRA takes SDXL LoRAs ({SOURCE}).")


def tensors(path):
    """The LoRA file's tensors as a Resident (a module holding them as buffers), cached by file identity."""
    def load():
        import torch

        holder = torch.nn.Module()
        holder.names = []
        for index, (key, value) in enumerate(weights.load(path).items()):
            if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
                raise LoRAError(f"{os.path.basename(path)} holds values that are not finite numbers (NaN or "
                                f"infinity) in {key}: it is damaged, and would make every image NaN.")
            holder.register_buffer(f"t{index}", value, persistent=True)
            holder.names.append(key)
        return holder

    return residency.get(("lora", weights.identity(path)), load)


def _state_dict(resident):
    holder = resident.net
    return {key: getattr(holder, f"t{i}") for i, key in enumerate(holder.names)}


def _tuned(components):
    """The peft layers now in `components`: [(component name, layer)]."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, m) for name, model in components.items() for m in model.modules() if isinstance(m, BaseTunerLayer)]


def _state(components):
    """What LoRA loading changes on the networks besides their weights: each parameter's
    `requires_grad` and the attributes set on the network itself."""
    return [(model, dict(vars(model)), [(p, p.requires_grad) for p in model.parameters()])
            for model in components.values()]


def _restore(state, only=None):
    """Put back what LoRA loading changed since `state`: each parameter's requires_grad, and the
    attributes it added or replaced on each network. `only` ({id(network): names}, what the first
    call returned): those names alone, so that what the run itself sets up later (transformers'
    output-capturing hooks, say) is left alone."""
    touched = {}
    for model, attrs, flags in state:
        names = (set(vars(model)) - set(attrs)) | {n for n, v in attrs.items() if vars(model).get(n) is not v}
        if only is not None:
            names &= only.get(id(model), set())
        for name in names:
            if name in attrs:
                setattr(model, name, attrs[name])
            elif name in vars(model):
                delattr(model, name)
        for param, flag in flags:
            param.requires_grad_(flag)
        touched[id(model)] = names
    return touched


@contextlib.contextmanager
def applied(pipe, loras):
    """`loras` [(path, strength_model, strength_clip)] in pipe's UNet and text encoders for the block."""
    if not loras:
        yield
        return
    libs.load("peft")
    components = {"unet": pipe.unet, "text_encoder": pipe.text_encoder, "text_encoder_2": pipe.text_encoder_2}
    kept = []  # (parameter, its values before the LoRAs)
    state, touched = _state(components), None
    try:
        names = []
        for index, (path, _, _) in enumerate(loras):
            resident = tensors(path)
            residency.use(resident)
            names.append(f"poseforge_{index}")
            pipe.load_lora_weights(_state_dict(resident), adapter_name=names[-1])
        present = pipe.get_list_adapters()
        strengths = [{part: (sm if part == "unet" else sc) for part in components if name in present.get(part, [])}
                     for name, (_, sm, sc) in zip(names, loras)]
        pipe.set_adapters(names, adapter_weights=strengths)
        for _, layer in _tuned(components):
            base = layer.get_base_layer()
            kept += [(p, p.detach().to("cpu", copy=True)) for p in (base.weight, getattr(base, "bias", None))
                     if p is not None]
        pipe.fuse_lora(components=[part for part in components if present.get(part)], adapter_names=names)
        pipe.unload_lora_weights()  # the peft layers go; their sum stays in the weights for the run
        touched = _restore(state)  # the run samples as a run without LoRA would, but for the weights
        yield
    finally:
        if _tuned(components):
            pipe.unload_lora_weights()
        import torch

        with torch.no_grad():
            for param, before in kept:
                param.copy_(before)
        _restore(state, touched)
