"""PF_SDXLLoader / PF_SDXLText2Image / PF_SDXLOpenPose on a tiny random-weight SDXL written
as a real LDM single file and a tiny SDXL ControlNet in diffusers keys, loaded with the
network disabled; the Segmind side against the fake server."""
import os

import numpy as np
import pytest
import torch

from conftest import PACK, pf

models = pf("host.models")
engine = pf("local.sdxl")
families = pf("local.families")
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
    return Text2Image().generate(sdxl=sdxl, **{**FAST, "backend": "local", **overrides})


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
        with pytest.raises(families.ModelFamilyError, match=f"{name} is {family}"):
            families.check_checkpoint(str(tmp_path / name))
    save_file({"controlnet_cond_embedding.conv_in.weight": t, "time_embedding.linear_1.weight": t.clone()},
              tmp_path / "cn15.safetensors")
    with pytest.raises(families.ModelFamilyError, match="SD1.x/2.x ControlNet"):
        families.check_controlnet(str(tmp_path / "cn15.safetensors"))
    save_file({"controlnet_cond_embedding.conv_in.weight": t, "add_embedding.linear_1.weight": t.clone()},
              tmp_path / "controlnet-canny-sdxl.safetensors")
    with pytest.raises(families.ModelFamilyError, match="canny"):
        families.check_controlnet(str(tmp_path / "controlnet-canny-sdxl.safetensors"))


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
    assert not torch.allclose(out[0], out[2], atol=1e-3)
    other = pose_run(sdxl, pose_map(1), samples=1)["result"][0]
    assert (other[0] - first[0]).abs().max() > 1e-5  # the pose matters, at the same seed (tiny: a small effect)
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


@pytest.mark.parametrize("name,evaluations", [("DPM2 Karras", 5), ("Heun", 5), ("DPM++ SDE Karras", 5),
                                              ("DPM++ 2M Karras", 3)])
def test_the_bar_counts_what_is_computed(sdxl, comfy_host, name, evaluations):
    """A second-order sampler evaluates the UNet twice a step (but the last): the bar's total is what
    runs, so it reaches its end when the sampling does, not halfway (ComfyUI clamps at the total)."""
    pose_run(sdxl, pose_map(), scheduler=name, num_inference_steps=3)
    assert [(v, t) for v, t, _ in comfy_host.progress] == [(k, evaluations) for k in range(1, evaluations + 1)]


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


def test_a_loader_without_controlnet_poses_on_segmind_but_not_here(sdxl_files, tiny_root, fake):
    """The missing ControlNet is the local side's: Segmind needs no ControlNet file, so `segmind` runs
    (and `auto` falls back to it), while `local` names what to choose and where to get it."""
    models.set_models_root(tiny_root)
    handle = Loader().load("tiny_sdxl.safetensors", "none")[0]
    with pytest.raises(models.MissingModelFiles, match="choose one in PF_SDXLLoader's `controlnet`.*thibaud"):
        pose_run(handle, pose_map())
    pose = {"map": pose_map(), "keypoints": [], "source": torch.rand(1, 32, 32, 3)}
    for backend in ("segmind", "auto"):
        args = dict(FAST, num_inference_steps=30, backend=backend)
        out = OpenPose().generate(pose, sdxl=handle, controlnet_scale=0.7, control_start=0.0, control_end=1.0, **args)
        assert out["ui"]["backend"] == ["segmind"] and out["result"][0].shape[0] == 1
    assert [slug for slug, _, _ in fake.requests] == ["sdxl-openpose"] * 2


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


# -- the ranges and names of each backend -----------------------------------------------
def test_widgets_allow_what_the_local_engine_can_do():
    inputs = OpenPose.INPUT_TYPES()["required"]
    expected = {"width": (256, 4096), "height": (256, 4096), "num_inference_steps": (1, 150),
                "guidance_scale": (0.0, 30.0), "samples": (1, 16), "controlnet_scale": (0.0, 2.0)}
    for name, (lo, hi) in expected.items():
        assert (inputs[name][1]["min"], inputs[name][1]["max"]) == (lo, hi), name
    assert inputs["scheduler"][0] == pf("local.schedulers").NAMES
    assert PACK.NODE_CLASS_MAPPINGS["PF_IPAdapter"].INPUT_TYPES()["required"]["ip_adapter_scale"][1]["max"] == 2.0


