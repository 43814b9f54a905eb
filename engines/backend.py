"""The backend policy every generating node shares: local | auto | segmind.

- local (the default): run here; missing model files -> an error naming each file
  and folder. Nothing leaves the machine.
- segmind: call the API; no key (or offline) -> an error saying what to do.
- auto: local when the needed files are present; else Segmind when a key is set
  (setting a key is the opt-in) and ComfyUI was not started with --offline /
  partner nodes disabled; else the local error.
"""
import logging
import os

from ..host import comfy, models
from ..segmind import key

log = logging.getLogger("PoseForge")
CHOICES = ["local", "auto", "segmind"]
DEFAULT = "local"


class BackendUnavailable(RuntimeError):
    pass


def input_spec():
    return (CHOICES, {"default": DEFAULT, "tooltip": (
        "local: run on this machine (nothing is sent anywhere). segmind: Segmind's paid API. "
        "auto: local when the model files are present, else Segmind if a SEGMIND_API_KEY is set. "
        "The key is never stored in the graph.")})


def segmind_blocked():
    """Why the hosted API may not be used now, or None."""
    args = comfy.args()
    for flag in ("offline", "disable_partner_nodes", "disable_api_nodes"):
        if args is not None and getattr(args, flag, False):
            return f"ComfyUI was started with --{flag.replace('_', '-')}"
    if os.environ.get("POSEFORGE_OFFLINE", "").lower() in ("1", "true", "yes"):
        return "POSEFORGE_OFFLINE is set"
    return None


def _segmind_problem():
    blocked = segmind_blocked()
    if blocked:
        return f"Segmind is disabled: {blocked}."
    if not key.api_key():
        return "No Segmind API key is set. " + key.HOW_TO_SET
    return None


def choose(requested, local_files):
    """'local' or 'segmind' for `requested`, given the local model files needed
    [(folder, filename, source)]; raises an actionable error otherwise."""
    if requested not in CHOICES:
        raise BackendUnavailable(f"Unknown backend {requested!r}; choose one of {', '.join(CHOICES)}.")
    if requested == "segmind":
        problem = _segmind_problem()
        if problem:
            raise BackendUnavailable(problem)
        return "segmind"
    absent = models.missing(local_files)
    if not absent:
        return "local"
    hint = None
    if requested == "auto":
        problem = _segmind_problem()
        if problem is None:
            return "segmind"
        hint = "Segmind fallback not possible: " + problem
    raise models.MissingModelFiles(absent, hint=hint)


def report(node, backend, **details):
    """Log which backend ran and return the node's `ui` entries saying so."""
    details = {k: key.redact(v) if isinstance(v, str) else v for k, v in details.items()}
    extra = "".join(f", {k}={v}" for k, v in details.items())
    log.info("PoseForge %s ran on %s%s", node, backend, extra)
    return {"backend": [backend], **{k: v if isinstance(v, list) else [v] for k, v in details.items()}}


def run(node, requested, engine, request):
    """Choose the backend for `engine` (a module with `files(request)`, `local(request)`
    and `segmind(request)`, each returning (outputs tuple, details dict)), run it, and
    return the node's {"ui", "result"}."""
    chosen = choose(requested, engine.files(request))
    outputs, details = getattr(engine, chosen)(request)
    return {"ui": report(node, chosen, **details), "result": outputs}
