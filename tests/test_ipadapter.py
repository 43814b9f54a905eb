"""PF_IPAdapter + PF_SDXLOpenPose: tiny CLIP vision encoders and tiny IP-Adapters of both kinds
(linear projection and Resampler) in the real file layouts (tests/tiny_ipadapter.py), run through
the whole sampler on the tiny SDXL; content detection on real and tiny shapes; the Segmind side
against the fake server."""
import json

import pytest
import torch

from conftest import PACK, pf
from test_sdxl import FAST, pose_map, pose_run

ipa = pf("local.ipadapter")
models = pf("host.models")
residency = pf("host.residency")
requests_ = pf("engines.ipadapter")
segmind_client = pf("segmind.client")
IPAdapter = PACK.NODE_CLASS_MAPPINGS["PF_IPAdapter"]
OpenPose = PACK.NODE_CLASS_MAPPINGS["PF_SDXLOpenPose"]


def reference(seed, size=48):
    return torch.rand(1, size, size + 8, 3, generator=torch.Generator().manual_seed(seed))


def adapter(image=None, ipadapter="tiny-base_vit-h.safetensors", clip_vision="tiny-vit-h/model.safetensors",
            **overrides):
    args = dict(ip_adapter_scale=0.8, mode="standard", combine="average", negative_image=None)
    args.update(overrides)
    return IPAdapter().prepare(reference(1) if image is None else image, ipadapter, clip_vision, **args)[0]


def run(sdxl, ip=None, **overrides):
    return pose_run(sdxl, pose_map(3), ip_adapter=ip, **overrides)["result"][0]


def ip_processors(unet):
    return [n for n, p in unet.attn_processors.items() if "IPAdapter" in type(p).__name__]


# -- what a file is, from its shapes ----------------------------------------------
def real_adapter_shapes(kind):
    """The shapes of h94's SDXL files (model-formats.md 2.1), 70 cross-attention layers."""
    hidden = [640] * 4 + [1280] * 20 + [1280] * 30 + [640] * 6 + [1280] * 10
    shapes = {f"ip_adapter.{2 * i + 1}.{kv}.weight": (h, 2048) for i, h in enumerate(hidden)
              for kv in ("to_k_ip", "to_v_ip")}
    if kind == "plus":
        shapes.update({"image_proj.latents": (1, 16, 1280), "image_proj.proj_in.weight": (1280, 1280),
                       "image_proj.proj_out.weight": (2048, 1280), "image_proj.norm_out.weight": (2048,)})
    else:
        width = {"base_bigg": 1280, "base_vit-h": 1024}[kind]
        shapes.update({"image_proj.proj.weight": (8192, width), "image_proj.norm.weight": (2048,)})
    return shapes


def real_encoder_shapes(hidden, embeds, layers, intermediate):
    shapes = {"vision_model.embeddings.patch_embedding.weight": (hidden, 3, 14, 14),
              "vision_model.embeddings.position_embedding.weight": (257, hidden),
              "visual_projection.weight": (embeds, hidden)}
    for i in range(layers):
        shapes[f"vision_model.encoder.layers.{i}.layer_norm1.weight"] = (hidden,)
        shapes[f"vision_model.encoder.layers.{i}.mlp.fc1.weight"] = (intermediate, hidden)
    return shapes


VIT_H = real_encoder_shapes(1280, 1024, 32, 5120)
BIGG = real_encoder_shapes(1664, 1280, 48, 8192)


@pytest.mark.parametrize("kind,input_,width,tokens,encoder", [
    ("base_bigg", "embeds", 1280, 4, "ViT-bigG-14"), ("base_vit-h", "embeds", 1024, 4, "ViT-H-14"),
    ("plus", "hidden", 1280, 16, "ViT-H-14")])
def test_real_adapter_kinds_and_the_encoder_each_needs(kind, input_, width, tokens, encoder):
    info = ipa.adapter_info(real_adapter_shapes(kind), "file")
    assert (info["input"], info["width"], info["tokens"], info["cross"], info["layers"]) == \
        (input_, width, tokens, 2048, 70)
    assert encoder in ipa.needed_encoder(info)


