"""The backend policy every generating node shares: local | auto | segmind.

- local (the default): run here; missing model files -> an error naming each file
  and folder. Nothing leaves the machine.
- segmind: call the API; no key (or offline), or a graph Segmind cannot run (a LoRA, a
  local-only scheduler, a value outside Segmind's range) -> an error saying what to
  do, before anything is sent.
- auto: local when the needed files are present; else Segmind when a key is set
  (setting a key is the opt-in), ComfyUI was not started with a flag that turns
  hosted APIs off, and Segmind can run the graph; else the local error, saying why
  Segmind was not used.

An engine (engines/<family>.py) is a module with:
- `files(request)` -> {role: (folder, file name, where to get it)}: the local files;
- `local(request, paths)` -> (outputs, details), `paths` {role: path}, resolved once here;
- `segmind_jobs(request)` -> (endpoint, [job params], [input names Segmind ignores]),
  raising a ValueError when Segmind cannot run the request;
- `segmind(request)` -> (outputs, details).
A request is the node's inputs under the node's own names.
"""
import logging
import math
import os

from ..host import comfy, models
from ..segmind import endpoints, key

log = logging.getLogger("PoseForge")
CHOICES = ["local", "auto", "segmind"]
DEFAULT = "local"
OFF_FLAGS = ("disable_api_nodes", "offline", "disable_partner_nodes")  # 0.3.64 has the first; later ones all


class BackendUnavailable(RuntimeError):
    pass


class NotFinite(ValueError):
    pass


def input_spec():
    return (CHOICES, {"default": DEFAULT, "tooltip": (
        "local: run on this machine (nothing is sent anywhere). segmind: Segmind's paid API. "
        "auto: local when the model files are present, else Segmind if a SEGMIND_API_KEY is set. "
        "The key is never stored in the graph.")})


def segmind_blocked():
    """Why the hosted API may not be used now, or None."""
    args = comfy.args()
    for flag in OFF_FLAGS:
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
        return key.missing_message()
    return None


def segmind_check(engine, request):
    """Raise (a ValueError naming the input) when Segmind cannot run `request`: checked before
    anything is sent, against the endpoint table's ranges and choices."""
    endpoint, jobs, _ = engine.segmind_jobs(request)
    for job in jobs:
        endpoints.build_body(endpoint, job)


def choose(requested, local_files, check=None):
    """'local' or 'segmind' for `requested`, given the local model files needed
    [(folder, filename, source)] and `check()` (raises a ValueError when Segmind cannot run
    the request); raises an actionable error otherwise."""
    if requested not in CHOICES:
        raise BackendUnavailable(f"Unknown backend {requested!r}; choose one of {', '.join(CHOICES)}.")
    if requested == "segmind":
        problem = _segmind_problem()
        if problem:
            raise BackendUnavailable(problem)
        if check:
            check()
        return "segmind"
    absent = models.missing(local_files)
    if not absent:
        return "local"
    hint = None
    if requested == "auto":
        problem = _segmind_problem()
        if problem is None and check:
            try:
                check()
            except ValueError as exc:
                problem = f"Segmind cannot run this graph: {exc}"
        if problem is None:
            return "segmind"
        hint = "Segmind fallback not possible: " + problem
    raise models.MissingModelFiles(absent, hint=hint)


def segmind_run(endpoint, jobs):
    """Run `jobs` on Segmind with ComfyUI's progress bar and progress text: the time gone against
    Segmind's typical time for the endpoint (4 requests at once), and how many are done."""
    from ..host.progress import Progress
    from ..segmind.client import Client

    client = Client()
    typical = endpoints.endpoint(endpoint).get("typical_seconds")
    expected = (typical or 10.0) * math.ceil(len(jobs) / client.max_workers)
    with Progress(100, "Segmind") as bar:
        def on_wait(elapsed, done, total):
            bar.set(100 * max(done / total, min(elapsed / expected, 0.95)))
            against = f" of ~{expected:.0f} s typical" if typical else ""
            count = f", {done} of {total} done" if total > 1 else ""
            bar.text(f"Segmind {endpoint}: {elapsed:.0f} s{against}{count}")

        out, info = client.run(endpoint, jobs, on_wait)
        bar.set(100)
    return out, info


def report(node, backend, **details):
    """Log which backend ran and return the node's `ui` entries saying so."""
    details = {k: key.redact(v) if isinstance(v, str) else v for k, v in details.items()}
    extra = "".join(f", {k}={v}" for k, v in details.items())
    log.info("PoseForge %s ran on %s%s", node, backend, extra)
    return {"backend": [backend], **{k: v if isinstance(v, list) else [v] for k, v in details.items()}}


def defaults(node):
    """{input name: default} of a node class's INPUT_TYPES, the one place defaults live (a combo
    without one starts at its first choice, as in ComfyUI)."""
    found = {}
    for section in ("required", "optional"):
        for name, spec in node.INPUT_TYPES().get(section, {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if "default" in options:
                found[name] = options["default"]
            elif isinstance(spec[0], list) and spec[0]:
                found[name] = spec[0][0]
    return found


def changed(node, request, names):
    """Of `names` (inputs Segmind ignores), those set to something else than the node's default (or,
    for an input without one, connected); names that are no input of the node (a setting of a
    connected handle) are kept."""
    known = defaults(node)
    inputs = {name for section in node.INPUT_TYPES().values() if isinstance(section, dict) for name in section}
    return [n for n in names if (request.get(n) != known[n] if n in known else
                                 request.get(n) is not None if n in inputs else True)]


def check_finite(request):
    """NaN and infinity pass ComfyUI's range checks (every comparison is false): refused here."""
    for name, value in request.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise NotFinite(f"{name} is {value}: it must be a finite number.")


def decide(node, engine, inputs):
    """(request, "local" | "segmind", the local files wanted) for `inputs` of `node` (the node class:
    the defaults of the inputs a caller left out; ComfyUI passes them all): every check made before
    anything runs or is sent, raising what the run would. The run and the editor's plan
    (engines/plan.py) both decide here."""
    request = dict(defaults(node), **inputs)
    requested = request.pop("backend")
    check_finite(request)
    wanted = engine.files(request)
    return request, choose(requested, list(wanted.values()), lambda: segmind_check(engine, request)), wanted


def run(node, engine, inputs):
    """Choose the backend for `engine` (see the module docstring) by the `backend` input, run it,
    and return the node's {"ui", "result"}. `node` is the node class: its id and its defaults."""
    request, chosen, wanted = decide(node, engine, inputs)
    if chosen == "local":
        outputs, details = engine.local(request, models.require(wanted))
    else:
        outputs, details = engine.segmind(request)
        ignored = changed(node, request, details.pop("segmind_ignores", []))
        if ignored:
            details["segmind_ignores"] = ", ".join(ignored)  # report() puts it in the log and the ui
    return {"ui": report(node.NODE_ID, chosen, **details), "result": outputs}
