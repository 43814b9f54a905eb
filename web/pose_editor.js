// PoseForge's pose editor, on PF_PoseRender: the skeleton over the pose's source photo (when a
// connected OpenPose Extract's photo comes from Load Image), joints dragged with the mouse, a
// missing joint added (choose it, click where it goes) or a joint removed (right-click), people
// added and deleted, a person flipped left/right, undo (button or Ctrl+Z). Hands and face points
// are shown and can be dragged too. The pose lives in the node's `pose` widget as POSE_KEYPOINT
// JSON in normalized coordinates, so it is saved with the workflow, survives a reload and travels
// in API-format graphs; PF_PoseRender draws it instead of its keypoints input when it is set.
// Until the first edit the editor shows the connected OpenPose Extract's last result ("from
// extract" copies it in); a pose JSON file dropped on the node is loaded ("save" writes one).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE = "PF_PoseRender";
// How the server draws and reads poses (GET /poseforge/pose_tables: local/pose_render.py's limbs,
// colours, parts, bounds and BODY_25's conversion), fetched once before any node is made.
let TABLES = null;
const JOINTS = ["nose", "neck", "right shoulder", "right elbow", "right wrist", "left shoulder", "left elbow",
  "left wrist", "right hip", "right knee", "right ankle", "left hip", "left knee", "left ankle", "right eye",
  "left eye", "right ear", "left ear"];
const MIRROR = [0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16]; // a joint's left/right twin
const STANDING = [[0.5, 0.14], [0.5, 0.26], [0.41, 0.26], [0.36, 0.42], [0.33, 0.57], [0.59, 0.26], [0.64, 0.42],
  [0.67, 0.57], [0.45, 0.56], [0.45, 0.74], [0.45, 0.92], [0.55, 0.56], [0.55, 0.74], [0.55, 0.92], [0.48, 0.12],
  [0.52, 0.12], [0.46, 0.13], [0.54, 0.13]];
const HIT = 10; // pixels on screen within which a point is picked
const UNDO = 50;

function emptyFrame(width = 512, height = 512) {
  return { people: [], canvas_width: width, canvas_height: height };
}

// A POSE_KEYPOINT frame (the first of a list) in normalized coordinates, from JSON text or an
// object in the layouts comfyui_controlnet_aux and the common OpenPose editors write (a 25-point
// BODY_25 body converted to COCO-18 as the server converts it); null if none.
export function parsePose(source) {
  let found = source;
  if (typeof source === "string") {
    if (!source.trim()) return null;
    try { found = JSON.parse(source); } catch { return null; }
  }
  if (Array.isArray(found)) found = found[0];
  if (!TABLES || !found || typeof found !== "object" || !Array.isArray(found.people)) return null;
  const width = Number(found.canvas_width) || 512, height = Number(found.canvas_height) || 512;
  const kept = found.people.slice(0, TABLES.max_people).filter((p) => p && typeof p === "object");
  let largest = 0; // pixel or normalized coordinates: a loop, as a spread of a big pose overflows the stack
  for (const p of kept) {
    for (const part of Object.keys(TABLES.parts)) {
      for (const [x, y, c] of triplets(p[part])) if (c > 0) largest = Math.max(largest, Math.abs(x), Math.abs(y));
    }
  }
  const pixels = largest > 1.5;
  const people = kept.map((p) => {
    const person = {};
    for (const [part, count] of Object.entries(TABLES.parts)) {
      let points = triplets(p[part]);
      if (part === "pose_keypoints_2d" && points.length === 25) points = TABLES.body_25_to_coco.map((i) => points[i]);
      person[part] = points.length ? points.slice(0, count).flatMap(([x, y, c]) => c > 0
        ? [pixels ? x / width : x, pixels ? y / height : y, 1] : [0, 0, 0]) : null;
    }
    const body = person.pose_keypoints_2d ?? [];
    person.pose_keypoints_2d = body.concat(new Array(Math.max(0, 54 - body.length)).fill(0));
    return person;
  });
  return { people, canvas_width: width, canvas_height: height };
}

function triplets(flat) {
  if (!Array.isArray(flat)) return [];
  const out = [];
  for (let i = 0; i + 2 < flat.length; i += 3) out.push([Number(flat[i]), Number(flat[i + 1]), Number(flat[i + 2])]);
  return out;
}

function rgb([r, g, b], scale = 1) {
  return `rgb(${Math.round(r * scale)},${Math.round(g * scale)},${Math.round(b * scale)})`;
}

