"""The one way the pack opens a weight file: safely, into a plain state dict.

safetensors files are read with safetensors; everything else with
`torch.load(weights_only=True)`, which refuses pickled code. Inside ComfyUI,
`comfy.utils.load_torch_file(safe_load=True)` does the same (and knows its own
formats). The state dict is then handed to the library that builds the network:
no library's own bare `torch.load` ever sees a user's file.
"""
import os

from . import comfy

SAFETENSORS = (".safetensors", ".sft")


class WeightFileError(ValueError):
    pass


def load(path):
    """The tensors in `path` (a dict; nested dicts such as {'params_ema': {...}} are kept)."""
    utils = comfy.module("comfy.utils")
    try:
        if utils is not None and hasattr(utils, "load_torch_file"):
            return utils.load_torch_file(path, safe_load=True)
        if path.lower().endswith(SAFETENSORS):
            from safetensors.torch import load_file

            return load_file(path, device="cpu")
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets one clear message
        raise WeightFileError(f"Cannot read the weight file {path} ({os.path.getsize(path) if os.path.exists(path) else 0} "
                              f"bytes): {type(exc).__name__}: {str(exc)[:300]}. Is it complete and a real weight "
                              "file (a .safetensors, or a .pth/.bin holding only tensors)?") from exc


def identity(path):
    """Cache identity of a weight file or folder: real path, size and modification time."""
    st = os.stat(path)
    return os.path.realpath(path), st.st_size, st.st_mtime_ns


def strip_prefix(state_dict, prefix):
    """`state_dict` with `prefix` removed from every key that has it (e.g. 'module.')."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


WRAPPERS = ("params_ema", "params", "state_dict", "model")
MAX_DEPTH = 8  # nested dicts a weight file may hold (real ones: 2 or 3)
MAX_TENSORS = 100_000  # tensors named in one file (SDXL: about 2,600)


def unwrap(state):
    """The state dict inside the first of the usual wrappers `state` has ({'params_ema': {...}}, a
    Lightning .ckpt's 'state_dict'), else `state`."""
    return next((state[w] for w in WRAPPERS if isinstance(state.get(w), dict)), state)


def keys(path):
    """The tensor names in `path`, looking inside the usual wrappers ({'params_ema': {...}}),
    without reading the tensors (safetensors header, or a memory-mapped torch file)."""
    return list(shapes(path))


def shapes(path):
    """{tensor name: shape} of `path` without reading the tensors. Inside a wrapper
    ({'params_ema': {...}}) the inner names; other nested dicts ({'image_proj': {...}})
    are flattened with dots, as a safetensors file of the same model names them."""
    try:
        if path.lower().endswith(SAFETENSORS):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - an unreadable file gets one clear message
        raise WeightFileError(f"Cannot read the weight file {path}: {type(exc).__name__}: {str(exc)[:300]}") from exc
    if not isinstance(state, dict):
        raise WeightFileError(f"{path} holds a {type(state).__name__}, not a dict of tensors.")
    out = {}
    _flat(unwrap(state), "", 0, set(), out, path)
    return out


def _flat(state, prefix, depth, seen, out, path):
    """Nested dicts of tensors into `out` {dotted name: shape}, bounded: a dict reached twice (a small
    file of shared references would make the walk exponential), more than MAX_DEPTH levels or more
    than MAX_TENSORS tensors are refused."""
    if id(state) in seen or depth > MAX_DEPTH:
        raise WeightFileError(f"{path} is no weight file: its dicts are "
                              + ("shared between entries" if id(state) in seen else f"nested over {MAX_DEPTH} deep")
                              + ", which no model's weights are.")
    seen.add(id(state))
    for name, value in state.items():
        if isinstance(value, dict):
            _flat(value, f"{prefix}{name}.", depth + 1, seen, out, path)
        elif hasattr(value, "shape"):
            out[f"{prefix}{name}"] = tuple(value.shape)
            if len(out) > MAX_TENSORS:
                raise WeightFileError(f"{path} names over {MAX_TENSORS} tensors: no model file this pack reads does.")
