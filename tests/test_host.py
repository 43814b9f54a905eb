"""The pack as a guest in ComfyUI: its networks go through ComfyUI's memory manager,
its loops honour cancel and feed the progress bar, and it backs off on out-of-memory.
`comfy_host` is the real ComfyUI (COMFYUI_DIR) in this process; out-of-memory, which a
CPU host cannot produce, is raised by the test's own networks."""
import numpy as np
import pytest
import torch

from conftest import PACK, pf

residency = pf("host.residency")
device = pf("host.device")
engine = pf("local.codeformer")
CodeFormer = PACK.NODE_CLASS_MAPPINGS["PF_CodeFormer"]
Extract = PACK.NODE_CLASS_MAPPINGS["PF_OpenPoseExtract"]


def photos(n=3, h=64, w=48):
    return torch.rand(n, h, w, 3, generator=torch.Generator().manual_seed(4))


def test_networks_are_registered_with_their_real_size(comfy_host, with_openpose, with_codeformer):
    Extract().extract(photos(1), resolution=64)
    out = CodeFormer().restore(photos(1, 96, 128), "codeformer.pth", upscale=1, only_center_face=True,
                               detection_threshold=0.05, backend="local")
    assert out["ui"]["faces"] == [1]  # these seeded random weights find one face
    loaded = {m.model.model.pf_key[0]: m for m in comfy_host.ours()}
    assert set(loaded) == {"openpose", "restorer", "retinaface", "parsenet"}
    for m in loaded.values():
        real = sum(t.nelement() * t.element_size() for t in m.model.model.net.state_dict().values())
        assert m.model_memory() == real > 1_000_000
    assert all(full for _, full in comfy_host.loads), "our plain-torch networks are always loaded whole"


def test_unload_all_models_releases_ours(comfy_host, with_openpose):
    Extract().extract(photos(1), resolution=64)
    assert comfy_host.ours() and residency.cached_keys()
    comfy_host.mm.unload_all_models()  # what POST /free with unload_models and the "Unload models" button call
    assert comfy_host.ours() == [] and residency.cached_keys() == []


def test_evicted_network_is_brought_back_at_next_use(comfy_host, with_openpose):
    mm = comfy_host.mm
    Extract().extract(photos(1), resolution=64)
    mm.free_memory(1e30, mm.get_torch_device())  # ComfyUI needs the room for its own model
    assert comfy_host.ours() == [] and residency.cached_keys()  # still cached in RAM, off the device
    first = Extract().extract(photos(1), resolution=64)["result"][0]
    assert len(comfy_host.ours()) == 1
    assert torch.equal(first, Extract().extract(photos(1), resolution=64)["result"][0])


def test_cancel_stops_within_one_step_and_raises_comfys_exception(comfy_host, with_codeformer):
    comfy_host.on_progress(lambda value, total: comfy_host.interrupt())  # cancel pressed at the first step
    with pytest.raises(comfy_host.mm.InterruptProcessingException):
        CodeFormer().restore(photos(4), "codeformer.pth", upscale=1, detection_threshold=1.0, backend="local")
    assert len(comfy_host.progress) == 1  # the step after the cancel never ran


def test_progress_reaches_comfys_bar(comfy_host, with_openpose):
    Extract().extract(photos(3), resolution=64)
    assert [v for v, _, _ in comfy_host.progress] == [1, 2, 3]
    assert comfy_host.progress[-1][1] == 3


def test_face_batch_halves_on_out_of_memory(monkeypatch):
    sizes = []

    class Picky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, weight=0.5):
            sizes.append(len(x))
            if len(x) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
            return (x,)

    crops = [np.full((512, 512, 3), i * 20, np.uint8) for i in range(5)]
    out = engine.restore_faces(Picky(), crops, 0.5, batch_size=8)
    assert sizes == [5, 4, 2, 2, 1]  # 8 -> 4 -> 2, then the rest at 2
    assert [int(c[0, 0, 0]) for c in out] == [i * 20 for i in range(5)]  # order and pixels kept


def test_batch_size_follows_the_device(monkeypatch):
    monkeypatch.setattr(device, "torch_device", lambda: torch.device("cpu"))
    assert device.batch_size(8) == 1
    monkeypatch.setattr(device, "torch_device", lambda: torch.device("cuda"))
    assert device.batch_size(8) == 8


class NearestX2(torch.nn.Module):
    """An upscaler: nearest-neighbour x2 followed by a 3x3 smoothing conv."""
    pf_scale = 2

    def __init__(self, limit=None):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            for c in range(3):
                self.conv.weight[c, c] = 1 / 9
        self.limit, self.tiles = limit, []

    def forward(self, x):
        self.tiles.append(tuple(x.shape[-2:]))
        if self.limit and max(x.shape[-2:]) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return self.conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


def test_tiled_upscale_matches_whole_image_and_shrinks_tile_on_oom():
    rgb = (np.random.default_rng(0).random((300, 200, 3)) * 255).astype(np.uint8)
    whole = engine.upscale_image(NearestX2(), rgb, tile=1024)
    picky = NearestX2(limit=128)
    tiled = engine.upscale_image(picky, rgb, tile=512, overlap=16)
    assert tiled.shape == whole.shape == (600, 400, 3)
    assert max(max(t) for t in picky.tiles[-4:]) <= 128
    inner = np.abs(tiled.astype(int) - whole.astype(int))[2:-2, 2:-2]
    assert inner.max() <= 2 and inner.mean() < 0.05  # feathered seams: the same pixels but at the padded tile borders