def test_local_runs_beyond_segmind_ranges(sdxl):
    image = t2i(sdxl, guidance_scale=27.0, num_inference_steps=2, samples=5)["result"][0]
    assert image.shape == (5, 64, 64, 3)
    out = pose_run(sdxl, pose_map(0), controlnet_scale=1.8)["result"][0]
    assert not torch.equal(out, pose_run(sdxl, pose_map(0), controlnet_scale=0.9)["result"][0])


@pytest.mark.parametrize("bad,match", [
    (dict(num_inference_steps=120), "num_inference_steps=120 is outside Segmind's range 20..100"),
    (dict(guidance_scale=27.0), "guidance_scale=27.0 is outside Segmind's range 1..25"),
    (dict(controlnet_scale=1.5), "controlnet_scale=1.5 is outside Segmind's range 0..1"),
    (dict(scheduler="DPM++ 2M Karras"), "'DPM\\+\\+ 2M Karras' is local only; Segmind takes DDIM, DPM Multi"),
])
def test_segmind_ranges_and_names_apply_only_when_segmind_runs(fake, bad, match):
    photo = torch.rand(1, 40, 32, 3, generator=torch.Generator().manual_seed(2))
    args = dict(FAST, num_inference_steps=30, controlnet_scale=0.5, control_start=0.0, control_end=1.0)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        OpenPose().generate({"map": pose_map(), "keypoints": [], "source": photo}, backend="segmind", **args)
    assert fake.requests == []


def test_segmind_text2image_width_is_checked_under_the_nodes_name(fake):
    with pytest.raises(endpoints.ParamError, match="width=4096 is outside Segmind's range 512..2048"):
        Text2Image().generate(backend="segmind", **dict(FAST, width=4096, height=512, num_inference_steps=25))
    assert fake.requests == []


@pytest.mark.parametrize("backend", ["local", "segmind"])
@pytest.mark.parametrize("name", ["guidance_scale", "controlnet_scale", "control_end"])
def test_non_finite_numbers_are_refused_on_both_backends(sdxl, fake, backend, name):
    args = dict(FAST, controlnet_scale=0.5, control_start=0.0, control_end=1.0, num_inference_steps=30)
    args[name] = float("nan")
    with pytest.raises(ValueError, match=f"{name} is nan"):
        OpenPose().generate(pose_map(), backend=backend, sdxl=sdxl, **args)
    assert fake.requests == []


# -- poses of another shape than the output --------------------------------------------------
def received_maps(monkeypatch):
    """The pose maps the ControlNet is given (as the pipeline gets them)."""
    seen = []
    real = engine._pil
    monkeypatch.setattr(engine, "_pil", lambda pose: seen.append(pose.copy()) or real(pose))
    return seen


def portrait_frame():
    """A standing figure on a 512x768 canvas: head at the top, feet at the bottom (normalized)."""
    body = [0.0] * 54
    for index, (x, y) in {0: (0.5, 0.1), 1: (0.5, 0.2), 8: (0.45, 0.55), 11: (0.55, 0.55), 10: (0.45, 0.9),
                          13: (0.55, 0.9)}.items():
        body[3 * index:3 * index + 3] = [x, y, 1.0]
    return {"people": [{"pose_keypoints_2d": body}], "canvas_width": 512, "canvas_height": 768}


def extent(pose_map):
    ys, xs = np.nonzero(pose_map.max(-1) > 40)
    return xs.min(), xs.max(), ys.min(), ys.max()


