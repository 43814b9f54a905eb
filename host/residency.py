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
part (lowvram), so `use` loads them whole (`force_full_load`). Each one sits
in a small container module, so the patcher's bookkeeping attributes never collide
with a library's own (diffusers models have a read-only `device`).

`phase(...)` is `use` with a plan: when the networks do not fit the device's free
memory once ComfyUI has offloaded what it can (`free_memory`), or ComfyUI runs with
--lowvram / --novram, the big ones (SDXL's text encoders, UNet and ControlNet) stay in RAM and
their blocks are streamed onto the device as they run (host/streaming.py); the
plan is said once in the log.

Outside ComfyUI the same calls fall back to a plain per-device cache: the network
moves to the device at first use and stays there until `release_all()`.

The cache is safe for several threads (ComfyUI runs one prompt at a time, but routes,
other packs and API users' threads do not): one load runs at a time in the process
(libraries build models inside accelerate's `init_empty_weights`, which patches
torch.nn for everyone while it lasts), a second caller of the same key waits for the
first and takes its result, and `holding(...)` keeps a network for one run when the
run installs something into it (IP-Adapter processors, LoRA weights).

The cache has a RAM budget (`budget()`: half the machine's memory, or
POSEFORGE_RAM_BUDGET_GB): past it, the least recently used groups (the parts of one
checkpoint together) are dropped whole, never one that a run holds. When ComfyUI
unloads all models (the button, `POST /free`) our cache is dropped too.
"""
import contextlib
import logging
import os
import threading
from collections import OrderedDict

from . import comfy, device, streaming

log = logging.getLogger("PoseForge")
BUDGET_ENV = "POSEFORGE_RAM_BUDGET_GB"
_cache = {}  # cache key -> Resident
_groups = OrderedDict()  # tuple of cache keys loaded together -> None, least recently used first
_lock = threading.RLock()  # the two maps above
_loading = threading.RLock()  # one load at a time, process-wide
_outside = {}  # cache key -> (what holds memory outside torch, e.g. an onnxruntime session; its bytes)
_outside_lock = threading.Lock()
_hooked = False


class Resident:
    """One cached network: `net` (a torch module) and, inside ComfyUI, its patcher. `external`: a
    network over tensors ComfyUI's memory manager already placed for this run (local/sdxl_core.py):
    never moved, loaded or counted here, and not cached."""

    def __init__(self, key, net, external=False):
        self.key = key
        self.net = net
        self.external = external
        self.patcher = None
        self.hold = threading.RLock()  # taken for a run that changes the network (see holding)
        self.holders = 0

    @property
    def size(self):
        """Bytes of parameters and buffers (what ComfyUI counts)."""
        return streaming.nbytes(self.net)

    def __repr__(self):
        return f"Resident({self.key!r}, {self.size / 2 ** 20:.1f} MiB)"


def get(key, load):
    """The network cached under `key`, built by `load()` (a torch module, on CPU) the first time."""
    return get_group({None: key}, lambda: {None: load()})[None]


def get_group(keys, load):
    """{name: Resident} for networks that load together (the parts of one checkpoint):
    `keys` {name: cache key}; `load()` -> {name: torch module}, called only when one is missing."""
    group = tuple(keys.values())
    found = _cached(keys, group)
    if found:
        return found
    with _loading:
        found = _cached(keys, group)  # another thread may have loaded it while this one waited
        if found:
            return found
        _hook_host()
        nets = load()
        with _lock:
            found = {}
            for name, k in keys.items():
                nets[name].eval()
                found[name] = _cache.setdefault(k, Resident(k, nets[name]))
            _groups[group] = None
            dropped = _over_budget(keep=group)
    _forget(dropped)
    return found


def _cached(keys, group):
    with _lock:
        found = {name: _cache.get(k) for name, k in keys.items()}
        if not all(found.values()):
            return None
        _groups[group] = None
        _groups.move_to_end(group)
        return found


def budget():
    """Bytes the RAM cache may hold: POSEFORGE_RAM_BUDGET_GB, else half the machine's memory
    (None when neither is known: no limit)."""
    value = os.environ.get(BUDGET_ENV)
    if value:
        try:
            return max(0, int(float(value) * 2 ** 30))
        except ValueError:
            log.warning("PoseForge: %s=%r is not a number of GB; using the default", BUDGET_ENV, value)
    total = _physical_memory()
    return total // 2 if total else None


def _physical_memory():
    try:
        import psutil

        return psutil.virtual_memory().total
    except ImportError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _over_budget(keep):
    """Under _lock: drop least recently used groups until the cache fits the budget; returns
    the dropped Residents. `keep` (the group just loaded) and held groups stay."""
    limit = budget()
    if limit is None:
        return []
    sizes = {k: r.size for k, r in _cache.items()}
    total = sum(sizes.values())
    dropped = []
    for group in list(_groups):
        if total <= limit:
            break
        residents = [_cache[k] for k in group if k in _cache]
        if group == keep or any(r.holders for r in residents):
            continue
        for r in residents:
            del _cache[r.key]
            total -= sizes[r.key]
        del _groups[group]
        dropped += residents
    if dropped:
        log.info("PoseForge: RAM budget %.1f GiB: dropped %d cached network(s) used least recently",
                 limit / 2 ** 30, len(dropped))
    return dropped


@contextlib.contextmanager
def holding(*residents):
    """Keep `residents` for one run: another run that changes them (or would, like a plain run
    on a UNet an IP-Adapter run has its processors in) waits, and the budget does not drop them."""
    ordered = sorted({id(r): r for r in residents if r is not None}.values(), key=lambda r: repr(r.key))
    with contextlib.ExitStack() as stack:
        for r in ordered:
            stack.enter_context(r.hold)
            with _lock:
                r.holders += 1
            stack.callback(_release_hold, r)
        yield


def _release_hold(resident):
    with _lock:
        resident.holders -= 1


def use(*residents):
    """Bring `residents` onto the compute device for one phase of work; returns their
    modules as a tuple, in order."""
    mm = comfy.module("comfy.model_management")
    ours = [r for r in residents if not r.external]
    if mm is None:
        dev = device.torch_device()
        for r in ours:
            if not _already_on(r.net, dev):
                r.net.to(dev)
    elif ours:
        mm.load_models_gpu([_patcher(r, mm) for r in ours], force_full_load=True)
    return tuple(r.net for r in residents)


def free_memory(dev):
    """Bytes free on `dev` for our networks (ComfyUI's own figure inside it, which counts what
    its cache could give back); None for the CPU, whose limit is RAM (the budget's business)."""
    if dev.type == "cpu":
        return None
    mm = comfy.module("comfy.model_management")
    if mm is not None:
        return mm.get_free_memory(dev)
    if dev.type == "cuda":
        import torch

        free, total = torch.cuda.mem_get_info(dev)
        fraction = getattr(torch.cuda, "get_per_process_memory_fraction", lambda d: 1.0)(dev)
        reserved = torch.cuda.memory_reserved(dev)
        free = min(free, int(fraction * total) - reserved)  # a per-process cap counts (an 8 GB card emulated)
        return max(0, free) + reserved - torch.cuda.memory_allocated(dev)  # plus what torch holds unused
    return None


CAST_BLOCK = 256 * 2 ** 20  # bytes cast at a time for a network stored narrower than it computes


def _streaming_asked(mm):
    """ComfyUI started with --lowvram or --novram."""
    states = getattr(mm, "VRAMState", None)
    return states is not None and getattr(mm, "vram_state", None) in (states.LOW_VRAM, states.NO_VRAM)


@contextlib.contextmanager
def phase(residents, streamable=(), reserve=0, what="networks"):
    """`use(residents)` for one phase of work, yielding their modules in order; when they do
    not fit (see the module's docstring) the `streamable` ones are streamed from RAM instead.
    `reserve`: bytes the phase needs beside the weights (activations). A network named twice (one
    ControlNet file in two entries of a run) is one network: loaded and counted once."""
    residents = list({id(r): r for r in residents if r is not None}.values())
    mm = comfy.module("comfy.model_management")
    dev = device.torch_device()
    big = [r for r in residents if any(r is s for s in streamable) and not r.external]
    need = sum(r.size for r in residents if not r.external and not _already_on(r.net, dev)) + reserve
    if mm is not None and dev.type != "cpu":
        mm.free_memory(need + mm.extra_reserved_memory(), dev)  # ComfyUI offloads idle models first
    free = free_memory(dev)
    asked = mm is not None and _streaming_asked(mm)
    moving = [] if not big or (not asked and (free is None or need <= free)) else big
    small = [r for r in residents if all(r is not b for b in moving)]
    use(*small)
    cast = [r.net for r in small if getattr(r.net, "pf_compute_dtype", None) is not None]
    with contextlib.ExitStack() as stack:
        if cast:  # stored narrower than they compute: cast block by block as they run
            stack.enter_context(streaming.streamed(cast, dev, CAST_BLOCK))
        if moving:
            for r in moving:
                _offload(r, mm)
            room = (free or 0) - sum(r.size for r in small) - reserve
            limit = max(2 ** 20, room // 4)  # two granules in flight at most, with room to spare
            log.info("PoseForge: %s streamed from RAM block by block (%s; %.2f GiB needed, %.2f GiB free on %s; "
                     "blocks of at most %.0f MiB)", what, "--lowvram/--novram" if asked else "too little free memory",
                     need / 2 ** 30, (free or 0) / 2 ** 30, dev, limit / 2 ** 20)
            stack.enter_context(streaming.streamed([r.net for r in moving], dev, limit))
        yield tuple(r.net for r in residents)


def _offload(resident, mm):
    """Take `resident` off the compute device (out of ComfyUI's memory manager when it is in)."""
    if mm is not None and resident.patcher is not None:
        for loaded in list(mm.current_loaded_models):
            if loaded.model is resident.patcher:
                loaded.model_unload()
                mm.current_loaded_models.remove(loaded)
    offload = mm.unet_offload_device() if mm is not None else None
    import torch

    resident.net.to(offload or torch.device("cpu"))


def _already_on(net, dev):
    """True when `net`'s weights sit on `dev` (skips a .to(), which some libraries make costly)."""
    first = next(iter(net.parameters()), None)
    if first is None:
        return False
    here = first.device
    return here.type == dev.type and (here.index or 0) == (dev.index or 0)


def patcher(resident):
    """ComfyUI's ModelPatcher of `resident`, for a model ComfyUI loads itself (an additional model of
    one of its own: the IP-Adapter on core's MODEL)."""
    return _patcher(resident, comfy.module("comfy.model_management"))


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


def get_outside(key, load, nbytes):
    """What `load()` makes that holds memory outside torch (an onnxruntime session), cached by `key`
    (one load at a time) and dropped with the Residents (Unload models, POST /free); `registered()`
    lists it with `nbytes`, its size."""
    _hook_host()
    with _outside_lock:
        if key not in _outside:
            _outside[key] = (load(), int(nbytes))
        return _outside[key][0]


def release_all():
    """Drop every cached network (ComfyUI has already moved them off the device)."""
    with _outside_lock:
        outside = len(_outside)
        _outside.clear()
    with _lock:
        if not _cache and not outside:
            return
        log.info("PoseForge: releasing %d cached model(s)", len(_cache) + outside)
        dropped = list(_cache.values())
        _cache.clear()
        _groups.clear()
    _forget(dropped)


def _forget(dropped):
    """Take dropped Residents out of ComfyUI's memory manager and free their memory."""
    if not dropped:
        return
    mm = comfy.module("comfy.model_management")
    if mm is not None:
        ours = {id(r.patcher) for r in dropped if r.patcher is not None}
        for loaded in list(mm.current_loaded_models):
            if id(loaded.model) in ours:
                loaded.model_unload()
                mm.current_loaded_models.remove(loaded)
    import gc

    dropped.clear()
    gc.collect()
    device.empty_cache()


def cached_keys():
    with _lock:
        return list(_cache)


def cached_bytes():
    with _lock:
        return sum(r.size for r in _cache.values())


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
    """Our networks ComfyUI's memory manager currently holds, then what we hold outside torch:
    [{"model", "bytes"}] (the first part empty outside ComfyUI)."""
    mm = comfy.module("comfy.model_management")
    ours = [] if mm is None else [
        {"model": _label(loaded.model.model.pf_key), "bytes": loaded.model_memory()}
        for loaded in mm.current_loaded_models if loaded.model is not None and hasattr(loaded.model.model, "pf_key")]
    with _outside_lock:
        return ours + [{"model": _label(key), "bytes": nbytes} for key, (_, nbytes) in _outside.items()]


def _label(key):
    """'openpose/body', 'codeformer', 'sdxl/unet/fp16': a cache key without its file paths."""
    return "/".join(part for part in key if isinstance(part, str) and not os.path.isabs(part))
