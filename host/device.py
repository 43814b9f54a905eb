"""Device and dtype choice: ComfyUI's model management inside the host."""
from . import comfy


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


def dtype_for(device, half_ok=True):
    """fp16 on CUDA/MPS when the network tolerates it, fp32 elsewhere."""
    import torch

    if not half_ok or device.type == "cpu":
        return torch.float32
    mm = comfy.module("comfy.model_management")
    if mm is not None and not mm.should_use_fp16(device):
        return torch.float32
    return torch.float16
