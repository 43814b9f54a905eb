"""Cards with little VRAM: when the residency code is told the device has less free memory than
a phase needs (or ComfyUI runs with --lowvram / --novram), the UNet and ControlNet stay in RAM
and their blocks are streamed as they run, the VAE decodes in tiles, the plan is said once in
the log — and the image is the same as with the whole networks on the device."""
import logging
import math
import os

import pytest
import torch

from test_sdxl import FAST, pose_map, pose_run, sdxl_unet, t2i

from conftest import pf

residency = pf("host.residency")
streaming = pf("host.streaming")
engine = pf("local.sdxl")


def test_the_granules_cover_every_tensor_once(sdxl):
    unet = sdxl_unet(sdxl)
    limit = 2 ** 16
    parts, loose = streaming.granules(unet, limit)
    seen = [id(t) for p in parts for t in list(p.parameters()) + list(p.buffers())]
    seen += [id(getattr(owner, name)) for owner, name in loose]
    everything = [id(t) for t in list(unet.parameters()) + list(unet.buffers())]
    assert sorted(seen) == sorted(everything)  # each once: granules are disjoint
    assert len(parts) > 10
    for p in parts:
        assert type(p).__name__ not in streaming.CONTAINERS  # each is called, so its hooks fire
        assert streaming.nbytes(p) <= limit or not list(p.children())


def spy(monkeypatch):
    """Counts of granules brought onto the device, per streamed run."""
    loads = []
    real = streaming.streamed

    def counted(nets, dev, limit, on_load=None):
        loads.append(0)

        def on(module):
            loads[-1] += 1

        return real(nets, dev, limit, on_load=on)

    monkeypatch.setattr(streaming, "streamed", counted)
    return loads


def test_too_little_free_memory_streams_and_gives_the_same_image(sdxl, monkeypatch, caplog):
    whole = pose_run(sdxl, pose_map(3))["result"][0]
    unet = sdxl_unet(sdxl)
    weights = {k: v.clone() for k, v in unet.state_dict().items()}
    loads = spy(monkeypatch)
    monkeypatch.setattr(residency, "free_memory", lambda dev: 2 ** 20)  # a 1 MiB card
    with caplog.at_level(logging.INFO, logger="PoseForge"):
        streamed = pose_run(sdxl, pose_map(3))["result"][0]
    assert torch.equal(streamed, whole)
    plans = [r.getMessage() for r in caplog.records if "streamed from RAM" in r.getMessage()]
    # the text encoders sit on the CPU already here (nothing to bring over): only the UNet phase streams
    assert len(plans) == 1 and "SDXL UNet + ControlNet" in plans[0] and "too little free memory" in plans[0]
    assert any("VAE decode tiled" in r.getMessage() for r in caplog.records)
    assert len(loads) == 1 and loads[0] > 2 * 20  # many granules, each step (CFG in one batch)
    assert not unet._forward_pre_hooks and not any(m._forward_pre_hooks for m in unet.modules())  # hooks gone
    for key, value in unet.state_dict().items():
        assert torch.equal(value, weights[key]), key
    again = pose_run(sdxl, pose_map(3))["result"][0]  # still streamed, still the same
    assert torch.equal(again, whole) and len(loads) == 2


def test_enough_free_memory_loads_whole(sdxl, monkeypatch, caplog):
    loads = spy(monkeypatch)
    monkeypatch.setattr(residency, "free_memory", lambda dev: 2 ** 40)
    with caplog.at_level(logging.INFO, logger="PoseForge"):
        t2i(sdxl)
    assert loads == [] and not any("streamed" in r.getMessage() for r in caplog.records)


def test_comfyuis_lowvram_flag_streams(sdxl, comfy_host, monkeypatch, caplog):
    whole = t2i(sdxl)["result"][0]
    mm = comfy_host.mm
    loads = spy(monkeypatch)
    for state in (mm.VRAMState.LOW_VRAM, mm.VRAMState.NO_VRAM):
        monkeypatch.setattr(mm, "vram_state", state)
        with caplog.at_level(logging.INFO, logger="PoseForge"):
            assert torch.equal(t2i(sdxl)["result"][0], whole)
    assert len(loads) == 4 and all(loads)  # text encoders and UNet, for each flag
    assert sum("--lowvram/--novram" in r.getMessage() for r in caplog.records) == 4
    # the streamed networks are not counted as loaded by ComfyUI; the VAE is
    assert not {"unet", "text_encoder", "text_encoder_2"} & {m.model.model.pf_key[1] for m in comfy_host.ours()}


