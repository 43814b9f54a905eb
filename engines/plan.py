"""What a generating node will do, answered before it runs (the editor's estimate and warnings):
the run's own decision (backend.decide: the backend chosen, every check made before anything is
sent, Segmind's endpoint and jobs) on the node's widget values and on what its links will carry:
PoseForge's handle nodes evaluated (PF_SDXLLoader, PF_SDXLLoRA, PF_IPAdapter, PF_ControlNet: they load nothing),
a small stand-in for an image, a PF_POSE with a source photo when it comes from
PF_OpenPoseExtract (Segmind's pose models need one) and without one when it was drawn.

A graph is the API format ComfyUI's editor exports ({id: {"class_type", "inputs"}}, a link being
[source id, output slot]).
"""
from ..segmind import endpoints
from . import backend
from .pose import bundle

EVALUATED = ("PF_SDXLLoader", "PF_SDXLLoRA", "PF_IPAdapter", "PF_ControlNet")  # cheap: they name files, hold settings
MAX_DEPTH = 32  # links followed from one node (a graph's links may go round)
STAND_IN_SIDE = 8  # pixels a side of a stand-in image
MODEL = object()  # a stand-in for a model a core loader gives (CLIP_VISION, UPSCALE_MODEL, MODEL, CLIP, VAE)


class PlanError(ValueError):
    pass


def plan(classes, graph, node_id):
    """{"backend": "local" | "segmind" | None, and for Segmind "endpoint", "jobs", "cost_usd" (all jobs,
    None when Segmind publishes no price), "unit_cost_usd", "as_of", "confirmed"; "refused": why the
    run would stop before doing anything, or None}. `classes`: {class_type: node class}."""
    try:
        node = _node(graph, node_id)
        cls = classes[node["class_type"]]
        inputs = inputs_of(classes, graph, node_id, 0)
        defaults = backend.defaults(cls)
        unset = {name: None for name in cls.INPUT_TYPES().get("optional", {}) if name not in defaults}
        if "LATENT" in cls.RETURN_TYPES:  # as the node reads it from the hidden graph
            inputs["latent_out"] = linked(graph, node_id, cls.RETURN_TYPES.index("LATENT"))
        request, chosen, _ = backend.decide(cls, cls.ENGINE, dict(unset, **inputs))  # as the node's call passes them
        if chosen == "local":
            return {"backend": "local", "refused": None}
        endpoint, jobs, _ = cls.ENGINE.segmind_jobs(request)
    except Exception as exc:  # noqa: BLE001 - whatever the run would raise, the plan says it
        return {"backend": None, "refused": str(exc)}
    prices = endpoints.price_list()
    entry, unit = prices["endpoints"][endpoint], prices["endpoints"][endpoint]["cost_usd"]
    return {"backend": "segmind", "endpoint": endpoint, "jobs": len(jobs), "unit_cost_usd": unit,
            "cost_usd": None if unit is None else round(unit * len(jobs), 6), "as_of": prices["as_of"],
            "confirmed": entry["confirmed"], "refused": None}


def linked(graph, node_id, slot):
    """True when an input of some node of `graph` (the API format) takes output `slot` of `node_id`."""
    if not isinstance(graph, dict) or node_id is None:
        return False
    wanted = [str(node_id), slot]
    return any(_is_link(v) and [str(v[0]), v[1]] == wanted for node in graph.values() if isinstance(node, dict)
               for v in (node.get("inputs") or {}).values())


def _node(graph, node_id):
    node = graph.get(str(node_id)) if isinstance(graph, dict) else None
    if not isinstance(node, dict) or not isinstance(node.get("inputs", {}), dict):
        raise PlanError(f"node {node_id} is not in the graph")
    return node


def inputs_of(classes, graph, node_id, depth):
    """The inputs node `node_id` will receive: its widget values, and for each link what it carries."""
    node = _node(graph, node_id)
    declared = _declared(classes.get(node["class_type"]))
    return {name: _carried(classes, graph, value, declared.get(name), depth) if _is_link(value) else value
            for name, value in node.get("inputs", {}).items()}


def _declared(cls):
    """{input name: its type} of a node class."""
    if cls is None:
        return {}
    sections = cls.INPUT_TYPES()
    return {name: spec[0] for part in ("required", "optional") for name, spec in sections.get(part, {}).items()}


def _is_link(value):
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and isinstance(value[0], (str, int))


def _carried(classes, graph, link, kind, depth):
    """What a link into an input of type `kind` will carry."""
    import torch

    if depth >= MAX_DEPTH:
        raise PlanError(f"the graph's links go over {MAX_DEPTH} deep (or round)")
    source_id, slot = str(link[0]), link[1]
    source = _node(graph, source_id)["class_type"]
    if source in EVALUATED and source in classes:
        cls = classes[source]
        return getattr(cls(), cls.FUNCTION)(**inputs_of(classes, graph, source_id, depth + 1))[slot]
    if source == "PF_SDXLFromModel":  # core's networks: what the handle says, on stand-ins
        from .sdxl import from_core

        widgets = inputs_of(classes, graph, source_id, depth + 1)
        return from_core(MODEL, MODEL, MODEL, widgets.get("controlnet", "none"), checked=False)
    image = torch.zeros(1, STAND_IN_SIDE, STAND_IN_SIDE, 3)
    frames = [{"people": [], "canvas_width": STAND_IN_SIDE, "canvas_height": STAND_IN_SIDE}]
    if source == "PF_OpenPoseExtract" and slot == 2:
        return bundle(image, frames, image, inputs_of(classes, graph, source_id, depth + 1).get("detector"))
    if source == "PF_PoseRender" and slot == 1:
        return bundle(image, frames, None)
    if kind in ("CLIP_VISION", "UPSCALE_MODEL", "MODEL", "CLIP", "VAE"):
        return MODEL
    if kind == "MASK":
        return torch.zeros(1, STAND_IN_SIDE, STAND_IN_SIDE)
    if kind == "LATENT":
        return {"samples": torch.zeros(1, 4, STAND_IN_SIDE * 16, STAND_IN_SIDE * 16)}  # within the size bounds
    return image