function button(label, title, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.title = title;
  b.style.cssText = "font-size:11px;padding:1px 5px;margin:0 2px 2px 0;cursor:pointer";
  b.addEventListener("click", (e) => { e.stopPropagation(); onClick(); });
  return b;
}

class PoseEditor {
  constructor(node, poseWidget) {
    this.node = node;
    this.poseWidget = poseWidget;
    this.undo = [];
    this.person = 0;
    this.drag = null;
    this.photo = null;
    this.photoUrl = null;
    this.element = document.createElement("div");
    this.element.className = "pf-pose-editor";
    this.element.style.cssText = "display:flex;flex-direction:column;width:100%;height:100%;outline:none";
    this.element.tabIndex = 0;
    this.toolbar = document.createElement("div");
    this.toolbar.style.cssText = "display:flex;flex-wrap:wrap;align-items:center";
    this.people = document.createElement("select");
    this.adding = document.createElement("select");
    for (const s of [this.people, this.adding]) {
      s.style.cssText = "font-size:11px;margin:0 2px 2px 0";
      s.addEventListener("pointerdown", (e) => e.stopPropagation());
    }
    this.people.title = "the person the buttons act on";
    this.adding.title = "a missing joint: choose it, then click where it goes";
    this.people.addEventListener("change", () => { this.person = Number(this.people.value); this.refresh(); });
    this.toolbar.append(this.people,
      button("+ person", "add a standing person", () => this.addPerson()),
      button("− person", "delete the chosen person", () => this.deletePerson()),
      button("flip", "mirror the chosen person left/right", () => this.flip()),
      button("undo", "undo the last change (Ctrl+Z)", () => this.stepBack()),
      this.adding,
      button("from extract", "copy the connected OpenPose Extract's last result", () => this.fromExtract()),
      button("load", "load a pose JSON file", () => this.pickFile()),
      button("save", "save this pose as a JSON file", () => this.save()),
      button("clear", "forget the edit: keypoints are drawn again", () => this.commit(null)));
    this.canvas = document.createElement("canvas");
    this.canvas.style.cssText = "flex:1;min-height:0;width:100%;background:#111;touch-action:none;cursor:crosshair";
    this.element.append(this.toolbar, this.canvas);
    this.listen();
    this.refresh();
  }

  // -- the pose: the edit, or (until the first edit) the connected extract's result --------------
  edited() { return this.parsed(this.poseWidget.value); }

  shown() { return this.edited() ?? this.extracted() ?? emptyFrame(); }

  parsed(text) { // parsePose, read again only when the text changes (a click looks at every point)
    if (!this.cache || this.cache.text !== text) this.cache = { text, frame: parsePose(text) };
    return this.cache.frame; // shared: change a copy (working)
  }

  extractNode() {
    const link = this.node.inputs?.find((i) => i.name === "keypoints")?.link;
    const info = link == null ? null : (app.graph.links?.get?.(link) ?? app.graph.links?.[link]);
    return info ? app.graph.getNodeById(info.origin_id) : null;
  }

  extracted() {
    const origin = this.extractNode();
    if (!origin?.pfOpenposeJson) return null;
    if (!this.extractCache || this.extractCache.text !== origin.pfOpenposeJson) {
      this.extractCache = { text: origin.pfOpenposeJson, frame: parsePose(origin.pfOpenposeJson) };
    }
    return this.extractCache.frame;
  }

  commit(frame) {
    this.undo.push(this.poseWidget.value ?? "");
    if (this.undo.length > UNDO) this.undo.shift();
    this.store(frame ? JSON.stringify(frame) : "");
  }

  stepBack() {
    if (this.undo.length) this.store(this.undo.pop());
  }

  store(text) { // the widget the workflow saves, then the picture
    this.poseWidget.value = text;
    this.poseWidget.callback?.(text);
    this.refresh();
    this.node.setDirtyCanvas?.(true, true);
  }

  working() { // a copy of what is shown, to change and commit
    return JSON.parse(JSON.stringify(this.shown()));
  }

  addPerson() {
    const frame = this.working();
    frame.people.push({ pose_keypoints_2d: STANDING.flatMap(([x, y]) => [x, y, 1]), hand_left_keypoints_2d: null,
      hand_right_keypoints_2d: null, face_keypoints_2d: null });
    this.person = frame.people.length - 1;
    this.commit(frame);
  }

