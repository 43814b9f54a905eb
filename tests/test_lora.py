"""PF_SDXLLoRA on the tiny SDXL: kohya and diffusers LoRAs (tests/tiny_lora.py) change the image
through diffusers' own loading, strengths mean what they say, LoRAs chain, a run after a LoRA run
is a fresh run bit for bit (also after a cancel), other models' LoRAs and non-LoRA files are
refused by name before anything loads, and Segmind is never sent a graph with a LoRA."""
import pytest
import torch

from conftest import PACK, pf
from test_sdxl import FAST

residency = pf("host.residency")
models = pf("host.models")
lora = pf("local.lora")
sdxl_engine = pf("engines.sdxl")
Loader = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]
LoRA = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoRA"]
Text2Image = PACK.NODE_CLASS_MAPPINGS["PF_SDXLText2Image"]


@pytest.fixture
def plain(sdxl_files, lora_files, tiny_root, no_network):
    models.set_models_root(tiny_root)
    yield Loader().load("tiny_sdxl.safetensors", "none", "fp32")[0]
    models.set_models_root(None)


def t2i(handle, **overrides):
    return Text2Image().generate(backend="local", sdxl=handle, **dict(FAST, **overrides))["result"][0]


def with_lora(handle, name, model=1.0, clip=1.0):
    return LoRA().apply(handle, name, model, clip)[0]


@pytest.mark.parametrize("kind", ["kohya", "diffusers", "locon"])
def test_a_lora_changes_the_image_and_strength_zero_is_no_lora(plain, lora_files, kind):
    fresh = t2i(plain)
    assert not torch.equal(t2i(with_lora(plain, lora_files[kind])), fresh)
    assert torch.equal(t2i(with_lora(plain, lora_files[kind], 0.0, 0.0)), fresh)
    clip_only = t2i(with_lora(plain, lora_files[kind], 0.0, 1.0))
    model_only = t2i(with_lora(plain, lora_files[kind], 1.0, 0.0))
    assert not torch.equal(clip_only, fresh) and not torch.equal(model_only, fresh)
    assert not torch.equal(clip_only, model_only)


def test_two_chained_loras_both_act(plain, lora_files):
    a, b = lora_files["kohya"], lora_files["kohya_b"]
    both = t2i(with_lora(with_lora(plain, a), b))
    assert not torch.equal(both, t2i(with_lora(plain, a))) and not torch.equal(both, t2i(with_lora(plain, b)))
    assert plain["loras"] == []  # the loader's output is left as it was: ComfyUI reuses it


def test_after_a_lora_run_the_networks_are_exactly_as_before(plain, lora_files, sdxl_files):
    fresh = t2i(plain)
    parts = pf("local.sdxl").checkpoint(sdxl_files[1], "fp32")
    before = {name: {k: v.clone() for k, v in r.net.state_dict().items()} for name, r in parts.items()}
    t2i(with_lora(with_lora(plain, lora_files["locon"]), lora_files["diffusers"], 0.7, -1.3))
    for name, r in parts.items():
        after = r.net.state_dict()
        assert set(after) == set(before[name]), f"{name} kept LoRA layers"
        assert all(torch.equal(after[k], v) for k, v in before[name].items()), name
    assert torch.equal(t2i(plain), fresh)


@pytest.mark.parametrize("kind,match", [("sd15", "an SD1.x/SD2.x LoRA"), ("flux", "a Flux LoRA"),
                                        ("not_lora", "not a LoRA")])
def test_other_models_loras_and_non_lora_files_are_refused_before_loading(plain, lora_files, kind, match):
    residency.release_all()
    with pytest.raises(lora.LoRAError, match=f"{lora_files[kind]} is {match}"):
        t2i(with_lora(plain, lora_files[kind]))
    assert residency.cached_keys() == []  # nothing was loaded


def test_a_checkpoint_given_as_lora_is_named_for_what_it_is(plain, tiny_root):
    import os

    os.link(tiny_root / "checkpoints" / "tiny_sdxl.safetensors", tiny_root / "loras" / "a-checkpoint.safetensors")
    try:
        with pytest.raises(lora.LoRAError, match="a-checkpoint.safetensors is not a LoRA but SDXL"):
            t2i(with_lora(plain, "a-checkpoint.safetensors"))
    finally:
        os.unlink(tiny_root / "loras" / "a-checkpoint.safetensors")


