"""The pack's HTTP routes inside ComfyUI's server. They answer only booleans, labels and prices:
never a key, a path or an environment value.

GET /poseforge/status -> {"segmind_key": bool, "segmind_blocked": label | null,
                          "codeformer_files": bool, "loaded": [{"model": label, "bytes"}]}
  whether a Segmind key is configured (never the key), why Segmind is off, whether CodeFormer's
  local files are there (a PF_CodeFormer on `auto` runs on Segmind otherwise), and which of our
  networks ComfyUI's memory manager holds (what POST /free releases);
GET /poseforge/prices -> {"as_of", "source", "endpoints": {name: {"cost_usd", "typical_seconds",
                          "confirmed"}}}: the endpoint table's prices, for the estimate a node
  shows before a Segmind run.
"""
import asyncio
import sys

from ..engines import backend, codeformer
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
