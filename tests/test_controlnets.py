"""Several ControlNets on one run (PF_ControlNet), xinsir's ControlNet Union / ProMax, and the kinds refused,
on the tiny SDXL: compared with diffusers' own union and multi-ControlNet pipelines on the same weights."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import PACK, pf
from test_sdxl import FAST, pose_map, pose_run, t2i

engine = pf("local.sdxl")
controlnets = pf("local.controlnets")
families = pf("local.families")
models = pf("host.models")
residency = pf("host.residency")
requests_ = pf("engines.sdxl")
ControlNet = PACK.NODE_CLASS_MAPPINGS["PF_ControlNet"]
Loader = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]
OpenPose = PACK.NODE_CLASS_MAPPINGS["PF_SDXLOpenPose"]
UNION = "tiny-union-sdxl/diffusion_pytorch_model.safetensors"
PROMAX = "tiny-union-sdxl/diffusion_pytorch_model_promax.safetensors"
DEPTH = "tiny-depth-sdxl/diffusion_pytorch_model.safetensors"


def depth_map(seed=4, size=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, size // 8, size // 8, 1, generator=g).repeat_interleave(8, 1).repeat_interleave(8, 2).expand(
        -1, -1, -1, 3).contiguous()


def entry(name, image, mode="auto", strength=0.7, start=0.0, end=1.0, control=None):
    return ControlNet().add(name, image, mode, strength, start, end, control)[0]


def image(out):
    return out["result"][0]


@pytest.fixture
def cns(sdxl, control_files):
    return control_files


def reference(sdxl, pipeline_cls, controlnet=None, scheduler=None, **call):
    """diffusers' own pipeline `pipeline_cls` over the loaded checkpoint's modules (and `controlnet`), given the
    prompt embeddings our run samples with (ComfyUI's prompt encoding), as our sampler calls it with FAST's
    settings at 64x64: its images. `scheduler`: Euler from the checkpoint's config unless given."""
    from diffusers import EulerDiscreteScheduler

    path = models.find(*sdxl["ckpt"])
    parts = {n: r.net for n, r in engine.checkpoint(path, sdxl["dtype"]).items()}
    tok, tok2 = engine.tokenizers()
    config = engine.component_config(path, "scheduler", "scheduler_config.json")
    extra = {} if controlnet is None else {"controlnet": controlnet}
    pipe = pipeline_cls(vae=parts["vae"], text_encoder=parts["text_encoder"], text_encoder_2=parts["text_encoder_2"],
                        tokenizer=tok, tokenizer_2=tok2, unet=parts["unet"], add_watermarker=False, **extra,
                        scheduler=scheduler or EulerDiscreteScheduler.from_config(config))
    pipe.set_progress_bar_config(disable=True)
    samples = call.pop("num_images_per_prompt", 1)
    with torch.no_grad():
        embeds = pf("local.prompt").pipeline_embeds(tok, tok2, (parts["text_encoder"], parts["text_encoder_2"]),
                                                    FAST["prompt"], FAST["negative_prompt"])
        out = pipe(**embeds, width=64, height=64, num_inference_steps=FAST["num_inference_steps"],
                   guidance_scale=FAST["guidance_scale"], num_images_per_prompt=samples, output_type="np",
                   generator=[torch.Generator().manual_seed(FAST["seed"] + k) for k in range(samples)], **call)
    return torch.from_numpy(out.images)


def pil(batch):
    return Image.fromarray((batch[0].numpy() * 255).round().astype(np.uint8))


# -- ControlNet Union / ProMax ------------------------------------------------------
def test_a_union_file_is_detected_by_content_and_its_types_read_from_its_weights(cns, tiny_root):
    folder = tiny_root / "controlnet"
    assert families.controlnet_family(pf("host.weights").keys(str(folder / UNION))) == "SDXL ControlNet Union"
    assert controlnets.config(str(folder / UNION))["num_control_type"] == 6
    assert controlnets.config(str(folder / PROMAX))["num_control_type"] == 8  # beside the union's config.json
    net = engine.controlnet(str(folder / PROMAX), "fp32").net
    assert type(net).__name__ == "ControlNetUnionModel"
    for key, value in cns["promax"][0].state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


def test_a_union_in_openpose_mode_is_diffusers_union_pipeline(cns):
    from diffusers import ControlNetUnionModel, StableDiffusionXLControlNetUnionPipeline

    sdxl = requests_.handle("tiny_sdxl.safetensors", UNION, "auto")
    ours = image(pose_run(sdxl, pose_map(3), controlnet_scale=0.9, control_start=0.0, control_end=1.0))
    union = ControlNetUnionModel.from_pretrained(str(models.find("controlnet", "tiny-union-sdxl")))
    theirs = reference(sdxl, StableDiffusionXLControlNetUnionPipeline, union, control_image=[pil(pose_map(3))],
                       control_mode=[0], controlnet_conditioning_scale=0.9)
    assert ours.shape == theirs.shape == (1, 64, 64, 3)
    assert (ours - theirs).abs().max() <= 1 / 255
    assert (ours - image(t2i(sdxl))).abs().max() > 1e-3  # the union did something


def test_two_controlnets_are_diffusers_multi_controlnet_pipeline(cns):
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline

    sdxl = requests_.handle("tiny_sdxl.safetensors", "tiny-openpose-sdxl/diffusion_pytorch_model.safetensors",
                                     "auto")
    control = entry(DEPTH, depth_map(), strength=0.6, start=0.0, end=0.6)  # of 2 steps, the first
    ours = image(pose_run(sdxl, pose_map(1), controlnet_scale=0.8, control=control))
    pose_cn = ControlNetModel.from_pretrained(str(models.find("controlnet", "tiny-openpose-sdxl")))
    depth_cn = ControlNetModel.from_pretrained(str(models.find("controlnet", "tiny-depth-sdxl")))
    theirs = reference(sdxl, StableDiffusionXLControlNetPipeline, [pose_cn, depth_cn],
                       image=[pil(pose_map(1)), pil(depth_map())], controlnet_conditioning_scale=[0.8, 0.6],
                       control_guidance_start=[0.0, 0.0], control_guidance_end=[1.0, 0.6])
    assert (ours - theirs).abs().max() <= 1 / 255
    alone = image(pose_run(sdxl, pose_map(1), controlnet_scale=0.8))
    assert (ours - alone).abs().max() > 1e-3  # the second ControlNet did something


def test_strength_zero_is_the_run_without_it_bit_for_bit(cns):
    sdxl = requests_.handle("tiny_sdxl.safetensors", "tiny-openpose-sdxl/diffusion_pytorch_model.safetensors",
                                     "auto")
    alone = image(pose_run(sdxl, pose_map(1)))
    control = entry(DEPTH, depth_map(), strength=0.0, control=entry(PROMAX, depth_map(5), "tile", strength=0.0))
    assert torch.equal(image(pose_run(sdxl, pose_map(1), control=control)), alone)
    # the pose's own at 0 with one more: the run with the other alone
    one = entry(DEPTH, depth_map(), strength=0.5)
    without_pose = image(pose_run(sdxl, pose_map(1), controlnet_scale=0.0, control=one))
    assert torch.equal(without_pose, image(t2i(sdxl, control=one)))
    assert torch.equal(image(pose_run(sdxl, pose_map(1), controlnet_scale=0.0)), image(t2i(sdxl)))


def test_union_modes_and_a_file_twice_is_loaded_once(cns):
    sdxl = requests_.handle("tiny_sdxl.safetensors", UNION, "auto")
    with pytest.raises(controlnets.ControlNetError, match="ControlNet Union: .*mode must say which kind"):
        pose_run(sdxl, pose_map(), control=entry(UNION, depth_map(), "auto"))
    with pytest.raises(controlnets.ControlNetError, match="6 control types, and 'tile'.*ProMax"):
        pose_run(sdxl, pose_map(), control=entry(UNION, depth_map(), "tile"))
    residency.release_all()
    depth = image(pose_run(sdxl, pose_map(), control=entry(UNION, depth_map(), "depth")))
    union_keys = [k for k in residency.cached_keys() if k[0] == "controlnet"]
    assert len(union_keys) == 1  # the pose's union and the depth entry: one network
    assert not torch.equal(depth, image(pose_run(sdxl, pose_map(), control=entry(UNION, depth_map(), "canny/lineart/"
                                                                                   "anime_lineart/mlsd"))))
    tiled = image(pose_run(sdxl, pose_map(), control=entry(PROMAX, depth_map(), "tile")))
    assert tiled.shape == (1, 64, 64, 3) and torch.isfinite(tiled).all()


def test_control_images_one_for_all_or_one_per_pose(cns, monkeypatch):
    sdxl = requests_.handle("tiny_sdxl.safetensors", "tiny-openpose-sdxl/diffusion_pytorch_model.safetensors",
                                     "auto")
    poses = torch.cat([pose_map(1), pose_map(2)])
    seen = []
    real = engine._pil
    monkeypatch.setattr(engine, "_pil", lambda m: seen.append(m.copy()) or real(m))
    pose_run(sdxl, poses, control=entry(DEPTH, torch.cat([depth_map(1), depth_map(2)])))
    assert len(seen) == 4 and np.array_equal(seen[1], (depth_map(1)[0].numpy() * 255).round())
    assert np.array_equal(seen[3], (depth_map(2)[0].numpy() * 255).round())
    with pytest.raises(requests_.SDXLRequestError, match="3 control images for 2 pose"):
        pose_run(sdxl, poses, control=entry(DEPTH, torch.cat([depth_map(1)] * 3)))
    portrait = torch.zeros(1, 128, 64, 3)
    seen.clear()
    t2i(sdxl, control=entry(DEPTH, portrait))  # text-to-image crops a map of another shape, as core does
    assert seen[0].shape == (64, 64, 3)


@pytest.mark.parametrize("keys, kind, names", [
    ({"lora_controlnet.input_blocks.0.weight": 1, "down.lora_up.weight": 1}, "Control-LoRA", "Load ControlNet Model"),
    ({"adapter.body.0.weight": 1}, "T2I-Adapter", "Load ControlNet Model"),
    ({"lllite_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.conditioning1.0.weight": 1}, "ControlLLLite",
     "ControlNet-LLLite-ComfyUI"),
])
def test_kinds_the_sampler_does_not_run_are_refused_naming_what_takes_them(tmp_path, keys, kind, names):
    from safetensors.torch import save_file

    path = tmp_path / "some-control.safetensors"
    save_file({k: torch.zeros(v) for k, v in keys.items()}, str(path))
    for pose in (True, False):
        with pytest.raises(families.ModelFamilyError, match=f"is a {kind}, which PoseForge's sampler does not run: "
                                                            f".*{names}"):
            families.check_controlnet(str(path), pose=pose)


def test_a_named_control_is_fine_outside_the_pose(cns):
    """A depth ControlNet may be named depth: the name check is for the pose's own ControlNet."""
    families.check_controlnet(str(models.find("controlnet", DEPTH)), pose=False)
    with pytest.raises(families.ModelFamilyError, match="looks like a depth ControlNet"):
        families.check_controlnet(str(models.find("controlnet", DEPTH)), pose=True)


def test_segmind_refuses_more_controlnets_before_sending(fake):
    photo = torch.rand(1, 40, 32, 3, generator=torch.Generator().manual_seed(2))
    args = dict(FAST, num_inference_steps=30, controlnet_scale=0.5, control_start=0.0, control_end=1.0)
    with pytest.raises(requests_.SDXLRequestError, match=r"one pose ControlNet of its own: the PF_ControlNet entries "
                                                         rf"\({DEPTH}\)"):
        OpenPose().generate({"map": pose_map(), "keypoints": [], "source": photo}, backend="segmind",
                            control=entry(DEPTH, depth_map()), **args)
    assert fake.requests == []


def test_the_plan_evaluates_pf_controlnet(fake, example_graph_classes):
    graph = {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
             "2": {"class_type": "PF_ControlNet", "inputs": {"controlnet": DEPTH, "image": ["1", 0],
                                                             "union_mode": "auto", "strength": 0.5, "start": 0.0,
                                                             "end": 1.0}},
             "3": {"class_type": "PF_SDXLText2Image", "inputs": dict(FAST, num_inference_steps=30, width=512,
                                                                     height=512, backend="segmind",
                                                                     control=["2", 0])}}
    answer = pf("engines.plan").plan(example_graph_classes, graph, "3")
    assert answer["backend"] is None and "PF_ControlNet entries" in answer["refused"]


@pytest.fixture
def example_graph_classes():
    return dict(PACK.NODE_CLASS_MAPPINGS)


def test_bad_entries_get_the_nodes_error():
    for bad, match in ((dict(strength=float("nan")), "strength nan"), (dict(strength=11.0), "strength 11"),
                       (dict(start=0.5, end=0.5), "start 0.5 must be below")):
        args = dict(dict(mode="auto", strength=0.5, start=0.0, end=1.0), **bad)
        with pytest.raises(requests_.SDXLRequestError, match=match):
            ControlNet().add(DEPTH, depth_map(), args["mode"], args["strength"], args["start"], args["end"])
    first = entry(DEPTH, depth_map())
    second = entry(UNION, depth_map(), "depth", control=first)
    assert len(first) == 1 and [e["name"] for e in second] == [DEPTH, UNION]  # the input list is left as it was


def test_every_entry_is_a_file_the_local_side_needs(cns, no_key):
    sdxl = requests_.handle("tiny_sdxl.safetensors", "tiny-openpose-sdxl/diffusion_pytorch_model.safetensors",
                                     "auto")
    with pytest.raises(models.MissingModelFiles, match="not-here.safetensors in the 'controlnet' folder"):
        pose_run(sdxl, pose_map(), control=entry("not-here.safetensors", depth_map()))
    assert os.path.exists(models.find("controlnet", DEPTH))


def test_two_controlnets_stream_with_the_unet_when_they_do_not_fit(cns, monkeypatch, caplog):
    """The phase plan takes every ControlNet: on a card too small for them they stream from RAM with the UNet,
    block by block, and the image is the full-load plan's, bit for bit."""
    import logging

    from test_streaming import spy

    sdxl = requests_.handle("tiny_sdxl.safetensors", UNION, "auto")
    control = entry(DEPTH, depth_map(), strength=0.6)
    whole = image(pose_run(sdxl, pose_map(1), control=control))
    streamed_nets = []
    real = pf("host.streaming").streamed
    monkeypatch.setattr(pf("host.streaming"), "streamed",
                        lambda nets, dev, limit, on_load=None: streamed_nets.append(list(nets)) or
                        real(nets, dev, limit, on_load))
    loads = spy(monkeypatch)
    monkeypatch.setattr(residency, "free_memory", lambda dev: 2 ** 20)  # a 1 MiB card
    with caplog.at_level(logging.INFO, logger="PoseForge"):
        streamed = image(pose_run(sdxl, pose_map(1), control=control))
    assert torch.equal(streamed, whole) and loads and loads[-1] > 0
    kinds = sorted(type(n).__name__ for n in streamed_nets[-1])
    assert kinds == ["ControlNetModel", "ControlNetUnionModel", "UNet2DConditionModel"]


def test_the_memory_manager_holds_each_controlnet_once_in_the_unets_phase(cns, comfy_host):
    sdxl = requests_.handle("tiny_sdxl.safetensors", UNION, "auto")
    control = entry(UNION, depth_map(), "depth", control=entry(DEPTH, depth_map(), strength=0.6))
    pose_run(sdxl, pose_map(1), control=control)
    phases = [[p.model.pf_key[0] if p.model.pf_key[0] == "controlnet" else p.model.pf_key[1] for p in patchers]
              for patchers, _ in comfy_host.loads]
    unet_phase = next(p for p in phases if "unet" in p)
    assert sorted(unet_phase) == ["controlnet", "controlnet", "unet"]  # the union (pose and depth) once, the depth
    held = [m.model.model.pf_key for m in comfy_host.ours() if m.model.model.pf_key[0] == "controlnet"]
    assert len(held) == 2 and all(m.model_memory() > 0 for m in comfy_host.ours())
