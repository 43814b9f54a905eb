"""PF_SDXLFromModel: PoseForge's sampler on the networks core's loader built (the tiny SDXL through
ComfyUI's own loading code, tests/tiny_comfy), over ComfyUI's tensors, against PF_SDXLLoader on the
same file; core's LoraLoader in front against PF_SDXLLoRA."""
import logging
import os

import pytest
import torch

from conftest import PACK, pf
from test_sdxl import FAST, pose_map, pose_run, t2i

core_bridge = pf("local.sdxl_core")
sdxl = pf("local.sdxl")
models = pf("host.models")
requests_ = pf("engines.sdxl")
FromModel = PACK.NODE_CLASS_MAPPINGS["PF_SDXLFromModel"]
Loader = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]
LoRA = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoRA"]
CONTROLNET = "tiny-openpose-sdxl/diffusion_pytorch_model.safetensors"


@pytest.fixture
def core(core_files, sdxl_files, tiny_root, core_host, no_network):
    models.set_models_root(tiny_root)
    model, clip, vae, _ = core_host.modules["comfy.sd"].load_checkpoint_guess_config(core_files[1])
    yield model, clip, vae, core_host
    models.set_models_root(None)


def file_handle(core_files):
    return Loader().load(os.path.basename(core_files[1]), CONTROLNET, "fp32")[0]


def close(a, b):
    return (a["result"][0] - b["result"][0]).abs().max() <= 1 / 255


def test_the_unet_config_read_from_comfyuis_sdxl_is_diffusers_sdxl():
    comfy_sdxl = {"num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 4], "model_channels": 320,
                  "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_middle": 10, "in_channels": 4,
                  "out_channels": 4, "num_head_channels": 64, "num_heads": -1, "context_dim": 2048,
                  "use_linear_in_transformer": True, "adm_in_channels": 2816}
    ours = core_bridge.unet_config(comfy_sdxl, 256)
    shipped = sdxl.component_config(None, "unet")
    for key, value in ours.items():
        if key in shipped and key != "sample_size":
            assert list(value) == list(shipped[key]) if isinstance(value, list) else value == shipped[key], key


def test_the_image_is_the_file_loaders_and_nothing_is_copied(core, core_files):
    model, clip, vae, host = core
    bridged, = FromModel().load(model, clip, vae, CONTROLNET)
    assert close(t2i(bridged, samples=2), t2i(file_handle(core_files), samples=2))
    assert close(pose_run(bridged, pose_map(2)), pose_run(file_handle(core_files), pose_map(2)))
    theirs = {t.untyped_storage().data_ptr() for patcher in (model, clip.patcher, vae.patcher)
              for t in patcher.model.state_dict().values()}
    parts = core_bridge.parts(bridged["core"])
    for name, resident in parts.items():
        assert resident.external
        for key, value in resident.net.state_dict().items():
            if value.is_floating_point():
                assert value.untyped_storage().data_ptr() in theirs, (name, key)
    cached = pf("host.residency").cached_keys()
    assert not any(key[0] == "core" for key in cached)  # nothing of core's is kept past its run


def test_core_lora_loader_in_front_equals_pf_sdxl_lora(core, core_files, lora_files, tiny_root):
    from safetensors.torch import load_file

    model, clip, vae, host = core
    path = str(tiny_root / "loras" / lora_files["kohya"])
    patched_model, patched_clip = host.modules["comfy.sd"].load_lora_for_models(model, clip, load_file(path), 0.8, 0.6)
    bridged, = FromModel().load(patched_model, patched_clip, vae, "none")
    ours, = LoRA().apply(file_handle(core_files), lora_files["kohya"], 0.8, 0.6)
    with_lora = t2i(bridged)
    assert close(with_lora, t2i(ours))
    assert not close(with_lora, t2i(file_handle(core_files)))  # the LoRA changes the image
    plain, = FromModel().load(model, clip, vae, "none")
    assert close(t2i(plain), t2i(file_handle(core_files)))  # core's unpatched model: unchanged


def test_what_cannot_carry_over_is_logged_and_refused_where_it_must(core, caplog, ip_files):
    model, clip, vae, host = core
    from test_ipadapter_model import ip

    patched, = PACK.NODE_CLASS_MAPPINGS["PF_IPAdapterApply"]().apply(model, ip())
    bridged, = FromModel().load(patched, clip, vae, "none")
    with caplog.at_level(logging.WARNING, logger="PoseForge"):
        t2i(bridged)
    assert "attention patches replace (attn2)" in caplog.text and "do not carry over" in caplog.text
    with pytest.raises(requests_.SDXLRequestError, match="core's LoraLoader before PF_SDXLFromModel"):
        LoRA().apply(bridged, "x.safetensors", 1.0, 1.0)
    with pytest.raises(core_bridge.CoreModelError, match="SDXL MODEL"):
        FromModel().load(object(), clip, vae, "none")


def test_segmind_refuses_core_models_before_sending(core, fake):
    model, clip, vae, _ = core
    bridged, = FromModel().load(model, clip, vae, "none")
    with pytest.raises(requests_.SDXLRequestError, match="runs locally only"):
        t2i(bridged, backend="segmind", width=512, height=512, num_inference_steps=25)
    assert fake.requests == []
