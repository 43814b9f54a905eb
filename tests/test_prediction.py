"""v-prediction and zero-terminal-SNR SDXL (NoobAI-XL and its kind): detected from the checkpoint's `v_pred` /
`ztsnr` keys as ComfyUI reads them, or set on the loader, and sampled so: compared with diffusers' own pipeline
configured for v-prediction."""
import os

import pytest
import torch

from conftest import PACK, pf
from test_sdxl import t2i

engine = pf("local.sdxl")
schedulers = pf("local.schedulers")
models = pf("host.models")
Loader = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]


@pytest.fixture
def vpred(sdxl, vpred_file):
    return Loader().load(os.path.basename(vpred_file), "none", "fp32")[0]


@pytest.fixture
def configs(monkeypatch):
    """The scheduler configs the runs build their schedulers from."""
    seen = []
    real = schedulers.build
    monkeypatch.setattr(schedulers, "build", lambda name, config: seen.append(config) or real(name, config))
    return seen


def test_the_checkpoints_keys_say_v_prediction_and_zsnr(vpred, sdxl, configs):
    out = t2i(vpred)
    assert out["ui"]["prediction"] == ["v_prediction_zsnr"]
    assert configs[-1]["prediction_type"] == "v_prediction" and configs[-1]["rescale_betas_zero_snr"] is True
    assert configs[-1]["timestep_spacing"] == "trailing"
    plain = t2i(sdxl)
    assert plain["ui"]["prediction"] == ["eps"] and configs[-1]["prediction_type"] == "epsilon"
    assert (out["result"][0] - plain["result"][0]).abs().max() > 1e-2  # the same weights, sampled otherwise


def test_a_v_prediction_run_is_diffusers_pipeline_configured_for_it(vpred):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    from test_controlnets import reference

    ours = t2i(vpred, samples=2)["result"][0]
    config = engine.component_config(models.find(*vpred["ckpt"]), "scheduler", "scheduler_config.json")
    scheduler = EulerDiscreteScheduler.from_config(config, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                                   timestep_spacing="trailing")
    theirs = reference(vpred, StableDiffusionXLPipeline, scheduler=scheduler, num_images_per_prompt=2)
    assert ours.shape == theirs.shape == (2, 64, 64, 3)
    assert (ours - theirs).abs().max() <= 1 / 255


def test_the_loader_overrides_what_the_file_says(sdxl, vpred, configs):
    said = Loader().load("tiny_sdxl.safetensors", "none", "fp32", "v_prediction")[0]
    out = t2i(said)
    assert out["ui"]["prediction"] == ["v_prediction"] and configs[-1]["prediction_type"] == "v_prediction"
    assert not configs[-1].get("rescale_betas_zero_snr")
    eps = Loader().load(os.path.basename(models.find(*vpred["ckpt"])), "none", "fp32", "eps")[0]
    assert torch.equal(t2i(eps)["result"][0], t2i(sdxl)["result"][0])  # the same weights as epsilon: the plain run
    with pytest.raises(pf("engines.sdxl").SDXLRequestError, match="prediction must be one of auto, eps"):
        Loader().load("tiny_sdxl.safetensors", "none", "fp32", "x0")


def test_zsnr_with_a_scheduler_that_cannot_is_refused_naming_those_that_can(vpred):
    with pytest.raises(schedulers.SchedulerError, match="zero terminal SNR .* 'Heun' scheduler cannot do: choose "
                                                        "one of DDIM, DPM Multi"):
        t2i(vpred, scheduler="Heun")
    for name in ("Euler a", "DPM++ 2M Karras", "UniPC", "DDIM", "LCM"):
        image = t2i(vpred, scheduler=name, num_inference_steps=3)["result"][0]
        assert torch.isfinite(image).all(), name


def test_cores_model_sampling_says_how_its_model_samples(core_files, tiny_root, core_host, no_network):
    """PF_SDXLFromModel: the MODEL's model sampling as core's samplers use it (the file's keys, or core's
    ModelSamplingDiscrete node in front)."""
    core_bridge = pf("local.sdxl_core")
    model, clip, vae, _ = core_host.modules["comfy.sd"].load_checkpoint_guess_config(core_files[1])
    assert core_bridge.prediction({"model": model}) == "eps"
    advanced = core_host.modules["comfy_extras.nodes_model_advanced"]
    patched, = advanced.ModelSamplingDiscrete().patch(model, "v_prediction", True)
    assert core_bridge.prediction({"model": patched}) == "v_prediction_zsnr"
    assert "object patches" not in " ".join(core_bridge.not_carried({"model": patched, "clip": clip}))
    x0, = advanced.ModelSamplingDiscrete().patch(model, "x0", False)
    with pytest.raises(core_bridge.CoreModelError, match="samples as .*: PoseForge's sampler runs epsilon and "
                                                         "v-prediction"):
        core_bridge.prediction({"model": x0})
