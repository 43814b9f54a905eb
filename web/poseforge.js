// PoseForge in the graph editor: under each PF_ node, which backend ran last (and, for
// Segmind, the cost and credits it reported, from the node's `ui` output via the
// `executed` event), and a warning on nodes set to segmind/auto when no Segmind key is
// configured. GET /poseforge/status says only whether a key is set, never the key.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PREFIX = "PF_";
let status = null;

async function refreshStatus() {
  try {
    status = await (await api.fetchApi("/poseforge/status")).json();
  } catch {
    status = null; // an older server without the route: show nothing rather than guess
  }
}

function lastRun(output) {
  const first = (name) => (Array.isArray(output[name]) ? output[name][0] : undefined);
  const parts = [];
  if (first("backend")) parts.push(`ran on ${first("backend")}`);
  if (first("x-cost") !== undefined) parts.push(`cost $${first("x-cost")}`);
  if (first("x-remaining-credits") !== undefined) parts.push(`credits left ${first("x-remaining-credits")}`);
  if (first("segmind_ignores")) parts.push(`Segmind ignored: ${first("segmind_ignores")}`);
  return parts.join(" · ");
}

function keyWarning(node) {
  const backend = node.widgets?.find((w) => w.name === "backend");
  if (!backend || backend.value === "local" || !status) return "";
  if (status.segmind_blocked) return `Segmind disabled: ${status.segmind_blocked}`;
  return status.segmind_key ? "" : "no Segmind key set (SEGMIND_API_KEY)";
}

app.registerExtension({
  name: "PoseForge.status",

  async setup() {
    await refreshStatus();
    api.addEventListener("executed", ({ detail }) => {
      const node = app.graph?.getNodeById(Number(String(detail?.node).split(":").pop()));
      if (!node || !node.type?.startsWith(PREFIX)) return;
      node.pfLastRun = lastRun(detail.output ?? {});
      node.setDirtyCanvas(true, true);
    });
    api.addEventListener("reconnected", refreshStatus);
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith(PREFIX)) return;
    const drawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      drawForeground?.apply(this, arguments);
      if (this.flags?.collapsed) return;
      const warning = keyWarning(this);
      const text = [this.pfLastRun, warning].filter(Boolean).join(" · ");
      if (!text) return;
      ctx.save();
      ctx.font = "11px sans-serif";
      ctx.fillStyle = warning ? "#e88" : "#8c8";
      ctx.fillText(text, 6, this.size[1] + 14);
      ctx.restore();
    };
  },
});
