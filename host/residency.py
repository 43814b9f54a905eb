"""Model residency: every network the pack loads lives here, for every engine.

A network is loaded once (into RAM, on the offload device) and cached under a
key that names its file. `use(...)` brings one or more networks onto the compute
device for one phase of work and returns them.

Inside ComfyUI each network is wrapped in `comfy.model_patcher.ModelPatcher` and
brought onto the device with `comfy.model_management.load_models_gpu`, exactly as
core does for its own ControlNets and CLIP vision: ComfyUI counts it in
`current_loaded_models` with its real size (the parameter and buffer bytes), asks
for room before moving it, evicts it when its own models need memory, and unloads
it on "Unload models" / `POST /free`. We chose this over the lighter pattern of
core's ImageUpscaleWithModel (free memory, run, move back) because it lets ComfyUI
keep our networks on the GPU between runs while still being able to take the
memory back. Our networks use plain torch layers, which ComfyUI cannot stream in
part (lowvram), so they are always loaded whole (`force_full_load`). Each one sits
in a small container module, so the patcher's bookkeeping attributes never collide
with a library's own (diffusers models have a read-only `device`).

Outside ComfyUI the same calls fall back to a plain per-device cache: the network
moves to the device at first use and stays there until `release_all()`.

When ComfyUI unloads all models (the button, `POST /free`) our cache is dropped
too, so the RAM copies go as well.
"""
import logging
import threading

from . import comfy, device

log = logging.getLogger("PoseForge")
_cache = {}
_lock = threading.RLock()
_hooked = False


class Resident:
    """One cached network: `net` (a torch module) and, inside ComfyUI, its patcher."""

    def __init__(self, key, net):
        self.key = key
        self.net = net
        self.patcher = None

    @property
    def size(self):
        """Bytes of parameters and buffers (what ComfyUI counts)."""
        return sum(t.nelement() * t.element_size() for t in self.net.state_dict().values())

    def __repr__(self):
        return f"Resident({self.key!r}, {self.size / 2 ** 20:.1f} MiB)"


def get(key, load):
    """The network cached under `key`, built by `load()` (a torch module, on CPU) the first time."""
    return get_group({None: key}, lambda: {None: load()})[None]


def get_group(keys, load):
    """{name: Resident} for networks that load together (the parts of one checkpoint):
    `keys` {name: cache key}; `load()` -> {name: torch module}, called only when one is missing."""
    with _lock:
        found = {name: _cache.get(k) for name, k in keys.items()}
    if all(found.values()):
        return found
    _hook_host()
    nets = load()
    with _lock:
        for name, k in keys.items():
            nets[name].eval()
            found[name] = _cache.setdefault(k, Resident(k, nets[name]))
    return found


def use(*residents):
    """Bring `residents` onto the compute device for one phase of work; returns their
    modules as a tuple, in order."""
    mm = comfy.module("comfy.model_management")
    if mm is None:
        dev = device.torch_device()
        for r in residents:
            if not _already_on(r.net, dev):
                r.net.to(dev)
    else:
        mm.load_models_gpu([_patcher(r, mm) for r in residents], force_full_load=True)
    return tuple(r.net for r in residents)


def _already_on(net, dev):
    """True when `net`'s weights sit on `dev` (skips a .to(), which some libraries make costly)."""
    first = next(iter(net.parameters()), None)
    if first is None:
        return False
    here = first.device
    return here.type == dev.type and (here.index or 0) == (dev.index or 0)


def _patcher(resident, mm):
    if resident.patcher is None:
        import torch

        ModelPatcher = comfy.module("comfy.model_patcher").ModelPatcher
        holder = torch.nn.Module()
        holder.net = resident.net
        holder.pf_key = resident.key
        resident.patcher = ModelPatcher(holder, load_device=mm.get_torch_device(),
                                        offload_device=mm.unet_offload_device())
    return resident.patcher


def release_all():
    """Drop every cached network (ComfyUI has already moved them off the device)."""
    with _lock:
        if not _cache:
            return
        log.info("PoseForge: releasing %d cached model(s)", len(_cache))
        dropped = list(_cache.values())
        _cache.clear()
    mm = comfy.module("comfy.model_management")
    if mm is not None:
        ours = {id(r.patcher) for r in dropped if r.patcher is not None}
        for loaded in list(mm.current_loaded_models):
            if id(loaded.model) in ours:
                loaded.model_unload()
                mm.current_loaded_models.remove(loaded)
    import gc

    del dropped
    gc.collect()
    if mm is not None:
        mm.soft_empty_cache()


def cached_keys():
    with _lock:
        return list(_cache)


def _hook_host():
    """Chain our release onto ComfyUI's unload_all_models, once."""
    global _hooked
    mm = comfy.module("comfy.model_management")
    if _hooked or mm is None:
        return
    original = mm.unload_all_models

    def unload_all_models(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        finally:
            release_all()

    unload_all_models.__wrapped__ = original
    mm.unload_all_models = unload_all_models
    _hooked = True


def registered():
    """Our networks ComfyUI's memory manager currently holds: [{"model", "bytes"}] (empty outside ComfyUI)."""
    mm = comfy.module("comfy.model_management")
    if mm is None:
        return []
    return [{"model": _label(loaded.model.model.pf_key), "bytes": loaded.model_memory()}
            for loaded in mm.current_loaded_models
            if loaded.model is not None and hasattr(loaded.model.model, "pf_key")]


def _label(key):
    """'openpose/body', 'codeformer', 'sdxl/unet/auto': a cache key without its file paths."""
    import os

    return "/".join(part for part in key if isinstance(part, str) and not os.path.isabs(part))