  deletePerson() {
    const frame = this.working();
    if (!frame.people.length) return;
    frame.people.splice(this.person, 1);
    this.person = Math.max(0, Math.min(this.person, frame.people.length - 1));
    this.commit(frame);
  }

  flip() {
    const frame = this.working();
    const person = frame.people[this.person];
    if (!person) return;
    const body = triplets(person.pose_keypoints_2d);
    const present = [...body, ...triplets(person.hand_left_keypoints_2d), ...triplets(person.hand_right_keypoints_2d),
      ...triplets(person.face_keypoints_2d)].filter((p) => p[2] > 0);
    if (!present.length) return;
    const xs = present.map((p) => p[0]), centre = (Math.min(...xs) + Math.max(...xs)) / 2;
    const mirror = (points) => points.map(([x, y, c]) => c > 0 ? [2 * centre - x, y, c] : [0, 0, 0]);
    const mirrored = mirror(body);
    person.pose_keypoints_2d = MIRROR.map((j) => mirrored[j] ?? [0, 0, 0]).flat();
    const left = person.hand_left_keypoints_2d, right = person.hand_right_keypoints_2d;
    person.hand_left_keypoints_2d = right ? mirror(triplets(right)).flat() : null;
    person.hand_right_keypoints_2d = left ? mirror(triplets(left)).flat() : null;
    if (person.face_keypoints_2d) person.face_keypoints_2d = mirror(triplets(person.face_keypoints_2d)).flat();
    this.commit(frame);
  }

  fromExtract() {
    const found = this.extracted();
    if (found) this.commit(found);
  }

  pickFile() {
    const input = document.createElement("input");
    input.type = "file";
    input.accept = ".json,application/json";
    input.addEventListener("change", () => input.files[0] && this.loadFile(input.files[0]));
    input.click();
  }

  async loadFile(file) {
    const frame = parsePose(await file.text());
    if (frame) this.commit(frame);
    return !!frame;
  }

