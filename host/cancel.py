"""Cancel: ComfyUI's interrupt flag inside the host, a process-wide flag outside it."""
import threading

from . import comfy

_cancel = threading.Event()  # standalone cancel (scripts, tests)

class Cancelled(BaseException):
    """Raised outside ComfyUI when `request_cancel()` was called.

    Like ComfyUI's own interrupt it derives from BaseException, so that
    `except Exception` never swallows it."""

def request_cancel():
    """Outside ComfyUI: ask the running work to stop at its next check."""
    _cancel.set()

def check_cancel():
    """Raise the host's interrupt exception if the user pressed cancel."""
    mm = comfy.module("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()
    elif _cancel.is_set():
        _cancel.clear()
        raise Cancelled("PoseForge: cancelled")