@pytest.mark.parametrize("width,height", [(64, 64), (128, 64)])
def test_a_portrait_pose_keeps_its_proportions_on_another_output_shape(sdxl, monkeypatch, width, height):
    Render = PACK.NODE_CLASS_MAPPINGS["PF_PoseRender"]
    pose = Render().render([portrait_frame()])["result"][1]
    seen = received_maps(monkeypatch)
    pose_run(sdxl, pose, width=width, height=height)
    assert seen[0].shape == (height, width, 3)
    x0, x1, y0, y1 = extent(seen[0])
    # the skeleton spans 0.1..0.9 of the canvas height: fitted, that is 0.8 of the output height, centred
    assert abs((y1 - y0) - 0.8 * height) <= 4 and abs((y0 + y1) / 2 - height / 2) <= 3
    figure = 0.1 * 512 * height / 768  # 0.45..0.55 of the canvas width, at the fitted scale
    assert abs((x1 - x0) - figure) <= 6 and abs((x0 + x1) / 2 - width / 2) <= 3
    seen.clear()
    fitted = x1 - x0
    pose_run(sdxl, pose, width=width, height=height, pose_fit="stretch")
    x0, x1, _, _ = extent(seen[0])
    assert (x1 - x0) > fitted  # stretched wider


def test_a_plain_pose_map_is_letterboxed_or_cropped(sdxl, monkeypatch):
    portrait = torch.zeros(1, 96, 64, 3)
    portrait[0, :, 28:36] = 1.0  # a full-height bar
    seen = received_maps(monkeypatch)
    for fit in ("fit", "crop", "stretch"):
        pose_run(sdxl, portrait, width=64, height=64, pose_fit=fit)
    fitted, cropped, stretched = seen
    assert fitted.shape == cropped.shape == (64, 64, 3) and stretched.shape == (96, 64, 3)  # stretch: as given
    x0, x1, y0, y1 = extent(fitted)
    assert (y0, y1) == (0, 63) and 20 <= x0 and x1 <= 44 and (x1 - x0) < 8  # narrower: proportions kept
    assert extent(cropped)[:2] == (28, 35)


# -- an image prompt without a pose ------------------------------------------------------
def test_text2image_takes_an_image_prompt_locally(ready):
    from test_ipadapter import adapter

    assert not torch.equal(t2i(ready, ip_adapter=adapter())["result"][0], t2i(ready)["result"][0])


def test_text2image_with_an_image_prompt_is_refused_by_segmind_before_sending(fake):
    from test_ipadapter import adapter

    with pytest.raises(requests_.SDXLRequestError, match="No Segmind endpoint takes an image prompt without a pose"):
        t2i(None, ip_adapter=adapter(), backend="segmind", width=512, height=512, num_inference_steps=25)
    assert fake.requests == []


def test_a_controlnet_is_refused_by_its_name_only_for_whole_words(sdxl_files, tiny_root, tmp_path):
    """The weights cannot tell a canny ControlNet from a pose one, the name can: but by whole words
    ("hed" is in "patched", "seg" in "segment-pose" would be wrong to match)."""
    source = tiny_root / "controlnet" / "tiny-openpose-sdxl" / "diffusion_pytorch_model.safetensors"
    for name, refused in (("controlnet-canny-sdxl.safetensors", "canny"), ("sdxl_softedge_hed.safetensors", "softedge"),
                          ("patched_sdxl_v2.safetensors", None), ("openpose-xl-depthless.safetensors", None)):
        os.link(source, tmp_path / name)
        if refused:
            with pytest.raises(families.ModelFamilyError, match=f"looks like a {refused} ControlNet"):
                families.check_controlnet(str(tmp_path / name))
        else:
            families.check_controlnet(str(tmp_path / name))


def test_a_seed_past_the_widgets_range_gets_the_nodes_error(sdxl):
    """A script (or an API graph) may pass any number: 2^70 overflowed the generator's seed (a raw
    RuntimeError/OverflowError) and -1 seeded differently on each backend."""
    for seed in (2 ** 70, -1, 1.5):
        with pytest.raises(requests_.SDXLRequestError, match="seed must be a whole number within 0..999"):
            t2i(sdxl, seed=seed)