  save() {
    const blob = new Blob([JSON.stringify([this.shown()], null, 1)], { type: "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "pose_keypoint.json";
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  // -- geometry ------------------------------------------------------------------------------
  view(frame = this.shown()) { // where the pose canvas is drawn in the element, in CSS pixels (fitted, centred)
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    const s = Math.min(w / frame.canvas_width, h / frame.canvas_height) || 1;
    const vw = frame.canvas_width * s, vh = frame.canvas_height * s;
    return { x: (w - vw) / 2, y: (h - vh) / 2, w: vw, h: vh };
  }

  // The page position of a point (tests and tools use it to aim the mouse).
  clientPoint(person, index, part = "pose_keypoints_2d", frame = this.shown()) {
    const p = triplets(frame.people[person]?.[part])[index];
    if (!p || p[2] <= 0) return null;
    const rect = this.canvas.getBoundingClientRect(), v = this.view(frame);
    return { x: rect.left + v.x + p[0] * v.w, y: rect.top + v.y + p[1] * v.h };
  }

  normalized(event) {
    const rect = this.canvas.getBoundingClientRect(), v = this.view();
    return [(event.clientX - rect.left - v.x) / v.w, (event.clientY - rect.top - v.y) / v.h];
  }

  hit(event) {
    if (!TABLES) return null;
    const frame = this.shown(); // parsed once for all the points
    let best = null;
    frame.people.forEach((person, p) => {
      for (const part of Object.keys(TABLES.parts)) {
        triplets(person[part]).forEach((pt, index) => {
          const at = pt[2] > 0 && this.clientPoint(p, index, part, frame);
          if (!at) return;
          const d = Math.hypot(at.x - event.clientX, at.y - event.clientY);
          if (d <= HIT && (!best || d < best.d)) best = { person: p, part, index, d };
        });
      }
    });
    return best;
  }

  // -- events ----------------------------------------------------------------------------------
  listen() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      e.stopPropagation();
      e.preventDefault();
      this.element.focus();
      const missing = this.adding.value;
      if (missing !== "") {
        const frame = this.working();
        const person = frame.people[this.person];
        if (person) {
          const [x, y] = this.normalized(e);
          person.pose_keypoints_2d.splice(3 * Number(missing), 3, x, y, 1);
          this.commit(frame);
        }
        return;
      }
      const found = this.hit(e);
      if (!found) return;
      this.person = found.person;
      this.drag = { ...found, frame: this.working() };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      if (!this.drag) return;
      e.stopPropagation();
      const [x, y] = this.normalized(e);
      const points = this.drag.frame.people[this.drag.person][this.drag.part];
      points.splice(3 * this.drag.index, 2, x, y);
      this.draw(this.drag.frame);
    });
    const finish = (e) => {
      if (!this.drag) return;
      e.stopPropagation();
      const { frame } = this.drag;
      this.drag = null;
      this.commit(frame);
    };
    c.addEventListener("pointerup", finish);
    c.addEventListener("pointercancel", finish);
    c.addEventListener("contextmenu", (e) => {
      const found = this.hit(e);
      if (!found) return;
      e.preventDefault();
      e.stopPropagation();
      const frame = this.working();
      frame.people[found.person][found.part].splice(3 * found.index, 3, 0, 0, 0);
      this.commit(frame);
    });
    this.element.addEventListener("keydown", (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key === "z") {
        e.preventDefault();
        e.stopPropagation();
        this.stepBack();
      }
    });
    this.element.addEventListener("dragover", (e) => e.preventDefault());
    this.element.addEventListener("drop", (e) => {
      const file = e.dataTransfer?.files?.[0];
      if (!file) return;
      e.preventDefault();
      e.stopPropagation();
      this.loadFile(file);
    });
    new ResizeObserver(() => this.refresh()).observe(this.canvas);
  }

  // -- drawing ---------------------------------------------------------------------------------
  sourcePhoto() { // the Load Image behind a connected OpenPose Extract, as a /view URL
    const extract = this.extractNode();
    const link = extract?.inputs?.find((i) => i.name === "image")?.link;
    const info = link == null ? null : (app.graph.links?.get?.(link) ?? app.graph.links?.[link]);
    const loader = info ? app.graph.getNodeById(info.origin_id) : null;
    const name = loader?.type === "LoadImage" ? loader.widgets?.find((w) => w.name === "image")?.value : null;
    if (!name) return null;
    const cut = String(name).lastIndexOf("/");
    const params = new URLSearchParams({ filename: String(name).slice(cut + 1), subfolder: cut < 0 ? "" :
      String(name).slice(0, cut), type: "input" });
    return api.apiURL(`/view?${params}`);
  }

  refresh() {
    const frame = this.shown();
    const count = frame.people.length;
    this.person = Math.max(0, Math.min(this.person, count - 1));
    this.people.replaceChildren(...Array.from({ length: count }, (_, i) => new Option(`person ${i + 1}`, String(i))));
    this.people.value = String(this.person);
    const body = triplets(frame.people[this.person]?.pose_keypoints_2d);
    const missing = JOINTS.map((name, i) => [name, i]).filter(([, i]) => !(body[i]?.[2] > 0));
    this.adding.replaceChildren(new Option("add a joint…", ""), ...missing.map(([n, i]) => new Option(`add ${n}`, String(i))));
    const url = this.sourcePhoto();
    if (url !== this.photoUrl) {
      this.photoUrl = url;
      this.photo = null;
      if (url) {
        const img = new Image();
        img.onload = () => { this.photo = img; this.draw(); };
        img.src = url;
      }
    }
    this.draw();
  }

  draw(frame = this.shown()) {
    if (!TABLES) return; // no server tables: nothing is drawn rather than drawn otherwise
    const c = this.canvas, ratio = window.devicePixelRatio || 1;
    c.width = Math.max(1, Math.round(c.clientWidth * ratio));
    c.height = Math.max(1, Math.round(c.clientHeight * ratio));
    const ctx = c.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, c.clientWidth, c.clientHeight);
    const v = this.view(frame);
    ctx.fillStyle = "#000";
    ctx.fillRect(v.x, v.y, v.w, v.h);
    if (this.photo) {
      ctx.globalAlpha = 0.55;
      ctx.drawImage(this.photo, v.x, v.y, v.w, v.h);
      ctx.globalAlpha = 1;
    }
    const at = ([x, y]) => [v.x + x * v.w, v.y + y * v.h];
    const preview = !this.edited();
    frame.people.forEach((person, p) => {
      ctx.globalAlpha = preview ? 0.6 : (p === this.person ? 1 : 0.75);
      const body = triplets(person.pose_keypoints_2d);
      TABLES.limbs.forEach(([a, b], i) => {
        const pa = body[a - 1], pb = body[b - 1];
        if (!(pa?.[2] > 0 && pb?.[2] > 0)) return;
        ctx.strokeStyle = rgb(TABLES.colours[i], 0.6);
        ctx.lineWidth = 5;
        ctx.beginPath();
        ctx.moveTo(...at(pa));
        ctx.lineTo(...at(pb));
        ctx.stroke();
      });
      body.forEach((pt, i) => {
        if (!(pt[2] > 0)) return;
        ctx.fillStyle = rgb(TABLES.colours[i]);
        ctx.beginPath();
        ctx.arc(...at(pt), 4, 0, 2 * Math.PI);
        ctx.fill();
      });
      for (const side of ["hand_left_keypoints_2d", "hand_right_keypoints_2d"]) {
        const hand = triplets(person[side]);
        TABLES.hand_edges.forEach(([a, b], i) => {
          if (!(hand[a]?.[2] > 0 && hand[b]?.[2] > 0)) return;
          ctx.strokeStyle = rgb(TABLES.hand_colours[i]);
          ctx.lineWidth = 1.5;
          ctx.beginPath();
          ctx.moveTo(...at(hand[a]));
          ctx.lineTo(...at(hand[b]));
          ctx.stroke();
        });
        hand.forEach((pt) => {
          if (!(pt[2] > 0)) return;
          ctx.fillStyle = "#00f";
          ctx.beginPath();
          ctx.arc(...at(pt), 2.5, 0, 2 * Math.PI);
          ctx.fill();
        });
      }
      triplets(person.face_keypoints_2d).forEach((pt) => {
        if (!(pt[2] > 0)) return;
        ctx.fillStyle = "#fff";
        ctx.beginPath();
        ctx.arc(...at(pt), 1.8, 0, 2 * Math.PI);
        ctx.fill();
      });
    });
    ctx.globalAlpha = 1;
    ctx.fillStyle = "#aaa";
    ctx.font = "11px sans-serif";
    const note = preview ? (frame.people.length ? "the connected extract's pose: edit it to keep a copy" :
      "no pose: + person, load a file, or run a connected OpenPose Extract") : "edited pose (drawn instead of keypoints)";
    ctx.fillText(note, 6, c.clientHeight - 6);
  }
}

