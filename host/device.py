"""Device choice and out-of-memory handling: ComfyUI's model management inside the host."""
import logging

from . import comfy

log = logging.getLogger("PoseForge")


def torch_device():
    import torch

    mm = comfy.module("comfy.model_management")
    if mm is not None:
        return mm.get_torch_device()
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def oom_errors():
    """The exception types an allocation failure raises on the compute device."""
    import torch

    mm = comfy.module("comfy.model_management")
    found = getattr(mm, "OOM_EXCEPTION", None) if mm is not None else None
    return (found or getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)


def batch_size(gpu_batch):
    """How many items to run at once: `gpu_batch` on an accelerator; 1 on the CPU, where
    batching 512x512 networks measured slower than a loop (0.68x, bench/codeformer.py)."""
    return 1 if torch_device().type == "cpu" else gpu_batch


def halving(run, items, size, what="batch"):
    """run(chunk) over `items` in chunks of `size`, halving the chunk on out-of-memory
    (down to 1, then the error propagates). Returns the concatenated results."""
    out, start = [], 0
    while start < len(items):
        chunk = items[start:start + size]
        try:
            out.extend(run(chunk))
        except oom_errors():
            if size == 1:
                raise
            size = max(1, size // 2)
            log.warning("PoseForge: out of memory, %s size lowered to %d", what, size)
            empty_cache()
            continue
        start += len(chunk)
    return out


def empty_cache():
    mm = comfy.module("comfy.model_management")
    if mm is not None:
        mm.soft_empty_cache()
    else:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