def test_a_lora_for_a_model_with_other_text_features_is_refused(plain, lora_files, tmp_path, monkeypatch):
    cross = pf("local.sdxl").component_config  # the UNet's own width, from the checkpoint's config
    monkeypatch.setattr(pf("local.sdxl"), "component_config",
                        lambda path, part, *a: dict(cross(path, part, *a), cross_attention_dim=2048)
                        if part == "unet" else cross(path, part, *a))
    with pytest.raises(lora.LoRAError, match="a LoRA for a model with 80-wide text features, not for this SDXL"):
        t2i(with_lora(plain, lora_files["kohya"]))


def test_strengths_out_of_range_are_refused(plain, lora_files):
    for bad in (4.5, float("nan")):
        with pytest.raises(sdxl_engine.SDXLRequestError, match="strength_model"):
            with_lora(plain, lora_files["kohya"], bad, 1.0)


def test_segmind_with_a_lora_fails_before_sending(plain, lora_files, fake, tiny_root, monkeypatch):
    models.set_models_root(tiny_root)
    handle = with_lora(plain, lora_files["kohya"])
    args = dict(FAST, num_inference_steps=25, width=512, height=512)
    with pytest.raises(sdxl_engine.SDXLRequestError, match="take no LoRA"):
        Text2Image().generate(backend="segmind", sdxl=handle, **args)
    missing = dict(handle, ckpt=("checkpoints", "not-here.safetensors"))
    with pytest.raises(models.MissingModelFiles, match="Segmind cannot run this graph: Segmind's endpoints take no"):
        Text2Image().generate(backend="auto", sdxl=missing, **args)
    assert fake.requests == []


def test_a_lora_is_known_to_comfyuis_memory_manager_and_a_cancel_restores(plain, lora_files, comfy_host, sdxl_files):
    fresh = t2i(plain)
    t2i(with_lora(plain, lora_files["kohya"]))
    assert any(m.model.model.pf_key[0] == "lora" for m in comfy_host.ours())
    comfy_host.on_progress(lambda value, total: comfy_host.interrupt())
    with pytest.raises(comfy_host.mm.InterruptProcessingException):
        t2i(with_lora(plain, lora_files["diffusers"]), num_inference_steps=4)
    comfy_host._callbacks.clear()
    comfy_host.interrupt(False)
    assert torch.equal(t2i(plain), fresh)


