"""Test support, not part of the pack: teaches ComfyUI's own model detection the tiny SDXL of
tests/tiny_sdxl.py, so that core's loaders (CheckpointLoaderSimple, ControlNetLoader) load it and
core's nodes (LoraLoader, KSampler, VAEDecode, ControlNetApplyAdvanced) run on it in the real host.

ComfyUI recognises SDXL by exact sizes (320 channels, 2048-wide text): a tiny SDXL is an SDXL
in everything but size, so it is registered as a model config of its own, `TinySDXL`, that is
ComfyUI's SDXL with the tiny sizes: its UNet heads, its added-time embedder width and its two
CLIP text models' configs (through ComfyUI's own `<name>_model_config` options). Everything else
(the model classes, the key conversions, sampling, LoRA patching) is ComfyUI's code.

Loaded by the test ComfyUI server as a custom node folder (it registers at import, no nodes),
and called in-process by the tests (`register()`).
"""
import importlib

UNET = {"model_channels": 32, "use_linear_in_transformer": True, "transformer_depth": [0, 0, 2, 2],
        "context_dim": 80, "adm_in_channels": 96, "use_temporal_attention": False}
HEADS = 4  # tiny_sdxl's attention_head_dim (diffusers' name for the head count) at the attention level
TIME_EMBED = 8  # tiny_sdxl's addition_time_embed_dim
CLIP = dict(intermediate_size=37, num_attention_heads=4, num_hidden_layers=5, vocab_size=49408, eos_token_id=49407,
            max_position_embeddings=77, layer_norm_eps=1e-5)
CLIP_L = dict(CLIP, hidden_size=32, hidden_act="quick_gelu", projection_dim=32)
CLIP_G = dict(CLIP, hidden_size=48, hidden_act="gelu", projection_dim=48)

NODE_CLASS_MAPPINGS = {}


def register():
    """Put TinySDXL first in ComfyUI's supported models (once)."""
    supported = importlib.import_module("comfy.supported_models")
    if any(getattr(m, "pf_tiny", False) for m in supported.models):
        return
    model_base = importlib.import_module("comfy.model_base")
    sdxl_clip = importlib.import_module("comfy.sdxl_clip")
    base = importlib.import_module("comfy.supported_models_base")
    Timestep = importlib.import_module("comfy.ldm.modules.diffusionmodules.openaimodel").Timestep

    class TinySDXLClipModel(sdxl_clip.SDXLClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            options = dict(model_options, clip_l_model_config=dict(CLIP_L), clip_g_model_config=dict(CLIP_G))
            super().__init__(device=device, dtype=dtype, model_options=options)

    class TinySDXL(supported.SDXL):
        pf_tiny = True
        unet_config = dict(UNET)
        unet_extra_config = {"num_heads": HEADS, "num_head_channels": -1}

        def get_model(self, state_dict, prefix="", device=None):
            model = super().get_model(state_dict, prefix, device)
            model.embedder = Timestep(TIME_EMBED)
            return model

        def clip_target(self, state_dict={}):
            return base.ClipTarget(sdxl_clip.SDXLTokenizer, TinySDXLClipModel)

    supported.models.insert(0, TinySDXL)
    return model_base


try:  # imported by ComfyUI as a custom node: register now
    import comfy.supported_models  # noqa: F401
except ImportError:
    pass
else:
    register()