def test_real_encoders_are_told_apart_and_configured_exactly(tmp_path):
    from accelerate import init_empty_weights
    from transformers import CLIPVisionModelWithProjection

    for shapes, name, params in ((VIT_H, "ViT-H-14", 632_076_800), (BIGG, "ViT-bigG-14", 1_844_907_264)):
        enc = ipa.encoder_info(shapes, "file")
        assert enc["name"] == name and enc["image_size"] == 224
        config = ipa.encoder_config(str(tmp_path / "single.safetensors"), enc)  # no config.json beside it
        with init_empty_weights():
            model = CLIPVisionModelWithProjection(config)
        assert sum(p.numel() for p in model.parameters()) == params  # the published parameter counts
    with pytest.raises(ipa.IPAdapterError, match="open_clip"):
        ipa.encoder_info({"visual.conv1.weight": (1280, 3, 14, 14)}, "openclip.bin")


def test_other_adapter_kinds_are_refused():
    with pytest.raises(ipa.IPAdapterError, match="not an IP-Adapter"):
        ipa.adapter_info({"model.diffusion_model.x": (1,)}, "sdxl.safetensors")
    full_face = dict(real_adapter_shapes("plus"))
    full_face = {k: v for k, v in full_face.items() if not k.startswith("image_proj.")}
    full_face.update({"image_proj.proj.0.weight": (1280, 1280), "image_proj.proj.3.weight": (2048, 1280)})
    with pytest.raises(ipa.IPAdapterError, match="full-face or FaceID"):
        ipa.adapter_info(full_face, "ip-adapter-full-face_sd15.safetensors")


def test_tiny_files_detected_by_content(ip_files):
    kinds = {"tiny-base_vit-h.safetensors": ("base", "embeds", 24), "tiny-base_bigg.safetensors": ("base", "embeds", 32),
             "tiny-plus_vit-h.bin": ("plus", "hidden", 32)}
    for name, expected in kinds.items():
        info = ipa.adapter_info(pf("host.weights").shapes(ip_files[name][0]), name)
        assert (info["kind"], info["input"], info["width"], info["layers"]) == (*expected, 12)
    encoders = {"tiny-vit-h": (32, 24), "tiny-bigg": (40, 32), "tiny-vit-b": (768, 24)}
    for name, widths in encoders.items():
        enc = ipa.encoder_info(pf("host.weights").shapes(ip_files[name][0]), name)
        assert (enc["hidden"], enc["embeds"], enc["image_size"]) == (*widths, 32)


@pytest.mark.parametrize("adapter_name,encoder_name", [
    ("tiny-base_vit-h.safetensors", "tiny-bigg"), ("tiny-base_bigg.safetensors", "tiny-vit-h"),
    ("tiny-plus_vit-h.bin", "tiny-bigg")])
def test_a_wrong_pair_names_both_files_and_the_encoder_needed(ip_files, adapter_name, encoder_name):
    with pytest.raises(ipa.IPAdapterError) as err:
        ipa.check_pair(ip_files[adapter_name][0], ip_files[encoder_name][0])
    message = str(err.value)
    assert adapter_name in message and "model.safetensors" in message
    assert "24 wide" in message or "32 wide" in message


def test_wrong_pair_fails_in_the_node_before_anything_loads(ready):
    loaded = set(residency.cached_keys())
    with pytest.raises(ipa.IPAdapterError, match="tiny-base_bigg.safetensors needs"):
        run(ready, adapter(ipadapter="tiny-base_bigg.safetensors"))
    assert set(residency.cached_keys()) == loaded


