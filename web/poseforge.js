// PoseForge in the graph editor: under each PF_ node, which backend ran last (and, for Segmind,
// the cost and credits it reported, from the node's `ui` output via the `executed` event); on
// nodes that will run on Segmind (backend segmind, or auto without the local files) the
// estimated price before the run, from the endpoint table (GET /poseforge/prices) x samples (for
// each image of a batch), labelled as an estimate with the price list's date, and a note when the
// endpoint's fields are unconfirmed; a warning when no Segmind key is configured. During a
// Segmind run ComfyUI's own progress bar and progress text show the time against Segmind's
// typical time. GET /poseforge/status says only whether a key is set, never the key.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PREFIX = "PF_";
let status = null;
let prices = null;

async function refresh() {
  try {
    status = await (await api.fetchApi("/poseforge/status")).json();
    prices = await (await api.fetchApi("/poseforge/prices")).json();
  } catch {
    status = prices = null; // an older server without the routes: show nothing rather than guess
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

const widget = (node, name) => node.widgets?.find((w) => w.name === name);
const linked = (node, name) => node.inputs?.find((i) => i.name === name)?.link != null;

// The Segmind endpoint a node would call, or null (not a Segmind node).
function endpointOf(node) {
  if (node.type === "PF_SDXLText2Image") return "sdxl1.0-txt2img";
  if (node.type === "PF_SDXLOpenPose") return linked(node, "ip_adapter") ? "ip-sdxl-openpose" : "sdxl-openpose";
  if (node.type === "PF_CodeFormer") return "codeformer";
  return null;
}

// Whether the node will run on Segmind: backend segmind, or auto without its local files.
function onSegmind(node) {
  const backend = widget(node, "backend")?.value;
  if (backend === "segmind") return true;
  if (backend !== "auto") return false;
  return node.type === "PF_CodeFormer" ? status?.codeformer_files === false : !linked(node, "sdxl");
}

// The estimate shown before a run, e.g. "Segmind est. $0.016 for this run (2 x $0.008; price list
// of 2026-11-21)", a batch of pose images costing that for each; "" when the node does not run on
// Segmind.
export function priceText(node) {
  const endpoint = endpointOf(node);
  if (!endpoint || !prices || !onSegmind(node)) return "";
  const entry = prices.endpoints?.[endpoint];
  if (!entry) return "";
  const samples = Number(widget(node, "samples")?.value ?? 1) || 1;
  const parts = [];
  if (entry.cost_usd == null) parts.push(`Segmind ${endpoint}: price not published`);
  else {
    const total = Math.round(entry.cost_usd * samples * 1e6) / 1e6;
    const per = node.type === "PF_SDXLText2Image" ? "this run" : "each image of the batch";
    parts.push(`Segmind est. $${total} for ${per} (${samples} × $${entry.cost_usd}; price list of ${prices.as_of})`);
  }
  if (!entry.confirmed) parts.push(`${endpoint}'s fields are unconfirmed by Segmind`);
  return parts.join(" · ");
}

function keyWarning(node) {
  const backend = widget(node, "backend");
  if (!backend || backend.value === "local" || !status) return "";
  if (status.segmind_blocked) return `Segmind disabled: ${status.segmind_blocked}`;
  return status.segmind_key ? "" : "no Segmind key set (SEGMIND_API_KEY)";
}

app.registerExtension({
  name: "PoseForge.status",

  async setup() {
    await refresh();
    api.addEventListener("executed", ({ detail }) => {
      const node = app.graph?.getNodeById(Number(String(detail?.node).split(":").pop()));
      if (!node || !node.type?.startsWith(PREFIX)) return;
      node.pfLastRun = lastRun(detail.output ?? {});
      node.setDirtyCanvas(true, true);
    });
    api.addEventListener("reconnected", refresh);
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith(PREFIX)) return;
    const drawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      drawForeground?.apply(this, arguments);
      if (this.flags?.collapsed) return;
      this.pfPriceText = priceText(this);
      const warning = keyWarning(this);
      const lines = [[this.pfLastRun, "#8c8"], [this.pfPriceText, "#cc8"], [warning, "#e88"]].filter(([t]) => t);
      if (!lines.length) return;
      ctx.save();
      ctx.font = "11px sans-serif";
      lines.forEach(([text, colour], i) => {
        ctx.fillStyle = colour;
        ctx.fillText(text, 6, this.size[1] + 14 + 13 * i);
      });
      ctx.restore();
    };
  },
});
