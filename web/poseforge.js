// PoseForge in the graph editor: under each PF_ node, which backend ran last (and, for Segmind,
// the cost and credits it reported, from the node's `ui` output via the `executed` event). Before
// a run, what each generating node will do is the server's answer, never a guess here: POST
// /poseforge/plan runs the run's own backend choice and checks on the exported graph (again when
// it changes) and says the backend, Segmind's endpoint, jobs and price (labelled as an estimate
// with the price list's date, a note when the endpoint's fields are unconfirmed), or why the run
// would stop (a LoRA, a local-only scheduler, a drawn pose, no key) for a node not set to local.
// During a Segmind run ComfyUI's own progress bar and progress text show the time against
// Segmind's typical time. GET /poseforge/status says only whether a key is set, never the key.
// The lines are a DOM widget at the node's foot, so both of the frontend's node renderings show
// them (its Vue nodes paint no onDrawForeground).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PREFIX = "PF_";
const PLANNED = ["PF_SDXLText2Image", "PF_SDXLOpenPose", "PF_CodeFormer"];
const PLAN_EVERY = 1000; // ms between looks at whether the graph changed
let status = null;
let lastPlanned = null;

async function refresh() {
  try {
    status = await (await api.fetchApi("/poseforge/status")).json();
  } catch {
    status = null; // an older server without the routes: show nothing rather than guess
  }
}

// Ask the server what each generating node will do, when the exported graph has changed.
export async function refreshPlans(force = false) {
  const nodes = (app.graph?._nodes ?? []).filter((n) => PLANNED.includes(n.type));
  if (!nodes.length) return;
  const { output } = await app.graphToPrompt();
  const body = JSON.stringify({ prompt: output, nodes: nodes.map((n) => String(n.id)) });
  if (body === lastPlanned && !force) return;
  lastPlanned = body;
  try {
    const answer = await (await api.fetchApi("/poseforge/plan", { method: "POST", body })).json();
    for (const node of nodes) node.pfPlan = answer.plans?.[String(node.id)] ?? null;
  } catch {
    for (const node of nodes) node.pfPlan = null;
  }
  showAll();
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

// The estimate shown before a run, e.g. "Segmind est. $0.016 for this run (2 × $0.008; price list
// of 2026-11-21)"; "" when the server's plan is not Segmind.
export function priceText(node) {
  const plan = node.pfPlan;
  if (plan?.backend !== "segmind") return "";
  const parts = [];
  if (plan.unit_cost_usd == null) parts.push(`Segmind ${plan.endpoint}: price not published`);
  else {
    const per = node.type === "PF_SDXLText2Image" ? "this run" : "each image of the batch";
    parts.push(`Segmind est. $${plan.cost_usd} for ${per} (${plan.jobs} × $${plan.unit_cost_usd}; price list of ${plan.as_of})`);
  }
  if (!plan.confirmed) parts.push(`${plan.endpoint}'s fields are unconfirmed by Segmind`);
  return parts.join(" · ");
}

// Why a node not set to local would stop before doing anything (the plan's first line), or "".
export function refusalText(node) {
  const refused = node.pfPlan?.refused;
  if (!refused || widget(node, "backend")?.value === "local") return "";
  const line = String(refused).split("\n")[0];
  return line.length > 140 ? `${line.slice(0, 139)}…` : line;
}

function keyWarning(node) {
  const backend = widget(node, "backend");
  if (!backend || backend.value === "local" || !status) return "";
  if (status.segmind_blocked) return `Segmind disabled: ${status.segmind_blocked}`;
  return status.segmind_key ? "" : "no Segmind key set (SEGMIND_API_KEY)";
}

// The node's lines (last run, price, why a run would stop or the key is missing), kept as
// pfPriceText/pfRefusalText too, shown in its status widget; the node grows to show them.
function show(node) {
  node.pfPriceText = priceText(node);
  node.pfRefusalText = refusalText(node);
  const lines = [[node.pfLastRun, "#8c8"], [node.pfPriceText, "#cc8"], [node.pfRefusalText || keyWarning(node), "#e88"]]
    .filter(([t]) => t);
  const element = node.pfStatus;
  const key = JSON.stringify(lines);
  if (!element || element.dataset.shown === key) return;
  element.dataset.shown = key;
  element.replaceChildren(...lines.map(([text, colour]) => {
    const line = document.createElement("div");
    line.textContent = text;
    line.title = text;
    line.style.cssText = `color:${colour};white-space:nowrap;overflow:hidden;text-overflow:ellipsis`;
    return line;
  }));
  const needed = node.computeSize?.()[1];
  if (needed > node.size[1]) node.setSize([node.size[0], needed]);
  node.setDirtyCanvas?.(true, true);
}

function showAll() {
  for (const node of app.graph?._nodes ?? []) if (node.pfStatus) show(node);
}

app.registerExtension({
  name: "PoseForge.status",

  async setup() {
    await refresh();
    api.addEventListener("executed", ({ detail }) => {
      const node = app.graph?.getNodeById(Number(String(detail?.node).split(":").pop()));
      if (!node || !node.type?.startsWith(PREFIX)) return;
      node.pfLastRun = lastRun(detail.output ?? {});
      show(node);
    });
    api.addEventListener("reconnected", () => { refresh().then(showAll); refreshPlans(true); });
    setInterval(() => { showAll(); refreshPlans().catch(() => {}); }, PLAN_EVERY);
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith(PREFIX)) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = created?.apply(this, arguments);
      const element = document.createElement("div");
      element.className = "pf-status";
      element.style.cssText = "font:11px sans-serif;line-height:14px;pointer-events:none;overflow:hidden";
      const widget = this.addDOMWidget("pf_status", "pf_status", element, {
        serialize: false, getValue: () => undefined, setValue: () => {},
        getMinHeight: () => 14 * element.childElementCount, getMaxHeight: () => 14 * element.childElementCount,
      });
      widget.serialize = false;
      this.pfStatus = element;
      show(this);
      return result;
    };
  },
});