# -- a real-architecture-shaped UNet: SDXL's widths and attention processors ------------------------
@pytest.fixture(scope="module")
def wide(sdxl_files, tmp_path_factory):
    """A diffusers SDXL pipeline whose UNet has SDXL's real layer widths (320 and 640 channels, 64-wide
    heads, two transformer layers at 640, 2048-wide text features, the real added-time embedding)
    and a kohya UNet-only LoRA for it (attn1/attn2 q/k/v/out and ff, as the issue's file)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from safetensors.torch import save_file

    import tiny_lora

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(320, 640), layers_per_block=1, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10), use_linear_projection=True, transformer_layers_per_block=(1, 2),
        cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816)
    built, _, _ = sdxl_files
    file = tmp_path_factory.mktemp("wide") / "unet-only.safetensors"
    state = tiny_lora.kohya(dict(built, unet=unet), scale=0.05)
    save_file({k: v.contiguous() for k, v in state.items() if k.startswith("lora_unet_")}, str(file))
    tok, tok2 = pf("local.sdxl").tokenizers()
    pipe = StableDiffusionXLPipeline(vae=built["vae"], text_encoder=built["text_encoder"],
                                     text_encoder_2=built["text_encoder_2"], tokenizer=tok, tokenizer_2=tok2,
                                     unet=unet, scheduler=EulerDiscreteScheduler(), add_watermarker=False)
    return pipe, str(file)


def _unet_out(unet):
    g = torch.Generator().manual_seed(3)
    sample, text = torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 77, 2048, generator=g)  # a guided batch
    added = {"text_embeds": torch.randn(2, 1280, generator=g),
             "time_ids": torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]] * 2)}
    with torch.no_grad():
        return unet(sample.to(unet.dtype), torch.tensor(500.0), text.to(unet.dtype),
                    added_cond_kwargs={k: v.to(unet.dtype) for k, v in added.items()}).sample


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_on_sdxl_widths_strength_zero_is_no_lora_and_later_runs_are_fresh(wide, dtype):
    """Bit for bit: a UNet-only LoRA at strength 0 is no LoRA, and a plain run after a LoRA run, after
    an error and after a cancel inside one, is the first plain run. (peft freezes every parameter;
    in 16 bits the CPU kernels then round otherwise: that is restored too.)"""
    pipe, file = wide
    pipe.unet.to(dtype)
    fresh = _unet_out(pipe.unet)
    with lora.applied(pipe, [(file, 0.0, 0.0)]):
        assert torch.equal(_unet_out(pipe.unet), fresh)
    assert torch.equal(_unet_out(pipe.unet), fresh)
    with lora.applied(pipe, [(file, 1.0, 1.0)]):
        assert not torch.equal(_unet_out(pipe.unet), fresh)
    assert torch.equal(_unet_out(pipe.unet), fresh)
    for stop in (RuntimeError("a failing step"), pf("host.cancel").Cancelled("cancel mid-run")):
        with pytest.raises(type(stop)):
            with lora.applied(pipe, [(file, 0.8, 0.0)]):
                raise stop
        assert torch.equal(_unet_out(pipe.unet), fresh)
    assert all(p.requires_grad for p in pipe.unet.parameters()) and not hasattr(pipe.unet, "peft_config")


def test_a_lora_with_nan_or_infinite_values_is_refused(plain, lora_files, tiny_root):
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_root / "loras" / lora_files["kohya"]))
    name = next(k for k in state if k.endswith("lora_up.weight"))
    for bad in (float("nan"), float("inf")):
        state[name] = state[name].clone()
        state[name][0, 0] = bad
        save_file(state, str(tiny_root / "loras" / "damaged.safetensors"))
        with pytest.raises(lora.LoRAError, match=f"damaged.safetensors holds values that are not finite.*{name}"):
            t2i(with_lora(plain, "damaged.safetensors"))


@pytest.mark.parametrize("kind", ["kohya", "kohya_no_alpha", "locon", "diffusers"])
def test_the_fused_weights_are_what_comfyuis_lora_loader_patches(comfy_host, sdxl_files, lora_files, tiny_root, kind):
    """ComfyUI's own LoRA code (comfy.lora: its key map for this checkpoint's UNet, load_lora and
    calculate_weight, what LoraLoader patches in) against the weights our run samples with, within
    1e-6, at strength 0.7. ComfyUI 0.3.64 maps only some keys of a PEFT-format (diffusers) file (not the
    attention's to_q/k/v/out): those are compared."""
    import types

    from safetensors.torch import load_file, save_file

    cu, cl, md = (comfy_host.modules[m] for m in ("comfy.utils", "comfy.lora", "comfy.model_detection"))
    name = lora_files.get(kind)
    if kind == "kohya_no_alpha":
        state = {k: v for k, v in load_file(str(tiny_root / "loras" / lora_files["kohya"])).items() if "alpha" not in k}
        name = "tiny-kohya-no-alpha.safetensors"
        save_file(state, str(tiny_root / "loras" / name))
    path = str(tiny_root / "loras" / name)
    ckpt = load_file(sdxl_files[1])
    config = md.detect_unet_config(ckpt, "model.diffusion_model.")
    theirs_sd = {k[len("model."):]: v for k, v in ckpt.items() if k.startswith("model.diffusion_model.")}
    model = types.SimpleNamespace(state_dict=lambda: theirs_sd, model_config=types.SimpleNamespace(unet_config=config))
    patches = cl.load_lora(load_file(path), cl.model_lora_keys_unet(model, {}), log_missing=False)
    unet_keys = [k for k in patches if k.startswith("diffusion_model.")]
    assert len(unet_keys) >= (36 if kind == "diffusers" else 132)
    theirs = {k: cl.calculate_weight([(0.7, patches[k], 1.0, None, None)], theirs_sd[k].float().clone(), k)
              for k in unet_keys}

    parts = pf("local.sdxl").checkpoint(sdxl_files[1], "fp32")
    pipe = pf("local.sdxl")._pipeline({n: r.net for n, r in parts.items()}, None, None, torch.device("cpu"))
    to_ldm = {f"diffusion_model.{ldm}": diffusers for diffusers, ldm in cu.unet_to_diffusers(config).items()}
    with lora.applied(pipe, [(path, 0.7, 0.0)]):
        ours = {k: parts["unet"].net.state_dict()[to_ldm[k]].clone() for k in unet_keys}
    for k in unet_keys:
        assert not torch.equal(theirs[k], theirs_sd[k].float()), k  # the LoRA changes it
        assert torch.allclose(ours[k], theirs[k], atol=1e-6, rtol=0), (k, (ours[k] - theirs[k]).abs().max())
