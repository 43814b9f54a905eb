"""LATENT in and out of the PoseForge samplers (ComfyUI's convention: unscaled SDXL latents) and the
`denoise` of a pass that starts from one, on the tiny SDXL; core's VAEDecode in the real host reads
what they output."""
import os

import pytest
import torch

from conftest import PACK, pf
from test_sdxl import FAST, pose_map, pose_run, t2i

requests_ = pf("engines.sdxl")
schedulers = pf("local.schedulers")
Text2Image = PACK.NODE_CLASS_MAPPINGS["PF_SDXLText2Image"]


def image(out):
    return out["result"][0]


def latent(out):
    return out["result"][1]


def test_the_latent_out_is_the_unscaled_latent_the_image_decodes_from(sdxl):
    out = t2i(sdxl, samples=2)
    samples = latent(out)["samples"]
    assert samples.shape == (2, 4, 8, 8) and samples.dtype == torch.float32
    # denoise 0 returns its input untouched, and its image is the decoded input: the same picture
    again = t2i(sdxl, samples=2, latent=latent(out), denoise=0.0)
    assert torch.equal(latent(again)["samples"], samples)
    assert (image(again) - image(out)).abs().max() <= 1 / 255


def test_denoise_one_is_text_to_image_and_a_latent_sets_the_size(sdxl):
    plain = t2i(sdxl, width=64, height=64)
    start = {"samples": torch.randn(1, 4, 12, 10)}
    sized = t2i(sdxl, width=64, height=64, latent=start, denoise=1.0)
    assert image(sized).shape == (1, 96, 80, 3)
    assert torch.equal(image(t2i(sdxl, latent={"samples": torch.zeros(1, 4, 8, 8)}, denoise=1.0)), image(plain))


def test_a_partial_denoise_keeps_the_start_and_runs_ksamplers_schedule(sdxl):
    first = t2i(sdxl, seed=3)
    start = latent(first)
    low = t2i(sdxl, seed=11, latent=start, denoise=0.3, num_inference_steps=4)
    high = t2i(sdxl, seed=11, latent=start, denoise=0.9, num_inference_steps=4)
    fresh = t2i(sdxl, seed=11, num_inference_steps=4)
    def gap(a, b):
        return (latent(a)["samples"] - latent(b)["samples"]).abs().mean()
    assert gap(low, first) < gap(high, first) < gap(fresh, first)  # the lower the denoise, the closer to the start
    # KSampler's rule: steps=4 at denoise 0.3 is the last 4 of a 13-step schedule
    assert schedulers.partial(4, 0.3) == (13, 4.5 / 13)
    config = pf("local.sdxl").component_config(sdxl_path(sdxl), "scheduler", "scheduler_config.json")
    assert schedulers.evaluations("Euler", config, 4, 0.3) == 4 and schedulers.evaluations("Heun", config, 4, 0.3) == 7
    assert schedulers.evaluations("Euler", config, 4, 0.0) == 0


def sdxl_path(handle):
    return str(pf("host.models").require({"ckpt": (*handle["ckpt"], "")})["ckpt"])


def test_a_pose_pass_from_a_latent_batch_one_per_image(sdxl):
    poses = torch.cat([pose_map(1), pose_map(2)])
    first = pose_run(sdxl, poses, samples=2)
    assert latent(first)["samples"].shape == (4, 4, 8, 8)
    again = pose_run(sdxl, poses, samples=2, latent=latent(first), denoise=0.0)
    assert torch.equal(latent(again)["samples"], latent(first)["samples"])
    second = pose_run(sdxl, poses, samples=2, latent=latent(first), denoise=0.5)
    assert image(second).shape == (4, 64, 64, 3)


@pytest.mark.parametrize("bad, match", [
    ({"samples": torch.zeros(3, 4, 8, 8)}, "holds 3 image"),
    ({"samples": torch.zeros(1, 16, 8, 8)}, "SDXL LATENT"),
    ({"samples": torch.full((1, 4, 8, 8), float("nan"))}, "not finite"),
    ({"samples": torch.zeros(1, 4, 4, 4)}, "32x32 pixels"),
    ({"samples": torch.zeros(1, 4, 8, 8), "noise_mask": "everywhere"}, "noise_mask must be a mask"),
    ("latent", "SDXL LATENT"),
])
def test_bad_latents_are_refused_before_anything_loads(sdxl, bad, match):
    with pytest.raises(requests_.SDXLRequestError, match=match):
        t2i(sdxl, samples=2, latent=bad, denoise=0.5)


def test_segmind_refuses_latents_before_sending(fake):
    args = dict(FAST, backend="segmind", width=512, height=512, num_inference_steps=25)
    with pytest.raises(requests_.SDXLRequestError, match="LATENT input or a denoise below 1"):
        Text2Image().generate(latent={"samples": torch.zeros(1, 4, 64, 64)}, **args)
    with pytest.raises(requests_.SDXLRequestError, match="denoise below 1"):
        Text2Image().generate(denoise=0.5, **args)
    graph = {"5": {"class_type": "PF_SDXLText2Image", "inputs": {}},
             "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 1], "vae": ["1", 2]}}}
    with pytest.raises(requests_.SDXLRequestError, match="LATENT output is local only"):
        Text2Image().generate(pf_graph=graph, pf_node="5", **args)
    assert fake.requests == []
    out = Text2Image().generate(pf_graph={"5": graph["5"]}, pf_node="5", **args)  # only IMAGE connected
    assert out["result"][1] is None and len(fake.requests) == 1


def core_handle(core_files, tiny_root):
    pf("host.models").set_models_root(tiny_root)
    return PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]().load(os.path.basename(core_files[1]), "none", "fp32")[0]


def test_core_vae_decode_reads_our_latent(core_files, tiny_root, core_host, no_network):
    """The LATENT out through core's own VAEDecode (the checkpoint loaded by core's own loader code) gives
    our IMAGE."""
    nodes, comfy_sd = core_host.modules["nodes"], core_host.modules["comfy.sd"]
    _, _, vae, _ = comfy_sd.load_checkpoint_guess_config(core_files[1], output_vae=True, output_clip=False)
    out = t2i(core_handle(core_files, tiny_root), samples=2)
    decoded, = nodes.VAEDecode().decode(vae, latent(out))
    assert decoded.shape == image(out).shape
    assert (decoded - image(out)).abs().max() <= 1 / 255
