"""Access to ComfyUI's own modules when the pack runs inside ComfyUI.

Every host adapter asks here first and falls back to a standalone
implementation when the module is absent (tests, scripts).
"""
import importlib
import sys


def module(name):
    """The host module `name` (e.g. "folder_paths", "comfy.utils"), or None outside ComfyUI."""
    found = sys.modules.get(name)
    if found is not None:
        return found
    if name.split(".")[0] not in ("folder_paths", "comfy", "comfy_execution", "server"):
        raise ValueError(f"not a ComfyUI module: {name}")
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def args():
    """ComfyUI's parsed command-line arguments, or None outside ComfyUI."""
    cli = module("comfy.cli_args")
    return getattr(cli, "args", None) if cli else None
