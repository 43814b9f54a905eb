"""PF_SDXLLoader / PF_SDXLText2Image / PF_SDXLOpenPose on a tiny random-weight SDXL written
as a real LDM single file and a tiny SDXL ControlNet in diffusers keys, loaded with the
network disabled; the Segmind side against the fake server."""
import numpy as np
import pytest
import torch

from conftest import PACK, pf

models = pf("host.models")
engine = pf("local.sdxl")
libs = pf("local.libs")
endpoints = pf("segmind.endpoints")
requests_ = pf("engines.sdxl")
Loader = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]
Text2Image = PACK.NODE_CLASS_MAPPINGS["PF_SDXLText2Image"]
OpenPose = PACK.NODE_CLASS_MAPPINGS["PF_SDXLOpenPose"]
FAST = dict(prompt="a red cube", negative_prompt="blurry", width=64, height=64, num_inference_steps=2,
            guidance_scale=5.0, scheduler="Euler", seed=7, samples=1)


def pose_map(seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(1, size, size, 3)
    x, y = torch.randint(8, size - 8, (2,), generator=g)
    img[0, y - 6:y + 6, x - 2:x + 2] = torch.tensor([1.0, 0.3, 0.0])  # a limb-like bar
    return img


def t2i(sdxl, **overrides):
    return Text2Image().generate(backend="local", sdxl=sdxl, **dict(FAST, **overrides))


def pose_run(sdxl, pose, **overrides):
    args = dict(FAST, controlnet_scale=0.8, control_start=0.0, control_end=1.0)
    args.update(overrides)
    return OpenPose().generate(pose, backend="local", sdxl=sdxl, **args)


# -- loading -------------------------------------------------------------------
def test_single_file_loads_offline_with_every_tensor_intact(sdxl, sdxl_files):
    built, path, _ = sdxl_files
    parts = engine.checkpoint(path, "fp32")
    for name, resident in parts.items():
        ours = resident.net.state_dict()
        for key, value in built[name].state_dict().items():
            assert torch.equal(ours[key].reshape(value.shape), value), f"{name}.{key}"
    assert engine.checkpoint(path, "fp32") == parts  # cached by file identity


def test_tokenizers_are_the_real_clip_vocab():
    tok, tok2 = engine.tokenizers()
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.model_max_length == tok2.model_max_length == 77 and tok2.pad_token == "!"


def test_family_detection_refuses_other_models(tmp_path):
    from safetensors.torch import save_file

    t = torch.zeros(1)
    cases = {"sd15.safetensors": ({"cond_stage_model.transformer.text_model.x": t,
                                   "model.diffusion_model.input_blocks.0.0.weight": t}, "SD1.x"),
             "flux.safetensors": ({"double_blocks.0.img_attn.qkv.weight": t}, "Flux"),
             "sd3.safetensors": ({"model.diffusion_model.joint_blocks.0.x": t}, "SD3"),
             "refiner.safetensors": ({"conditioner.embedders.0.model.x": t,
                                      "conditioner.embedders.1.model.x": t,
                                      "model.diffusion_model.label_emb.0.0.weight": t}, "SDXL refiner")}
    for name, (sd, family) in cases.items():
        save_file({k: v.clone() for k, v in sd.items()}, tmp_path / name)
        with pytest.raises(engine.ModelFamilyError, match=f"{name} is {family}"):
            engine.check_checkpoint(str(tmp_path / name))
    save_file({"controlnet_cond_embedding.conv_in.weight": t, "time_embedding.linear_1.weight": t.clone()},
              tmp_path / "cn15.safetensors")
    with pytest.raises(engine.ModelFamilyError, match="SD1.x/2.x ControlNet"):
        engine.check_controlnet(str(tmp_path / "cn15.safetensors"))
    save_file({"controlnet_cond_embedding.conv_in.weight": t, "add_embedding.linear_1.weight": t.clone()},
              tmp_path / "controlnet-canny-sdxl.safetensors")
    with pytest.raises(engine.ModelFamilyError, match="canny"):
        engine.check_controlnet(str(tmp_path / "controlnet-canny-sdxl.safetensors"))


# -- sampling ------------------------------------------------------------------
def test_text2image_size_count_and_seeds(sdxl):
    out = t2i(sdxl, samples=2)
    image = out["result"][0]
    assert image.shape == (2, 64, 64, 3) and 0 <= image.min() and image.max() <= 1
    assert out["ui"]["backend"] == ["local"]
    again = t2i(sdxl, samples=2)["result"][0]
    assert torch.equal(image, again)  # same seed + same inputs = same images
    assert not torch.equal(image[0], image[1])  # each sample its own seed
    assert torch.allclose(t2i(sdxl, seed=8)["result"][0][0], image[1], atol=1e-5)  # sample k uses seed + k
    wide = t2i(sdxl, width=96, height=64)["result"][0]
    assert wide.shape == (1, 64, 96, 3)


def test_openpose_batch_of_poses_and_controlnet_scale_zero(sdxl):
    poses = torch.cat([pose_map(0), pose_map(1)])
    out = pose_run(sdxl, {"map": poses, "keypoints": [], "source": None}, samples=2)["result"][0]
    assert out.shape == (4, 64, 64, 3)
    first = pose_run(sdxl, pose_map(0), samples=1)["result"][0]
    assert torch.allclose(out[0], first[0], atol=1e-5)  # pose 0, sample 0 first; plain IMAGE accepted
    assert not torch.allclose(out[0], out[2], atol=1e-3)  # the pose matters
    plain = t2i(sdxl)["result"][0]
    zero = pose_run(sdxl, pose_map(0), controlnet_scale=0.0)["result"][0]
    assert torch.allclose(zero, plain, atol=1e-5)


@pytest.mark.parametrize("name", pf("local.schedulers").NAMES)
def test_every_scheduler_runs(sdxl, name):
    image = t2i(sdxl, scheduler=name, num_inference_steps=3)["result"][0]
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()


def test_phases_cancel_and_progress_in_comfyui(sdxl, comfy_host):
    t2i(sdxl, num_inference_steps=3)
    phases = [sorted(p.model.pf_key[1] for p in patchers) for patchers, _ in comfy_host.loads]
    assert phases == [["text_encoder", "text_encoder_2"], ["unet"], ["vae"]]
    assert [v for v, _, _ in comfy_host.progress] == [1, 2, 3]
    assert all(preview for _, _, preview in comfy_host.progress)  # ComfyUI's SDXL latent preview on the node
    registered = {m.model.model.pf_key[1]: m.model_memory() for m in comfy_host.ours()}
    assert registered["unet"] == sum(p.numel() * 4 for p in sdxl_unet(sdxl).parameters()) + buffers(sdxl_unet(sdxl))

    comfy_host.progress.clear()
    comfy_host.on_progress(lambda value, total: comfy_host.interrupt())  # cancel pressed at the first step
    with pytest.raises(comfy_host.mm.InterruptProcessingException):
        t2i(sdxl, num_inference_steps=5)
    assert len(comfy_host.progress) == 1


def sdxl_unet(handle):
    path = models.find(*handle["ckpt"])
    return engine.checkpoint(path, handle["dtype"])["unet"].net


def buffers(module):
    return sum(b.numel() * b.element_size() for b in module.buffers())


# -- errors before heavy work ----------------------------------------------------
@pytest.mark.parametrize("bad,match", [(dict(width=100), "multiple of 8"), (dict(num_inference_steps=0), "steps"),
                                       (dict(samples=17), "samples"), (dict(width=4104), "within 64..4096")])
def test_bad_inputs(sdxl, bad, match):
    with pytest.raises(requests_.SDXLRequestError, match=match):
        t2i(sdxl, **bad)


def test_missing_files_and_missing_loader(models_root, no_key):
    handle = Loader().load("sd_xl_base_1.0.safetensors", "OpenPoseXL2.safetensors")[0]
    with pytest.raises(models.MissingModelFiles) as err:
        OpenPose().generate(pose_map(), backend="local", sdxl=handle, controlnet_scale=0.5, control_start=0.0,
                            control_end=1.0, **FAST)
    text = str(err.value)
    assert "sd_xl_base_1.0.safetensors" in text and "checkpoints" in text and "stabilityai" in text
    assert "OpenPoseXL2.safetensors" in text and "controlnet" in text and "thibaud" in text
    with pytest.raises(models.MissingModelFiles, match="connect a PF_SDXLLoader"):
        Text2Image().generate(backend="local", **FAST)


def test_text2image_loader_without_controlnet_cannot_pose(sdxl_files, tiny_root):
    models.set_models_root(tiny_root)
    try:
        handle = Loader().load("tiny_sdxl.safetensors", "none")[0]
        with pytest.raises(requests_.SDXLRequestError, match="needs an OpenPose ControlNet"):
            pose_run(handle, pose_map())
    finally:
        models.set_models_root(None)


def test_library_import_failure_says_what_to_do(monkeypatch):
    import importlib

    def broken(name):
        raise RuntimeError("operator torchaudio::_lfilter does not exist (built for torch 2.11)")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(libs.LibraryImportError, match="torchaudio was built for a different torch"):
        libs.diffusers()


# -- Segmind -------------------------------------------------------------------
def test_segmind_text2image_maps_fields(fake, api_key):
    out = Text2Image().generate(backend="segmind", **dict(FAST, width=512, height=768, num_inference_steps=25,
                                                           samples=2))
    image = out["result"][0]
    assert image.shape == (2, 768, 512, 3) and out["ui"]["backend"] == ["segmind"]
    bodies = [b for _, _, b in fake.requests]
    assert sorted(b["seed"] for b in bodies) == [7, 8]  # sent concurrently: arrival order varies
    import hashlib

    for k, seed in enumerate((7, 8)):  # ...but the images come back in sample order
        colour = hashlib.sha256(f"a red cube|{seed}".encode()).digest()[:3]
        assert torch.allclose(image[k, 0, 0], torch.tensor(list(colour)) / 255.0, atol=1 / 255)
    assert all(b["prompt"] == "a red cube" and b["negative_prompt"] == "blurry" and b["img_width"] == 512
               and b["img_height"] == 768 and b["num_inference_steps"] == 25 and b["scheduler"] == "Euler"
               and b["guidance_scale"] == 5.0 and b["samples"] == 1 and b["refiner"] is False for b in bodies)
    assert api_key not in repr(out["ui"])


def test_segmind_openpose_sends_the_photo(fake):
    photo = torch.rand(1, 40, 32, 3, generator=torch.Generator().manual_seed(2))
    pose = {"map": pose_map(), "keypoints": [], "source": photo}
    out = OpenPose().generate(pose, backend="segmind", controlnet_scale=0.7, control_start=0.2, control_end=1.0,
                              **dict(FAST, num_inference_steps=30, scheduler="DPM2 Karras"))
    image = out["result"][0]
    assert torch.allclose(image, 1 - photo, atol=1.5 / 255)  # the fake inverts what it received
    slug, _, body = fake.requests[0]
    assert slug == "sdxl-openpose" and body["controlnet_scale"] == 0.7 and body["scheduler"] == "DPM2 Karras"
    assert "control_start" in out["ui"]["segmind_ignores"][0]


def test_segmind_pose_without_photo_and_out_of_range(fake):
    with pytest.raises(requests_.SDXLRequestError, match="has none"):
        OpenPose().generate(pose_map(), backend="segmind", controlnet_scale=0.5, control_start=0.0, control_end=1.0,
                            **dict(FAST, num_inference_steps=30))
    with pytest.raises(endpoints.ParamError, match="num_inference_steps=2 is outside"):
        Text2Image().generate(backend="segmind", **FAST)
    assert fake.requests == []  # nothing was sent
