"""IP-Adapter: what the image prompt costs, and what the wrapper adds.

(a) Tiny models (tests/tiny_sdxl.py, tests/tiny_ipadapter.py), one process, interleaved:
    - embedding cache: encoding a new reference image (miss) vs the same pixels again (hit);
    - PF_SDXLOpenPose with the adapter vs without (the adapter's added cost per step);
    - PF_SDXLOpenPose with the adapter vs diffusers' own pipeline with `load_ip_adapter` and
      the same embeddings (what the wrapper adds).

    python bench/ipadapter.py [steps] [size] [repeats]

(b) Real architecture, random weights (no download): an SDXL UNet built from
    local/sdxl_config/ and an ip-adapter-plus_sdxl_vit-h-shaped adapter written in h94's
    layout, converted by PoseForge's loader; one UNet step (CFG batch of 2) with and
    without the adapter installed; and a ViT-H-14-shaped encoder: cache miss vs hit.

    python bench/ipadapter.py real [size] [repeats]
"""
import os
import statistics
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools"), os.path.join(ROOT, "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from doctor import load_pack, submodule  # noqa: E402

import sdxl as sdxl_bench  # noqa: E402  bench/sdxl.py: the same tiny pose run and diffusers pipeline


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def cache_times(ipa, encoder, what, repeats, size=256):
    rng = np.random.default_rng(0)
    misses, hits = [], []
    for _ in range(repeats):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        misses.append(timed(lambda: ipa.encode(encoder, [image], what)))
        hits.append(timed(lambda: ipa.encode(encoder, [image.copy()], what)))
    return statistics.median(misses), statistics.median(hits)


def main(steps=8, size=128, repeats=5):
    import tiny_ipadapter
    import tiny_sdxl

    root = tempfile.mkdtemp()
    built, ckpt, cn_dir = tiny_sdxl.save(root)
    files = tiny_ipadapter.save(root, built["unet"])
    pack = load_pack()
    submodule(pack, "host.models").set_models_root(root)
    ipa, sdxl, residency = (submodule(pack, m) for m in ("local.ipadapter", "local.sdxl", "host.residency"))
    handle = pack.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]().load(
        "tiny_sdxl.safetensors", "tiny-openpose-sdxl/diffusion_pytorch_model.safetensors", "fp32")[0]
    node = pack.NODE_CLASS_MAPPINGS["PF_SDXLOpenPose"]()
    reference = torch.rand(1, 96, 96, 3, generator=torch.Generator().manual_seed(1))
    ip = pack.NODE_CLASS_MAPPINGS["PF_IPAdapter"]().prepare(
        reference, "tiny-plus_vit-h.bin", "tiny-vit-h/model.safetensors", 0.7, "standard", "average")[0]
    pose, args = sdxl_bench.pose_run(handle, size, steps)
    node.generate(pose, ip_adapter=ip, **args)  # loads everything, fills the embedding cache

    encoder = residency.get(next(k for k in residency.cached_keys() if k[0] == "clip_vision"), None)
    miss, hit = cache_times(ipa, encoder, "hidden", repeats)

    # diffusers' own pipeline, adapter loaded by diffusers, the same embeddings
    from PIL import Image

    pipe = sdxl_bench.direct_pipeline(sdxl, ckpt, cn_dir)
    pipe.load_ip_adapter(ipa.split(torch.load(files["tiny-plus_vit-h.bin"][0], weights_only=True)),
                         subfolder=None, weight_name=None, image_encoder_folder=None)
    pipe.set_ip_adapter_scale(0.7)
    info = ipa.adapter_info(submodule(pack, "host.weights").shapes(files["tiny-plus_vit-h.bin"][0]), "plus")
    embeds = ipa.image_embeds(encoder, info, [np.asarray(reference[0].numpy() * 255, np.uint8)], None, "average",
                              True)
    image = Image.fromarray((pose[0].numpy() * 255).astype("uint8"))

    def direct():
        pipe(prompt="a dancer", negative_prompt="blurry", image=image, width=size, height=size,
             num_inference_steps=steps, guidance_scale=6.0, controlnet_conditioning_scale=0.7,
             ip_adapter_image_embeds=[embeds], generator=[torch.Generator("cpu").manual_seed(3)],
             output_type="np")

    with_ip, without, lib = [], [], []
    for _ in range(repeats):  # interleaved, so all three see the same machine state
        with_ip.append(timed(lambda: node.generate(pose, ip_adapter=ip, **args)))
        without.append(timed(lambda: node.generate(pose, **args)))
        lib.append(timed(direct))
    w, wo, d = (statistics.median(x) for x in (with_ip, without, lib))
    print(f"tiny SDXL + ControlNet + tiny plus adapter, {size}x{size}, {steps} steps, CPU threads "
          f"{torch.get_num_threads()}, median of {repeats}")
    print(f"embedding cache: miss {miss * 1000:.2f} ms, hit {hit * 1000:.3f} ms, miss/hit {miss / hit:.0f}x")
    print(f"node with adapter {w * 1000:.0f} ms, without {wo * 1000:.0f} ms: "
          f"+{(w - wo) / steps * 1000:.1f} ms/step ({w / wo:.3f}x)")
    print(f"diffusers + load_ip_adapter, same embeddings {d * 1000:.0f} ms; node/pipeline {w / d:.3f}")


