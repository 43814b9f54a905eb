"""Memory hand-off: a cache of loaded models that ComfyUI can empty.

Loaded networks are kept between runs (keyed by file and device). Before a large
load we ask ComfyUI to free that much memory on the device; when ComfyUI unloads
its models (the "Free model and node cache" button, POST /free, memory pressure)
our cache is released too.
"""
import logging
import threading

from . import comfy

log = logging.getLogger("PoseForge")
_cache = {}
_lock = threading.RLock()
_hooked = False


def cached(key, load, device=None, size_bytes=0):
    """The model cached under `key`, loading it with `load()` the first time."""
    with _lock:
        if key in _cache:
            return _cache[key]
    _hook_host()
    if device is not None and size_bytes:
        make_room(size_bytes, device)
    model = load()
    with _lock:
        return _cache.setdefault(key, model)


def make_room(size_bytes, device):
    """Ask ComfyUI to free `size_bytes` on `device` before we load there."""
    mm = comfy.module("comfy.model_management")
    if mm is not None and getattr(device, "type", "cpu") != "cpu":
        mm.free_memory(size_bytes, device)


def release_all():
    """Drop every cached model and return the freed memory to the device."""
    with _lock:
        if not _cache:
            return
        log.info("PoseForge: releasing %d cached model(s)", len(_cache))
        _cache.clear()
    import gc

    gc.collect()
    mm = comfy.module("comfy.model_management")
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
