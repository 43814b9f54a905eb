"""The model cache under several threads and within a RAM budget: one load per key (the others
wait and share it), no library patch of torch.nn left behind by overlapping loads, an
IP-Adapter run beside a plain run on the same UNet, and least-recently-used checkpoints
dropped whole when the budget is reached."""
import os
import shutil
import threading

import pytest
import torch

from conftest import PACK, pf
from test_ipadapter import adapter, run

residency = pf("host.residency")
ipa = pf("local.ipadapter")
sdxl_engine = pf("local.sdxl")
libs = pf("local.libs")
progress = pf("host.progress")
models = pf("host.models")
Text2Image = PACK.NODE_CLASS_MAPPINGS["PF_SDXLText2Image"]
Loader = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]


@pytest.fixture
def fresh_cache():
    residency.release_all()
    ipa.clear_cache()
    yield
    residency.release_all()


def in_threads(*targets):
    """Run each target in its own thread at once; returns their results (exceptions re-raised)."""
    results, errors = [None] * len(targets), []

    def call(i, target):
        try:
            results[i] = target()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i, t)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def meeting_encoder(monkeypatch):
    """CLIPVisionModelWithProjection built inside accelerate's init_empty_weights, as the loader
    builds it, but waiting there until a second construction arrives (or 2 s pass): overlapping
    loads overlap for sure. Returns the list of constructions."""
    transformers = libs.transformers()
    real = transformers.CLIPVisionModelWithProjection
    barrier = threading.Barrier(2, timeout=2)
    built = []

    class Meeting(real):
        def __init__(self, config):
            super().__init__(config)
            built.append(threading.current_thread().name)
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass

    monkeypatch.setattr(transformers, "CLIPVisionModelWithProjection", Meeting)
    return built


def test_two_threads_cold_loading_one_model_load_it_once(fresh_cache, ip_files, tiny_root, meeting_encoder):
    path = str(tiny_root / "clip_vision" / "tiny-vit-h" / "model.safetensors")
    first, second = in_threads(lambda: ipa.encoder(path, torch.float32), lambda: ipa.encoder(path, torch.float32))
    assert first is second and len(meeting_encoder) == 1
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"


def test_overlapping_loads_leave_no_meta_patch_behind(fresh_cache, ip_files, tiny_root, meeting_encoder):
    paths = [str(tiny_root / "clip_vision" / "tiny-vit-h" / "model.safetensors"),
             str(tiny_root / "clip_vision" / "tiny-bigg" / "model.safetensors")]
    loaded = in_threads(*(lambda p=p: ipa.encoder(p, torch.float32) for p in paths))
    assert len(meeting_encoder) == 2 and loaded[0] is not loaded[1]
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu", "accelerate's init_empty_weights patch stayed"
    assert all(p.device.type == "cpu" for r in loaded for p in r.net.parameters())


def test_a_plain_run_beside_an_ip_adapter_run_is_a_plain_run(ready, monkeypatch):
    plain_alone = run(ready)
    plain_done = threading.Event()
    real_step = progress.Progress.step
    seen = {"first": True}

    def step(self, n=1, preview=None):
        if seen["first"] and threading.current_thread().name == "ip-run":
            seen["first"] = False  # the adapter is in the UNet now: give the plain run its chance
            threading.Thread(target=plain, name="plain-run").start()
            plain_done.wait(3)
        return real_step(self, n, preview)

    results = {}

    def plain():
        results["plain"] = run(ready)
        plain_done.set()

    monkeypatch.setattr(progress.Progress, "step", step)
    ip_thread = threading.Thread(target=lambda: results.setdefault("ip", run(ready, adapter())), name="ip-run")
    ip_thread.start()
    ip_thread.join(120)
    assert plain_done.wait(120)
    assert torch.equal(results["plain"], plain_alone)
    assert not torch.equal(results["ip"], plain_alone)


# -- the RAM budget ------------------------------------------------------------------
def test_cycling_three_checkpoints_keeps_the_cache_within_its_budget(sdxl_files, tmp_path, monkeypatch, no_network,
                                                                      fresh_cache):
    _, path, _ = sdxl_files
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for name in ("a", "b", "c"):
        os.link(path, folder / f"{name}.safetensors")  # three files (three identities), no copies
        shutil.copytree(os.path.splitext(path)[0] + ".config", folder / f"{name}.config")
    models.set_models_root(tmp_path)
    try:
        one = sum(r.size for r in sdxl_engine.checkpoint(str(folder / "a.safetensors"), "fp32").values())
        residency.release_all()
        monkeypatch.setenv(residency.BUDGET_ENV, str(1.5 * one / 2 ** 30))  # room for one and a half
        args = dict(prompt="a", negative_prompt="", width=64, height=64, num_inference_steps=1,
                    guidance_scale=2.0, scheduler="Euler", seed=0, samples=1, backend="local")
        for name in ("a", "b", "c", "a", "b"):
            Text2Image().generate(sdxl=Loader().load(f"{name}.safetensors", "none", "fp32")[0], **args)
            assert residency.cached_bytes() <= residency.budget()
            identities = {k[2][0] for k in residency.cached_keys() if k[0] == "sdxl"}
            assert identities == {os.path.realpath(folder / f"{name}.safetensors")}  # the one just used, whole
            assert len([k for k in residency.cached_keys() if k[0] == "sdxl"]) == 4
    finally:
        models.set_models_root(None)


def test_auto_dtype_and_its_meaning_share_one_cache_entry(sdxl_files, fresh_cache, no_network):
    _, path, _ = sdxl_files
    meant = "fp16" if torch.cuda.is_available() else "fp32"
    assert sdxl_engine.checkpoint(path, "auto") == sdxl_engine.checkpoint(path, meant)
    assert len(residency.cached_keys()) == 4


def test_budget_default_is_half_the_memory_and_can_be_set(monkeypatch):
    monkeypatch.delenv(residency.BUDGET_ENV, raising=False)
    total = residency._physical_memory()
    assert total and residency.budget() == total // 2
    monkeypatch.setenv(residency.BUDGET_ENV, "2.5")
    assert residency.budget() == int(2.5 * 2 ** 30)
