"""The pack's HTTP routes inside ComfyUI's server. They answer only booleans, labels and prices:
never a key, a path or an environment value.

GET /poseforge/status -> {"segmind_key": bool, "segmind_blocked": label | null,
                          "codeformer_files": bool, "loaded": [{"model": label, "bytes"}]}
  whether a Segmind key is configured (never the key), why Segmind is off, whether CodeFormer's
  local files are there (a PF_CodeFormer on `auto` runs on Segmind otherwise), and which of our
  networks ComfyUI's memory manager holds (what POST /free releases);
GET /poseforge/prices -> {"as_of", "source", "endpoints": {name: {"cost_usd", "typical_seconds",
                          "confirmed"}}}: the endpoint table's prices;
POST /poseforge/plan {"prompt": API-format graph, "nodes": [ids]} -> {"plans": {id: plan}}: what each
  generating node will do (engines/plan.py: the run's own backend choice and checks), the backend,
  Segmind's endpoint, jobs and price, or why it would stop; messages without file paths;
GET /poseforge/pose_tables -> how pose maps are drawn (limbs, colours, parts, bounds, BODY_25's
  conversion), so the editor draws as the server does.
"""
import asyncio
import json
import re
import sys

from ..engines import backend, codeformer, plan, pose
from . import NODE_CLASS_MAPPINGS
from ..host import residency
from ..segmind import endpoints, key


def status():
    return {"segmind_key": bool(key.api_key()), "segmind_blocked": backend.segmind_blocked(),
            "codeformer_files": codeformer.ready(), "loaded": residency.registered()}


def prices():
    try:
        return endpoints.price_list()
    except endpoints.EndpointsFileError as exc:  # said in words without the file's path
        return {"error": exc.reason, "endpoints": {}}


PLAN_BYTES = 4 * 2 ** 20  # a graph posted to /poseforge/plan
MAX_PLANS = 64  # nodes planned in one request
_PATH = re.compile(r"(?:[A-Za-z]:)?[\\/](?:[^\s'\"(),;:\\/]+[\\/])+([^\s'\"(),;:\\/]*)")


def without_paths(text):
    """`text` with every absolute path cut to its last part (a file's name, not where it lies)."""
    return _PATH.sub(lambda m: m.group(1) or "", text)


def plans(body):
    """/poseforge/plan's answer to `body`."""
    graph, ids = (body.get("prompt"), body.get("nodes")) if isinstance(body, dict) else (None, None)
    if not isinstance(graph, dict) or not isinstance(ids, list):
        return {"error": 'post {"prompt": the API-format graph, "nodes": [node ids]}'}
    classes = {name: cls for name, cls in NODE_CLASS_MAPPINGS.items()}
    found = {}
    for node_id in ids[:MAX_PLANS]:
        kind = graph.get(str(node_id), {}).get("class_type") if isinstance(graph.get(str(node_id)), dict) else None
        if hasattr(classes.get(kind), "ENGINE"):
            answer = plan.plan(classes, graph, node_id)
            if answer.get("refused"):
                answer["refused"] = key.redact(without_paths(answer["refused"]))
            found[str(node_id)] = answer
    return {"plans": found}


def register():
    """Add the routes when running inside ComfyUI's server (no-op elsewhere)."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return
    from aiohttp import web

    @instance.routes.get("/poseforge/status")
    async def poseforge_status(request):  # it reads model folders: in a thread, never on the event loop
        return web.json_response(await asyncio.get_running_loop().run_in_executor(None, status))

    @instance.routes.get("/poseforge/prices")
    async def poseforge_prices(request):
        return web.json_response(prices())

    @instance.routes.post("/poseforge/plan")
    async def poseforge_plan(request):
        raw = await request.content.read(PLAN_BYTES + 1)
        if len(raw) > PLAN_BYTES:
            return web.json_response({"error": f"a graph of over {PLAN_BYTES} bytes is not planned"}, status=413)
        try:
            body = json.loads(raw)
        except ValueError:
            return web.json_response({"error": "not JSON"}, status=400)
        return web.json_response(await asyncio.get_running_loop().run_in_executor(None, plans, body))

    @instance.routes.get("/poseforge/pose_tables")
    async def poseforge_pose_tables(request):
        return web.json_response(pose.tables())