def test_an_sd15_adapter_is_refused_for_the_sdxl_unet(sdxl_files):
    built, _, _ = sdxl_files
    shapes = {"image_proj.proj.weight": (3072, 1024), "image_proj.norm.weight": (768,),
              **{f"ip_adapter.{2 * i + 1}.to_k_ip.weight": (320, 768) for i in range(16)}}
    with pytest.raises(ipa.IPAdapterError, match="is for SD1.5"):
        ipa.check_unet(ipa.adapter_info(shapes, "ip-adapter_sd15.safetensors"), built["unet"],
                       "ip-adapter_sd15.safetensors")


# -- sampling ------------------------------------------------------------------
def test_scale_zero_is_exactly_no_adapter_and_scale_changes_the_image(ready):
    plain = run(ready)
    assert torch.equal(run(ready, adapter(ip_adapter_scale=0.0)), plain)
    guided = run(ready, adapter(ip_adapter_scale=0.8))
    assert (guided - plain).abs().max() > 1e-3
    assert not torch.equal(run(ready, adapter(ip_adapter_scale=0.4)), guided)


@pytest.mark.parametrize("ipadapter,clip_vision", [
    ("tiny-plus_vit-h.bin", "tiny-vit-h/model.safetensors"),
    ("tiny-base_bigg.safetensors", "tiny-bigg/model.safetensors"),
    ("tiny-base_vit-h.safetensors", "tiny-vit-b.safetensors")])  # a single file, config from its shapes
def test_each_adapter_kind_and_encoder_layout_runs(ready, ipadapter, clip_vision):
    plain = run(ready)
    ip = adapter(ipadapter=ipadapter, clip_vision=clip_vision)
    guided = run(ready, ip)
    assert guided.shape == plain.shape and (guided - plain).abs().max() > 1e-3
    assert torch.equal(run(ready, adapter(ipadapter=ipadapter, clip_vision=clip_vision, ip_adapter_scale=0.0)), plain)


def test_style_and_composition_differ_from_standard(ready):
    out = {mode: run(ready, adapter(mode=mode)) for mode in ("standard", "style", "composition")}
    assert not torch.equal(out["style"], out["standard"])
    assert not torch.equal(out["composition"], out["standard"])
    assert not torch.equal(out["style"], out["composition"])


def test_block_scales_name_instantstyle_layers_on_sdxl_layout(sdxl_files):
    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(pf("local.sdxl").CONFIG_DIR, subfolder="unet")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
    assert ipa.block_scales(unet, "style", 0.7) == {"up": {"block_0": [0.0, 0.7, 0.0]}}
    assert ipa.block_scales(unet, "composition", 0.7) == {"down": {"block_2": [0.0, 0.7]}}
    tiny = sdxl_files[0]["unet"]
    assert ipa.block_scales(tiny, "composition", 0.5) == {"down": {"block_1": [0.0, 0.5]}}


def test_a_run_without_the_adapter_after_one_with_it_is_a_fresh_run(ready):
    fresh = run(ready)
    run(ready, adapter(mode="style"))
    unet = pf("local.sdxl").checkpoint(models.find(*ready["ckpt"]), ready["dtype"])["unet"].net
    assert ip_processors(unet) == [] and unet.encoder_hid_proj is None
    assert unet.config.encoder_hid_dim_type is None
    assert torch.equal(run(ready), fresh)


def test_a_cancelled_adapter_run_leaves_the_unet_clean(ready, comfy_host):
    fresh = run(ready)
    cancelling = [True]
    comfy_host.on_progress(lambda value, total: cancelling and comfy_host.interrupt())
    with pytest.raises(comfy_host.mm.InterruptProcessingException):
        run(ready, adapter())
    cancelling.clear()
    comfy_host.interrupt(False)
    assert torch.equal(run(ready), fresh)


def test_two_reference_images_average_or_concat(ready):
    a, b = reference(1), reference(2)
    single = run(ready, adapter(a))
    assert torch.equal(run(ready, adapter(torch.cat([a, a]), combine="average")), single)  # mean of equals
    assert torch.equal(run(ready, adapter(a, combine="concat")), single)  # one image: same tokens
    averaged = run(ready, adapter(torch.cat([a, b]), combine="average"))
    concatenated = run(ready, adapter(torch.cat([a, b]), combine="concat"))
    assert not torch.equal(averaged, single) and not torch.equal(concatenated, averaged)


