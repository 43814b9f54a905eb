"""Cancel: ComfyUI's interrupt flag inside the host, a process-wide flag outside it."""
import threading

from . import comfy

_cancel = threading.Event()  # standalone cancel (scripts, tests)

class Cancelled(BaseException):
    """Raised outside ComfyUI when `request_cancel()` was called.

    It derives from BaseException, so that `except Exception` never swallows it. Inside
    ComfyUI the host's own InterruptProcessingException is raised instead: it derives from
    Exception in 0.3.64 (from BaseException in later versions), so no `except Exception` of
    the pack may wrap a loop that steps a progress bar."""

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

