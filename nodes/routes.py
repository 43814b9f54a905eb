"""The pack's HTTP route inside ComfyUI's server.

GET /poseforge/status -> {"segmind_key": bool, "segmind_blocked": str | null,
                          "loaded": [{"model", "bytes"}]}
tells the editor whether a Segmind key is configured (never the key itself) and
which of our networks ComfyUI's memory manager holds (what POST /free releases).
"""
import sys

from ..engines import backend as policy
from ..host import residency
from ..segmind import key


def status():
    return {"segmind_key": bool(key.api_key()), "segmind_blocked": policy.segmind_blocked(),
            "loaded": residency.registered()}


def register():
    """Add the route when running inside ComfyUI's server (no-op elsewhere)."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return
    from aiohttp import web

    @instance.routes.get("/poseforge/status")
    async def poseforge_status(request):
        return web.json_response(status())
