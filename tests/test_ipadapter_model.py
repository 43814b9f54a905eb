"""PF_IPAdapterApply: PoseForge's IP-Adapter on core's MODEL, in the real ComfyUI host (its own loader
code on the tiny SDXL, tests/tiny_comfy), against diffusers' IP-Adapter attention processor on the
same weights; core's own sampler with the patched MODEL."""
import copy

import pytest
import torch

from conftest import PACK, pf
from test_ipadapter import adapter, reference

ipm = pf("local.ipadapter_model")
ipa = pf("local.ipadapter")
sdxl = pf("local.sdxl")
models = pf("host.models")
Apply = PACK.NODE_CLASS_MAPPINGS["PF_IPAdapterApply"]
ADAPTERS = {"base": ("tiny-base_vit-h.safetensors", "tiny-vit-h/model.safetensors"),
            "plus": ("tiny-plus_vit-h.bin", "tiny-vit-h/model.safetensors")}
SDXL_CONFIG = {"num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 4], "transformer_depth": [0, 0, 2, 2, 10, 10],
               "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "transformer_depth_middle": 10}


@pytest.fixture
def core(core_files, ip_files, tiny_root, core_host, no_network):
    """(core's MODEL, CLIP, VAE of the tiny SDXL as core's loader builds them, the host)."""
    models.set_models_root(tiny_root)
    ipa.clear_cache()
    comfy_sd = core_host.modules["comfy.sd"]
    model, clip, vae, _ = comfy_sd.load_checkpoint_guess_config(core_files[1])
    yield model, clip, vae, core_host
    models.set_models_root(None)


def ip(kind="base", **overrides):
    name, encoder = ADAPTERS[kind]
    return adapter(ipadapter=name, clip_vision=encoder, **overrides)


def layer_run(model, key, patched=None, sigma=1.0, seed=0):
    """ComfyUI's transformer block of `key` run as the sampler runs it (a batch of [uncond, cond], the
    patched model's transformer options): (attn2's input, attn2's output)."""
    block_name, block_id, index = key
    unet = model.model.diffusion_model
    group = {"input": unet.input_blocks, "output": unet.output_blocks}.get(block_name)
    spatial = [m for m in (group[block_id] if group is not None else unet.middle_block)
               if hasattr(m, "transformer_blocks")][0]
    block = spatial.transformer_blocks[index]
    g = torch.Generator().manual_seed(seed)
    size = {"input": 8, "output": 8, "middle": 8}[block_name]
    x = torch.randn(2, size * size, block.attn1.to_q.in_features, generator=g)
    context = torch.randn(2, 77, 80, generator=g)
    options = dict((patched or model).model_options.get("transformer_options", {}), block=key[:2], block_index=index,
                   cond_or_uncond=[1, 0], sigmas=torch.tensor([sigma, sigma]), original_shape=[2, 4, 16, 16])
    seen = {}

    def keep(name, value):
        seen.setdefault(name, value.clone())  # returns None: a hook that returns a value replaces the output

    hooks = [block.attn2.to_q.register_forward_hook(lambda m, a, o: keep("in", a[0])),
             block.attn2.to_out.register_forward_hook(lambda m, a, o: keep("out", o))]
    try:
        with torch.no_grad():
            block(x, context=context, transformer_options=options)
    finally:
        for h in hooks:
            h.remove()
    return seen["in"], seen["out"], context


def test_the_layers_are_numbered_as_the_files_number_them(sdxl_files, core_files):
    unet = sdxl.checkpoint(core_files[1], "fp32")["unet"].net
    diffusers_names = [n[:-len(".processor")] for n in ipa.cross_attention(unet)]
    tiny = {"num_res_blocks": [2, 2], "channel_mult": [1, 2], "transformer_depth": [0, 0, 2, 2],
            "transformer_depth_output": [0, 0, 0, 2, 2, 2], "transformer_depth_middle": 2}
    assert [n for _, n in ipm.layers(tiny)] == diffusers_names
    real = ipm.layers(SDXL_CONFIG)
    assert len(real) == 70 and real[0] == (("input", 4, 0), "down_blocks.1.attentions.0.transformer_blocks.0.attn2")
    assert real[4] == (("input", 7, 0), "down_blocks.2.attentions.0.transformer_blocks.0.attn2")
    assert real[24] == (("output", 0, 0), "up_blocks.0.attentions.0.transformer_blocks.0.attn2")
    assert real[-1] == (("middle", 0, 9), "mid_block.attentions.0.transformer_blocks.9.attn2")


@pytest.mark.parametrize("mode", ["standard", "style", "composition"])
def test_layer_scales_are_the_layers_block_scales_pick(ready, sdxl_files, mode):
    parts = sdxl.checkpoint(sdxl_files[1], "fp32")
    pipe = sdxl._pipeline({n: r.net for n, r in parts.items()}, None, None, torch.device("cpu"))
    path = str(models.require({"a": ("ipadapter", "tiny-base_vit-h.safetensors", "")})["a"])
    resident = ipa.adapter(path, parts["unet"])
    with ipa.installed(pipe, resident.net, ipa.block_scales(pipe.unet, mode, 0.7)):
        theirs = {n[:-len(".processor")]: p.scale[0] for n, p in pipe.unet.attn_processors.items()
                  if n.endswith("attn2.processor")}
    assert ipm.layer_scales(list(theirs), mode, 0.7) == theirs
    assert sum(1 for s in theirs.values() if s) == (len(theirs) if mode == "standard" else 2)


@pytest.mark.parametrize("kind", ["base", "plus"])
def test_a_patched_layer_equals_diffusers_ip_adapter_processor(core, core_files, kind):
    model, _, _, _ = core
    handle = ip(kind, negative_image=reference(5))
    patched, = Apply().apply(model, handle)
    diffusers = pytest.importorskip("diffusers")
    unet = sdxl.checkpoint(core_files[1], "fp32")["unet"].net
    paths = models.require(pf("engines.ipadapter").files(handle))
    state = ipa.split(pf("host.weights").load(str(paths["ipadapter"])))
    procs = unet._convert_ip_adapter_attn_to_diffusers([state], low_cpu_mem_usage=False)
    proj = diffusers.models.embeddings.MultiIPAdapterImageProjection(
        [unet._convert_ip_adapter_image_proj_to_diffusers(state["image_proj"], low_cpu_mem_usage=False)])
    info, _ = ipa.check_pair(str(paths["ipadapter"]), str(paths["clip_vision"]))
    encoder = ipa.encoder(str(paths["clip_vision"]), torch.float32)
    embeds = ipa.image_embeds(encoder, info, handle["images"], handle["negative"], "average", guided=True)
    with torch.no_grad():
        ip_tokens = proj([embeds])  # [uncond, cond], as ComfyUI's batch [1, 0]
    for key, name in (ipm.layers(model.model.model_config.unet_config)[i] for i in (0, 3, 5, -1)):
        n, ours, context = layer_run(model, key, patched)
        _, plain, _ = layer_run(model, key)
        attn = unet.get_submodule(name)
        proc = procs[name + ".processor"]
        proc.scale = [handle["scale"]]
        with torch.no_grad():
            theirs = proc(attn, n, encoder_hidden_states=(context, ip_tokens))
        assert (ours - theirs).abs().max() < 1e-4, (key, (ours - theirs).abs().max())
        assert (ours - plain).abs().max() > 1e-3, key  # the reference changes it


def test_a_mask_limits_the_reference_to_its_region(core):
    model, _, _, _ = core
    mask = torch.zeros(1, 128, 128)
    mask[:, :, :64] = 1.0  # the left half of the image
    key = ("input", 4, 0)  # at 16x16 latents: an 8x8 grid of positions
    _, plain, _ = layer_run(model, key)
    _, masked, _ = layer_run(model, key, Apply().apply(model, ip(), attn_mask=mask)[0])
    change = (masked - plain).abs().amax(-1).reshape(2, 8, 8)
    assert change[:, :, :4].min() > 1e-4 and change[:, :, 4:].max() == 0


def test_start_and_end_bound_the_sigmas_it_acts_at(core):
    model, _, _, _ = core
    sampling = model.get_model_object("model_sampling")
    key = ("output", 1, 1)
    late = Apply().apply(model, ip(), start_at=0.5, end_at=1.0)[0]
    high, low = float(sampling.sigma_max), sampling.percent_to_sigma(0.9)
    assert torch.equal(layer_run(model, key, late, sigma=high)[1], layer_run(model, key, sigma=high)[1])
    assert not torch.equal(layer_run(model, key, late, sigma=low)[1], layer_run(model, key, sigma=low)[1])
    never = Apply().apply(model, ip(), start_at=0.0, end_at=0.0)[0]
    assert torch.equal(layer_run(model, key, never, sigma=low)[1], layer_run(model, key, sigma=low)[1])


def test_adapters_chain_and_keep_another_packs_patch(core):
    model, _, _, _ = core
    key = ("middle", 0, 1)
    _, plain, _ = layer_run(model, key)
    one = Apply().apply(model, ip("base"))[0]
    two = Apply().apply(one, ip("plus", image=reference(9)))[0]
    alone = Apply().apply(model, ip("plus", image=reference(9)))[0]
    _, a, _ = layer_run(model, key, one)
    _, b, _ = layer_run(model, key, alone)
    _, both, _ = layer_run(model, key, two)
    assert torch.allclose(both - plain, (a - plain) + (b - plain), atol=1e-5)
    attention = pf("host.comfy").module("comfy.ldm.modules.attention")

    def theirs(q, k, v, extra):
        return attention.optimized_attention(q, k, v, extra["n_heads"]) * 0.5

    foreign = model.clone()
    foreign.set_model_attn2_replace(theirs, *key)
    _, f, _ = layer_run(model, key, foreign)
    _, f_then_ours, _ = layer_run(model, key, Apply().apply(foreign, ip("base"))[0])
    assert torch.allclose(f_then_ours - f, a - plain, atol=1e-5)
    cloned = copy.deepcopy(two.model_options)  # what every later ModelPatcher.clone() does
    assert cloned["transformer_options"]["patches_replace"]["attn2"][key] is \
        two.model_options["transformer_options"]["patches_replace"]["attn2"][key]


def test_core_ksampler_samples_with_it_and_the_model_that_came_in_is_untouched(core):
    model, clip, vae, host = core
    nodes = host.modules["nodes"]
    positive, = nodes.CLIPTextEncode().encode(clip, "a red cube")
    negative, = nodes.CLIPTextEncode().encode(clip, "blurry")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}

    def sample(m):
        out, = nodes.common_ksampler(m, 5, 2, 5.0, "euler", "normal", positive, negative, latent)
        return out["samples"]

    before = sample(model)
    patched, = Apply().apply(model, ip("plus", negative_image=reference(4)))
    with_ip = sample(patched)
    assert (with_ip - before).abs().max() > 1e-3
    assert any("ipadapter_layers" in str(m.model.model.pf_key) for m in host.ours())  # ComfyUI loaded it
    assert torch.equal(sample(model), before)
    del patched
    assert torch.equal(sample(model), before)


@pytest.mark.parametrize("args, match", [
    (dict(start_at=0.6, end_at=0.2), "start_at 0.6 and end_at 0.2"),
    (dict(start_at=float("nan")), "start_at nan"),
    (dict(attn_mask=torch.ones(2, 8, 8)), "one MASK"),
    (dict(attn_mask=torch.full((8, 8), float("nan"))), "not finite"),
])
def test_bad_inputs_get_the_nodes_error(core, args, match):
    model, _, _, _ = core
    with pytest.raises(ipm.PatchError, match=match):
        Apply().apply(model, ip(), **args)


def test_an_adapter_for_another_family_is_refused_by_name(core, tiny_root):
    model, _, _, _ = core
    patched = model.clone()
    patched.model.model_config.unet_config = dict(model.model.model_config.unet_config, context_dim=768)
    try:
        with pytest.raises(ipm.PatchError, match="not for this MODEL"):
            Apply().apply(patched, ip())
    finally:
        patched.model.model_config.unet_config["context_dim"] = 80