app.registerExtension({
  name: "PoseForge.poseEditor",
  async init() { // before any node exists
    try {
      TABLES = await (await api.fetchApi("/poseforge/pose_tables")).json();
    } catch {
      TABLES = null; // a server without PoseForge's routes: the editor says so instead of guessing
    }
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = created?.apply(this, arguments);
      const poseWidget = this.widgets?.find((w) => w.name === "pose");
      if (!poseWidget) return result;
      poseWidget.hidden = true;
      poseWidget.computeSize = () => [0, -4];
      const editor = new PoseEditor(this, poseWidget);
      const widget = this.addDOMWidget("pose_editor", "pf_pose_editor", editor.element, {
        serialize: false, getValue: () => undefined, setValue: () => {}, getMinHeight: () => 300,
      });
      widget.serialize = false;
      this.pfEditor = editor;
      this.setSize([Math.max(this.size[0], 360), Math.max(this.size[1], 560)]);
      const poseCallback = poseWidget.callback;
      poseWidget.callback = function () { editor.refresh(); return poseCallback?.apply(this, arguments); };
      return result;
    };
    const configured = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = configured?.apply(this, arguments);
      this.pfEditor?.refresh();
      return result;
    };
    const connections = nodeType.prototype.onConnectionsChange;
    nodeType.prototype.onConnectionsChange = function () {
      const result = connections?.apply(this, arguments);
      this.pfEditor?.refresh();
      return result;
    };
    nodeType.prototype.onDragOver = function (e) {
      return [...(e.dataTransfer?.items ?? [])].some((i) => i.kind === "file");
    };
    nodeType.prototype.onDragDrop = function (e) {
      const file = e.dataTransfer?.files?.[0];
      if (!file || !this.pfEditor) return false;
      this.pfEditor.loadFile(file);
      return true;
    };
  },
  async setup() {
    api.addEventListener("executed", ({ detail }) => {
      const node = app.graph?.getNodeById(Number(String(detail?.node).split(":").pop()));
      const found = detail?.output?.openpose_json?.[0];
      if (node && found) node.pfOpenposeJson = found; // what an editor downstream shows and copies
      for (const other of app.graph?._nodes ?? []) other.pfEditor?.refresh();
    });
  },
});