def test_without_guidance_only_the_image_prompt_side_is_passed(ready):
    plain = run(ready, guidance_scale=1.0)
    guided = run(ready, adapter(), guidance_scale=1.0)
    assert guided.shape == plain.shape and not torch.equal(guided, plain)


def test_negative_image_changes_the_result(ready):
    assert not torch.equal(run(ready, adapter(negative_image=reference(5))), run(ready, adapter()))


def test_embeddings_cached_by_content_and_models_resident_in_comfyui(ready, comfy_host):
    calls = []
    run(ready, adapter(reference(1)))
    encoder_key = next(k for k in residency.cached_keys() if k[0] == "clip_vision")
    encoder = residency.get(encoder_key, None).net
    hook = encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        run(ready, adapter(reference(1).clone()))  # same pixels, a new tensor: no encoding
        assert calls == []
        run(ready, adapter(reference(2)))
        assert len(calls) == 1
    finally:
        hook.remove()
    phases = [sorted(p.model.pf_key[0] + "/" + str(p.model.pf_key[1]) for p in patchers)
              for patchers, _ in comfy_host.loads]
    assert ["clip_vision/" + str(encoder_key[1])] in phases
    assert any(any(name.startswith("ipadapter/") for name in phase) and "sdxl/unet" in phase for phase in phases)
    registered = {m.model.model.pf_key[0] for m in comfy_host.ours()}
    assert {"clip_vision", "ipadapter"} <= registered


def test_bad_image_prompt_input():
    with pytest.raises(ValueError, match="image prompt: expected an IMAGE batch"):
        adapter(torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="mode must be one of"):
        adapter(mode="layout")


def test_missing_adapter_files_are_named(models_root, sdxl_files, tiny_root, no_key):
    models.set_models_root(tiny_root)
    try:
        sdxl = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]().load(
            "tiny_sdxl.safetensors", "tiny-openpose-sdxl/diffusion_pytorch_model.safetensors")[0]
        with pytest.raises(models.MissingModelFiles) as err:
            run(sdxl, adapter(ipadapter="ip-adapter-plus_sdxl_vit-h.safetensors",
                              clip_vision="CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"))
    finally:
        models.set_models_root(None)
    message = str(err.value)
    assert "ip-adapter-plus_sdxl_vit-h.safetensors" in message and "ipadapter" in message
    assert "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors" in message and "clip_vision" in message
    assert "h94/IP-Adapter" in message


# -- Segmind -------------------------------------------------------------------
def segmind_run(ip, **overrides):
    photo = torch.rand(1, 40, 32, 3, generator=torch.Generator().manual_seed(2))
    pose = {"map": pose_map(), "keypoints": [], "source": photo}
    args = dict(FAST, num_inference_steps=30, scheduler="DPM2 Karras", samples=2)
    args.update(overrides)
    return OpenPose().generate(pose, backend="segmind", controlnet_scale=0.7, control_start=0.0, control_end=1.0,
                               ip_adapter=ip, **args), photo


def test_segmind_ip_sdxl_openpose_gets_photo_image_prompt_and_scales(fake):
    ref = reference(9)
    out, photo = segmind_run(adapter(torch.cat([ref, reference(3)]), ip_adapter_scale=0.45, mode="style"))
    assert out["ui"]["backend"] == ["segmind"] and out["result"][0].shape[0] == 2
    slugs = {slug for slug, _, _ in fake.requests}
    assert slugs == {"ip-sdxl-openpose"}
    bodies = [b for _, _, b in fake.requests]
    assert sorted(b["seed"] for b in bodies) == [7, 8]
    for body in bodies:
        assert body["ip_adapter_scale"] == 0.45 and body["controlnet_scale"] == 0.7
        sent = segmind_decode(body["ip_image"])
        assert sent.shape == (48, 56, 3) and abs(sent / 255.0 - ref[0].numpy()).max() < 1.5 / 255
        assert segmind_decode(body["image"]).shape == (40, 32, 3)  # the pose photo
    ignored = out["ui"]["segmind_ignores"][0]
    assert "image prompts after the first" in ignored and "mode" in ignored
    assert torch.allclose(out["result"][0][0], 1 - photo[0], atol=1.5 / 255)