def test_a_large_decode_goes_in_tiles(sdxl, monkeypatch, caplog):
    whole = t2i(sdxl)["result"][0]
    vae_code = pf("local.vae")
    monkeypatch.setattr(vae_code, "TILE", 4)  # 8x8 latents: tiles of 4 overlapping by 1
    monkeypatch.setattr(residency, "free_memory", lambda dev: 2 ** 20)
    calls = []
    real = vae_code._tiled
    monkeypatch.setattr(vae_code, "_tiled", lambda vae, z: calls.append(z.shape) or real(vae, z))
    with caplog.at_level(logging.INFO, logger="PoseForge"):
        tiled = t2i(sdxl)["result"][0]
    assert calls == [(1, 4, 8, 8)]
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all() and not torch.equal(tiled, whole)
    vae = engine.checkpoint(pf("host.models").find(*sdxl["ckpt"]), sdxl["dtype"])["vae"].net
    assert (vae.tile_latent_min_size, vae.tile_overlap_factor) != (4, 0.25)  # put back


def test_a_decode_out_of_memory_retries_in_tiles(sdxl, monkeypatch, caplog):
    whole = t2i(sdxl)["result"][0]
    vae = engine.checkpoint(pf("host.models").find(*sdxl["ckpt"]), sdxl["dtype"])["vae"].net

    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (test)")

    monkeypatch.setattr(vae, "decode", full)
    with caplog.at_level(logging.WARNING, logger="PoseForge"):
        tiled = t2i(sdxl)["result"][0]
    assert torch.equal(tiled, whole)  # one tile at this size: the same decode
    assert any("decoding it in tiles" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("samples,guidance,dtype", [(1, 6.0, torch.float16), (3, 1.0, torch.bfloat16),
                                                    (2, 7.5, torch.float32)])
def test_the_reserve_is_comfyuis_estimate(comfy_host, monkeypatch, samples, guidance, dtype):
    """ComfyUI's own BaseModel.memory_required for its SDXL (memory_usage_factor from its supported
    model, the attention it uses on a GPU), on the latent batch the run samples."""
    import types

    mm = comfy_host.mm
    monkeypatch.setattr(mm, "pytorch_attention_flash_attention", lambda: True)  # the GPU case the reserve is for
    sdxl = types.SimpleNamespace(memory_usage_factor=comfy_host.modules["comfy.supported_models"].SDXL.memory_usage_factor,
                                 memory_usage_factor_conds=(), memory_usage_shape_process={}, manual_cast_dtype=None,
                                 get_dtype=lambda: dtype)
    batch = samples * (2 if guidance > 1.0 else 1)
    theirs = comfy_host.modules["comfy.model_base"].BaseModel.memory_required(sdxl, (batch, 4, 128, 96))
    request = dict(FAST, width=768, height=1024, samples=samples, guidance_scale=guidance)
    assert engine.activations(request, dtype, 0) == pytest.approx(theirs, abs=1)  # bytes, whole
    assert engine.activations(request, dtype, 1) == 2 * engine.activations(request, dtype, 0)


def test_streaming_with_an_ip_adapter_and_a_lora_gives_the_same_image(ready, lora_files, monkeypatch):
    from test_ipadapter import adapter, run

    from conftest import PACK

    with_lora = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoRA"]().apply(ready, lora_files["kohya"], 1.0, 1.0)[0]
    ip = adapter()
    whole = run(with_lora, ip)
    loads = spy(monkeypatch)
    monkeypatch.setattr(residency, "free_memory", lambda dev: 2 ** 20)
    assert torch.equal(run(with_lora, ip), whole)
    assert len(loads) == 1 and all(loads)  # the UNet phase (the text encoders are on the CPU already)
    monkeypatch.undo()
    assert torch.equal(run(with_lora, ip), whole)  # and whole again afterwards: nothing left behind


def test_the_gpu_bench_runs_in_its_dry_run():
    """bench/gpu.py --dry-run: every side on the tiny models on the CPU, the small-card plan
    included, and one table — so the bench is known to run when a GPU is there."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "COMFYUI_DIR"}
    out = subprocess.run([sys.executable, os.path.join(root, "bench", "gpu.py"), "--dry-run"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith(("PoseForge", "diffusers"))]
    assert [(r[0], r[1]) for r in rows] == [("PoseForge", "none"), ("diffusers", "none"), ("PoseForge", "8"),
                                            ("diffusers", "8")], out.stdout
    for r in rows:
        load, per_step = (float(x) for x in (r[2:4] if r[1] == "none" else r[3:5]))
        # measured: 3 tiny steps against 1 on a busy CPU may differ by less than the noise, so the
        # step figure is only checked to be a number (on a GPU it is (t30 - t1) / 29)
        assert load > 0 and math.isfinite(per_step), r
    assert "UNet + ControlNet streamed" in out.stdout.splitlines()[-2]  # PoseForge under the cap


def test_text_encoders_stay_in_16_bits_on_the_cpu_and_give_the_same_image(sdxl_files, tiny_root, no_network,
                                                                           monkeypatch):
    """On the CPU (fp32 sampling) the text encoders of a 16-bit file keep its dtype in RAM, as
    ComfyUI keeps them, and are cast block by block as they encode: the same image as when
    they are cast at load, and nothing of the cast left behind."""
    import shutil

    from safetensors.torch import load_file, save_file

    from conftest import PACK

    _, path, _ = sdxl_files
    half = os.path.join(os.path.dirname(path), "tiny_sdxl_fp16.safetensors")
    if not os.path.exists(half):
        save_file({k: v.half() for k, v in load_file(path).items()}, half)
        shutil.copytree(os.path.splitext(path)[0] + ".config", os.path.splitext(half)[0] + ".config")
    models = pf("host.models")
    models.set_models_root(tiny_root)
    try:
        handle = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]().load("tiny_sdxl_fp16.safetensors")[0]
        residency.release_all()
        narrow = t2i(handle)["result"][0]
        parts = engine.checkpoint(models.find(*handle["ckpt"]), handle["dtype"])
        for name in ("text_encoder", "text_encoder_2"):
            net = parts[name].net
            assert {p.dtype for p in net.parameters()} == {torch.float16} and net.pf_compute_dtype == torch.float32
        assert {p.dtype for p in parts["unet"].net.parameters()} == {torch.float32}
        assert narrow.dtype == torch.float32 and torch.isfinite(narrow).all()

        real = pf("local.sdxl_file").sdxl_parts
        monkeypatch.setattr(pf("local.sdxl_file"), "sdxl_parts",
                            lambda *a, **k: real(*a, **dict(k, text_as_stored=False)))
        residency.release_all()
        wide = t2i(handle)["result"][0]
        parts = engine.checkpoint(models.find(*handle["ckpt"]), handle["dtype"])
        assert {p.dtype for p in parts["text_encoder"].net.parameters()} == {torch.float32}
        assert torch.equal(narrow, wide)
    finally:
        residency.release_all()
        models.set_models_root(None)


def test_every_tensor_is_brought_over_when_its_granule_runs(sdxl, monkeypatch):
    """CPU to CPU a tensor left behind would compute the same: cast each granule to float64 as it is
    brought over (a network tagged pf_compute_dtype), so one left in float32 fails the forward; the
    result is the float64 network's, and afterwards every tensor is its float32 self again."""
    import copy

    unet = sdxl_unet(sdxl)
    reference = copy.deepcopy(unet).double()
    before = {k: (v.dtype, v.data_ptr()) for k, v in unet.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(2, 4, 8, 8, generator=g).double(), torch.tensor(500.0), torch.randn(2, 77, 80, generator=g).double())
    added = {"text_embeds": torch.randn(2, 48, generator=g).double(), "time_ids": torch.ones(2, 6).double()}
    monkeypatch.setattr(unet, "pf_compute_dtype", torch.float64, raising=False)
    loads = []
    with torch.no_grad(), streaming.streamed([unet], torch.device("cpu"), 2 ** 14, on_load=loads.append):
        out = unet(*args, added_cond_kwargs=added).sample
    monkeypatch.delattr(unet, "pf_compute_dtype")
    with torch.no_grad():
        expected = reference(*args, added_cond_kwargs=added).sample
    assert out.dtype == torch.float64 and torch.allclose(out, expected, atol=1e-10)
    parts, _ = streaming.granules(unet, 2 ** 14)
    assert {id(m) for m in loads} == {id(p) for p in parts}  # every granule was brought over
    assert {k: (v.dtype, v.data_ptr()) for k, v in unet.state_dict().items()} == before