def main_real(size=512, repeats=2):
    """Real-architecture UNet step with / without a plus-shaped adapter; ViT-H cache miss/hit."""
    import tiny_ipadapter
    from diffusers import UNet2DConditionModel
    from diffusers.loaders import IPAdapterMixin
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    pack = load_pack()
    ipa, sdxl, residency = (submodule(pack, m) for m in ("local.ipadapter", "local.sdxl", "host.residency"))
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(sdxl.CONFIG_DIR, subfolder="unet")).eval()
    unet_resident = residency.get(("bench", "unet"), lambda: unet)
    g = torch.Generator().manual_seed(1)
    state = {**{f"image_proj.{k}": v.half() for k, v in tiny_ipadapter.resampler(1280, 2048, g, dim=1280).items()},
             **{f"ip_adapter.{k}": v.half() for k, v in tiny_ipadapter.ip_layers(unet, g, std=0.02).items()}}
    path = os.path.join(tempfile.mkdtemp(), "ip-adapter-plus_sdxl_vit-h-shaped.safetensors")
    save_file(state, path)
    del state
    load = timed(lambda: ipa.adapter(path, unet_resident))
    modules = ipa.adapter(path, unet_resident).net
    pipe = types.SimpleNamespace(unet=unet)
    pipe.set_ip_adapter_scale = types.MethodType(IPAdapterMixin.set_ip_adapter_scale, pipe)

    latent = size // 8
    x = torch.randn(2, 4, latent, latent)
    text = torch.randn(2, 77, 2048)
    time_ids = torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32)
    cond = {"text_embeds": torch.randn(2, 1280), "time_ids": time_ids}
    hidden = [torch.randn(2, 1, 257, 1280)]
    t = torch.tensor(500)

    def plain():
        with torch.no_grad():
            unet(x, t, encoder_hidden_states=text, added_cond_kwargs=cond)

    def adapted():
        with torch.no_grad(), ipa.installed(pipe, modules, 0.7):
            unet(x, t, encoder_hidden_states=text, added_cond_kwargs=dict(cond, image_embeds=hidden))

    adapted()  # warm-up
    with_ip, without = [], []
    for _ in range(repeats):
        without.append(timed(plain))
        with_ip.append(timed(adapted))
    w, wo = statistics.median(with_ip), statistics.median(without)
    print(f"real-architecture SDXL UNet fp32, {size}x{size}, CFG batch 2, CPU threads {torch.get_num_threads()}, "
          f"median of {repeats}")
    print(f"adapter conversion (plus, 848 MB fp16 file) {load:.1f} s")
    print(f"one step: with adapter {w:.2f} s, without {wo:.2f} s: +{w - wo:.2f} s/step ({w / wo:.3f}x)")
    del unet, modules
    residency.release_all()

    config = CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                              patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu")
    encoder = residency.get(("bench", "vit-h"), lambda: CLIPVisionModelWithProjection(config).eval())
    miss, hit = cache_times(ipa, encoder, "hidden", repeats, size=512)
    print(f"ViT-H-14-shaped encoder: cache miss {miss:.2f} s, hit {hit * 1000:.3f} ms, miss/hit {miss / hit:.0f}x")
    os.remove(path)


if __name__ == "__main__":
    if sys.argv[1:2] == ["real"]:
        main_real(*(int(a) for a in sys.argv[2:]))
    else:
        main(*(int(a) for a in sys.argv[1:]))