def segmind_decode(text):
    from fake_segmind import decode_image

    return decode_image(text)


def test_segmind_field_names_come_from_the_endpoint_table(fake, tmp_path, monkeypatch):
    override = tmp_path / "endpoints.json"
    override.write_text(json.dumps({"ip-sdxl-openpose": {"params": {
        "ip_image": {"field": "ip_adapter_image"}, "ip_adapter_scale": {"field": "ip_scale"}}}}))
    monkeypatch.setenv("SEGMIND_ENDPOINTS_FILE", str(override))
    segmind_run(adapter(ip_adapter_scale=0.3), samples=1)
    _, _, body = fake.requests[0]
    assert "ip_image" not in body and "ip_adapter_scale" not in body
    assert body["ip_scale"] == 0.3 and segmind_decode(body["ip_adapter_image"]).shape == (48, 56, 3)


@pytest.mark.parametrize("status,words", [(410, "retired"), (404, "does not know")])
def test_segmind_unavailable_model_suggests_local_or_an_override(fake, status, words):
    fake.fail_next(status, body={"error": "gone"})
    with pytest.raises(segmind_client.SegmindError) as err:
        segmind_run(adapter(), samples=1)
    message = str(err.value)
    assert words in message and "ip-sdxl-openpose" in message
    assert "'local'" in message and "SEGMIND_ENDPOINTS_FILE" in message


def test_segmind_needs_no_local_adapter_files(fake):
    out, _ = segmind_run(adapter(ipadapter="absent.safetensors", clip_vision="absent-too.safetensors"), samples=1)
    assert out["ui"]["backend"] == ["segmind"]


def test_a_clip_vision_core_loaded_is_used_instead_of_the_file(ready, comfy_host, comfy_modules, tiny_root):
    folder = tiny_root / "clip_vision" / "tiny-vit-h"
    loaded = comfy_modules["comfy.clip_vision"].ClipVisionModel(str(folder / "config.json"))  # as core's loader
    loaded.load_sd(comfy_modules["comfy.utils"].load_torch_file(str(folder / "model.safetensors")))
    calls = []
    real = loaded.encode_image
    loaded.encode_image = lambda image, crop=True: calls.append(tuple(image.shape)) or real(image, crop)
    for kind in ("tiny-base_vit-h.safetensors", "tiny-plus_vit-h.bin"):
        calls.clear()
        handle = adapter(ipadapter=kind, clip_vision="no-such-encoder.safetensors", loaded_clip_vision=loaded)
        image = run(ready, handle)
        assert calls and not torch.equal(image, run(ready))  # ComfyUI's encoder ran; no encoder file was needed
    with pytest.raises(ipa.IPAdapterError, match="embeddings are 32 wide, but the connected CLIP_VISION is a CLIP"):
        run(ready, adapter(ipadapter="tiny-base_bigg.safetensors", loaded_clip_vision=loaded))


def test_masked_prompts_of_far_apart_lengths_keep_the_image_prompt(ready, monkeypatch):
    """Past four repeats the negative's padding is masked out of the cross-attention (local/prompt.py):
    with an IP-Adapter's processors too, the image is the one the long repetition gives."""
    from test_prompt import details

    prompt = pf("local.prompt")
    masked = run(ready, adapter(), prompt=details(50), negative_prompt=details(15))
    monkeypatch.setattr(prompt, "MAX_REPEAT", 10)
    assert torch.allclose(masked, run(ready, adapter(), prompt=details(50), negative_prompt=details(15)), atol=1e-4)
