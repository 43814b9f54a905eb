// PoseForge's pose editor, on PF_PoseRender: the skeleton over the pose's source photo (when a
// connected OpenPose Extract's photo comes from Load Image). A drag moves the picked joint, the limb
// below it (a wrist takes its hand) or the whole person, as "drag" says; Shift+drag turns it and
// Alt+drag scales it about its parent joint (a person: about its middle); the keys do the same in
// steps (listed on the node). A missing joint is added (choose it, click where it goes), a joint
// removed (right-click), people added, deleted and flipped; hands and face points are edited when
// shown (hidden until asked). Several frames (a batch: one per extracted image) are stepped
// through; the canvas size is set on the node; poses are kept in a library in the user's ComfyUI
// data (pose_library.js). The pose lives in the node's `pose` widget as POSE_KEYPOINT JSON in
// normalized coordinates (a frame, or a list of frames), so it is saved with the workflow and
// travels in API-format graphs; PF_PoseRender draws it instead of its keypoints input when set.
// Until the first edit the editor shows the connected OpenPose Extract's last result ("from
// extract" copies it in); a pose JSON file dropped on the node is loaded ("save" writes one).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { BODY, FACE, HANDS, JOINTS, emptyFrame, flipPerson, parseFrames, pivot, refit, selection, standingPerson,
  transform, triplets } from "./pose_model.js";
import { deletePose, keepPose, listPoses, poseName, readPose } from "./pose_library.js";

const NODE = "PF_PoseRender";
// How the server draws and reads poses (GET /poseforge/pose_tables: local/pose_render.py's limbs,
// colours, parts, bounds and BODY_25's conversion), fetched once before any node is made.
let TABLES = null;
const HIT = 10; // pixels on screen within which a point is picked
const UNDO = 50;
const TURN = Math.PI / 36; // 5 degrees a key press
const GROW = 1.05; // a key press's scale
const SHORTCUTS = "drag: move · Shift+drag: turn · Alt+drag: scale · J/L/P: joint/limb/person · arrows: nudge " +
  "(Shift ×10) · [ ]: turn 5° · - =: scale · Del: remove · H/F: hands/face · PgUp/PgDn: frame · Ctrl+Z: undo · " +
  "right-click: remove a joint";

function rgb([r, g, b], scale = 1) {
  return `rgb(${Math.round(r * scale)},${Math.round(g * scale)},${Math.round(b * scale)})`;
}

function control(tag, title, style = "") {
  const e = document.createElement(tag);
  e.title = title;
  e.style.cssText = `font-size:11px;margin:0 2px 2px 0;${style}`;
  e.addEventListener("pointerdown", (event) => event.stopPropagation()); // not a drag of the node
  return e;
}

function button(label, title, onClick) {
  const b = control("button", title, "padding:1px 5px;cursor:pointer");
  b.textContent = label;
  b.addEventListener("click", (e) => { e.stopPropagation(); onClick(); });
  b.pfLabel = label;
  return b;
}

// A button waiting 4 s for a second click on `value` (its label `asking`), or (null) itself again.
function arm(b, value, asking) {
  clearTimeout(b.pfTimer);
  b.pfArmed = value;
  b.textContent = value == null ? b.pfLabel : asking;
  if (value != null) b.pfTimer = setTimeout(() => arm(b, null), 4000);
}

// The node whose output feeds `node`'s input `name`, or null.
function linked(node, name) {
  const link = node?.inputs?.find((i) => i.name === name)?.link;
  const info = link == null ? null : (app.graph.links?.get?.(link) ?? app.graph.links?.[link]);
  return info ? app.graph.getNodeById(info.origin_id) : null;
}

function row(...children) {
  const r = document.createElement("div");
  r.style.cssText = "display:flex;flex-wrap:wrap;align-items:center";
  r.append(...children);
  return r;
}

function choice(title, options, onChange) {
  const s = control("select", title);
  s.replaceChildren(...options.map(([value, label]) => new Option(label, value)));
  s.addEventListener("change", () => onChange(s.value));
  return s;
}

function toggle(label, title, onChange) {
  const box = control("input", title);
  box.type = "checkbox";
  box.addEventListener("change", () => onChange(box.checked));
  const l = control("label", title, "display:inline-flex;align-items:center;color:#ccc");
  l.append(box, label);
  return [l, box];
}

class PoseEditor {
  constructor(node, poseWidget) {
    this.node = node;
    this.poseWidget = poseWidget;
    this.undo = [];
    this.person = 0;
    this.frame = 0;
    this.picked = null; // {person, part, index}: what the keys act on
    this.drag = null;
    this.photo = null;
    this.photoUrl = null;
    this.shows = { hands: false, face: false };
    this.element = document.createElement("div");
    this.element.className = "pf-pose-editor";
    this.element.style.cssText = "display:flex;flex-direction:column;width:100%;height:100%;outline:none";
    this.element.tabIndex = 0;
    this.people = choice("the person the buttons act on", [], (v) => { this.person = Number(v); this.refresh(); });
    this.scope = choice("what a drag (and the keys) move: the joint, the limb below it, or the whole person",
      [["joint", "drag: joint"], ["limb", "drag: limb"], ["person", "drag: person"]], () => this.refresh());
    this.adding = choice("a missing joint: choose it, then click where it goes", [], () => {});
    const [hands, handsBox] = toggle("hands", "show and edit hand points (H)", (on) => this.show("hands", on));
    const [face, faceBox] = toggle("face", "show and edit face points (F)", (on) => this.show("face", on));
    this.boxes = { hands: handsBox, face: faceBox };
    this.frameLabel = control("span", "the frame shown: one per image of the batch", "color:#ccc;padding:0 3px");
    this.size = ["canvas_width", "canvas_height"].map((name) => {
      const input = control("input", `the pose's canvas ${name.slice(7)} in pixels (the pose keeps its shape)`,
        "width:52px");
      input.type = "number";
      input.min = "8";
      input.addEventListener("change", () => this.resize());
      return input;
    });
    this.poseName = control("input", "the name to keep this pose under in your pose library", "width:90px");
    this.poseName.placeholder = "pose name";
    this.library = choice("your pose library (in ComfyUI's user data)", [], () => {});
    this.deleteButton = button("delete", "delete the library pose (click twice)", () => this.forget());
    this.keepButton = button("keep", "keep this frame in your pose library under the name (a name taken asks "
      + "first)", () => this.keep());
    this.toolbar = document.createElement("div");
    this.toolbar.append(
      row(this.people, button("+ person", "add a standing person", () => this.addPerson()),
        button("− person", "delete the chosen person", () => this.deletePerson()),
        button("flip", "mirror the chosen person left/right", () => this.flip()),
        button("undo", "undo the last change (Ctrl+Z)", () => this.stepBack()), this.scope, hands, face, this.adding),
      row(button("◀", "the previous frame (PgUp)", () => this.step(-1)), this.frameLabel,
        button("▶", "the next frame (PgDn)", () => this.step(1)),
        button("+ frame", "a copy of this frame after it", () => this.addFrame()),
        button("− frame", "delete this frame", () => this.deleteFrame()), ...this.size,
        button("from extract", "copy the connected OpenPose Extract's last result (every frame)",
          () => this.fromExtract()),
        button("load", "load a pose JSON file", () => this.pickFile()),
        button("save", "save this pose as a JSON file", () => this.save()),
        button("clear", "forget the edit: keypoints are drawn again", () => this.commitFrames(null))),
      row(this.poseName, this.keepButton,
        this.library, button("insert", "add the library pose's people to this frame", () => this.insert()),
        this.deleteButton));
    this.canvas = document.createElement("canvas");
    this.canvas.style.cssText = "flex:1;min-height:0;width:100%;background:#111;touch-action:none;cursor:crosshair";
    this.help = control("div", "keyboard shortcuts (click the pose first)", "color:#888;font-size:10px;line-height:12px");
    this.help.textContent = SHORTCUTS;
    this.element.append(this.toolbar, this.canvas, this.help);
    this.listen();
    this.refresh();
    // the library is listed when the pointer first comes to the editor (ComfyUI answers 404 to the
    // listing of a library nothing was kept in yet: a page that never edits a pose asks nothing)
    this.element.addEventListener("pointerenter", () => this.loadLibrary(), { once: true });
  }

  // -- the pose: the edit, or (until the first edit) the connected extract's result --------------
  editedFrames() { return this.parsed("edit", this.poseWidget.value); }

  frames() { return this.editedFrames() ?? this.extracted() ?? [emptyFrame()]; }

  edited() { return this.editedFrames()?.[this.frame] ?? null; }

  shown() { return this.frames()[this.frame] ?? this.frames()[0]; }

  // parseFrames of the edit's or the extract's text, read again only when it changes (a click looks
  // at every point); shared: change a copy (working)
  parsed(which, text) {
    this.cache ??= {};
    if (this.cache[which]?.text !== text) this.cache[which] = { text, frames: parseFrames(text, TABLES) };
    return this.cache[which].frames;
  }

  extracted() {
    const text = linked(this.node, "keypoints")?.pfOpenposeJson;
    return text ? this.parsed("extract", text) : null;
  }

  commit(frame) { // the shown frame changed
    const frames = [...this.frames()];
    frames[this.frame] = frame;
    this.commitFrames(frames);
  }

  commitFrames(frames) {
    this.undo.push(this.poseWidget.value ?? "");
    if (this.undo.length > UNDO) this.undo.shift();
    this.store(frames ? JSON.stringify(frames.length === 1 ? frames[0] : frames) : "");
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

  working() { // a copy of the frame shown, to change and commit
    return JSON.parse(JSON.stringify(this.shown()));
  }

  // -- people ----------------------------------------------------------------------------------
  addPerson() {
    const frame = this.working();
    if (frame.people.length >= TABLES.max_people) return;
    frame.people.push(standingPerson());
    this.person = frame.people.length - 1;
    this.commit(frame);
  }

  deletePerson(index = this.person) {
    const frame = this.working();
    if (!frame.people[index]) return;
    frame.people.splice(index, 1);
    this.person = Math.max(0, Math.min(index, frame.people.length - 1));
    this.picked = null;
    this.commit(frame);
  }

  flip() {
    const frame = this.working();
    if (frame.people[this.person] && flipPerson(frame.people[this.person])) this.commit(frame);
  }

  // -- frames and canvas -----------------------------------------------------------------------
  step(by) {
    const count = this.frames().length;
    this.frame = (this.frame + by + count) % count;
    this.picked = null;
    this.refresh();
  }

  addFrame() {
    const frames = [...this.frames()];
    if (frames.length >= TABLES.max_frames) return;
    frames.splice(this.frame + 1, 0, this.working());
    this.frame += 1;
    this.commitFrames(frames);
  }

  deleteFrame() {
    const frames = [...this.frames()];
    if (frames.length < 2) return;
    frames.splice(this.frame, 1);
    this.frame = Math.min(this.frame, frames.length - 1);
    this.commitFrames(frames);
  }

  resize() { // every frame to the size asked: a batch is drawn at one size
    const [width, height] = this.size.map((input) => Math.round(Number(input.value)));
    if (!(width >= 8 && height >= 8 && width <= TABLES.max_side && height <= TABLES.max_side)) {
      this.refresh(); // back to the size it has
      return;
    }
    const frames = JSON.parse(JSON.stringify(this.frames())).map((f) => ({
      ...f, people: refit(f.people, f.canvas_width, f.canvas_height, width, height), canvas_width: width,
      canvas_height: height }));
    this.commitFrames(frames);
  }

  fromExtract() {
    const found = this.extracted();
    if (found) this.commitFrames(found);
  }

  pickFile() {
    const input = document.createElement("input");
    input.type = "file";
    input.accept = ".json,application/json";
    input.addEventListener("change", () => input.files[0] && this.loadFile(input.files[0]));
    input.click();
  }

  async loadFile(file) {
    const frames = parseFrames(await file.text(), TABLES);
    if (frames) {
      this.frame = 0;
      this.commitFrames(frames);
    }
    return !!frames;
  }

  save() {
    const blob = new Blob([JSON.stringify(this.frames(), null, 1)], { type: "application/json" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "pose_keypoint.json";
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }

  // -- the library -----------------------------------------------------------------------------
  async loadLibrary(chosen = this.library.value) { // the names, listed again
    let names = [];
    try {
      names = await listPoses();
    } catch (e) {
      console.warn(`PoseForge: ${e.message}`);
    }
    this.library.replaceChildren(new Option(names.length ? "library…" : "library: empty", ""),
      ...names.map((n) => new Option(n, n)));
    this.library.value = names.includes(chosen) ? chosen : "";
    return names;
  }

  async keep() { // a name already kept asks first: "replace?", clicked again, replaces it
    const name = poseName(this.poseName.value) || `pose ${new Date().toISOString().slice(0, 19).replace("T", " ")
      .replaceAll(":", ".")}`;
    const replace = this.keepButton.pfArmed === name;
    arm(this.keepButton, null);
    if (!replace && (await this.loadLibrary()).includes(name)) return arm(this.keepButton, name, "replace?");
    if (!(await keepPose(name, [this.shown()], replace))) { // kept meanwhile by another page
      arm(this.keepButton, name, "replace?");
      return this.loadLibrary();
    }
    this.poseName.value = "";
    return this.loadLibrary(name);
  }

  async insert(name = this.library.value) {
    if (!name) return false;
    const found = parseFrames(await readPose(name), TABLES)?.[0];
    if (!found) return false;
    const frame = this.working();
    const room = TABLES.max_people - frame.people.length;
    const people = refit(found.people, found.canvas_width, found.canvas_height, frame.canvas_width,
      frame.canvas_height).slice(0, Math.max(0, room));
    frame.people.push(...people);
    if (people.length) this.person = frame.people.length - 1;
    this.commit(frame);
    return true;
  }

  async forget(name = this.library.value) { // a first click arms, a second deletes
    if (!name) return;
    const sure = this.deleteButton.pfArmed === name;
    arm(this.deleteButton, sure ? null : name, "delete?");
    if (!sure) return;
    await deletePose(name);
    await this.loadLibrary("");
  }

  // -- geometry ------------------------------------------------------------------------------
  view(frame = this.shown()) { // where the pose canvas is drawn in the element, in CSS pixels (fitted, centred)
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    const s = Math.min(w / frame.canvas_width, h / frame.canvas_height) || 1;
    const vw = frame.canvas_width * s, vh = frame.canvas_height * s;
    return { x: (w - vw) / 2, y: (h - vh) / 2, w: vw, h: vh };
  }

  // The page position of a point (tests and tools use it to aim the mouse).
  clientPoint(person, index, part = BODY, frame = this.shown()) {
    const p = triplets(frame.people[person]?.[part])[index];
    if (!p || p[2] <= 0) return null;
    const rect = this.canvas.getBoundingClientRect(), v = this.view(frame);
    return { x: rect.left + v.x + p[0] * v.w, y: rect.top + v.y + p[1] * v.h };
  }

  normalized(event) {
    const rect = this.canvas.getBoundingClientRect(), v = this.view();
    return [(event.clientX - rect.left - v.x) / v.w, (event.clientY - rect.top - v.y) / v.h];
  }

  visibleParts() {
    return [BODY, ...(this.shows.hands ? HANDS : []), ...(this.shows.face ? [FACE] : [])];
  }

  hit(event) {
    if (!TABLES) return null;
    const frame = this.shown(); // parsed once for all the points
    let best = null;
    frame.people.forEach((person, p) => {
      for (const part of this.visibleParts()) {
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

  show(what, on) {
    this.shows[what] = on;
    this.boxes[what].checked = on;
    if (!on && this.picked && this.picked.part !== BODY) this.picked = null;
    this.draw();
  }

  // -- changes by the mouse and the keys -------------------------------------------------------
  // The picked points of the scope changed by `change` ({dx, dy} and/or {angle, scale} about the
  // scope's pivot), on `frame` (a copy) from `person` as it was; the frame is returned.
  changed(frame, person, pick, scope, change) {
    const copy = JSON.parse(JSON.stringify(person));
    const points = selection(copy, pick, scope);
    transform(frame, copy, points, { ...change, centre: change.centre ?? pivot(copy, pick, scope, points) });
    frame.people[pick.person] = copy;
    return frame;
  }

  keyed(e) { // true when the key was the editor's
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (e.ctrlKey || e.metaKey || e.altKey) {
      if (key !== "z" || e.altKey) return false;
      this.stepBack();
      return true;
    }
    const scope = { j: "joint", l: "limb", p: "person" }[key];
    const shown = { h: "hands", f: "face" }[key];
    const frameStep = { PageUp: -1, PageDown: 1 }[key];
    if (scope) {
      this.scope.value = scope;
      this.draw();
    } else if (shown) this.show(shown, !this.shows[shown]);
    else if (frameStep) this.step(frameStep);
    else return this.changeByKey(key, e.shiftKey ? 10 : 1);
    return true;
  }

  changeByKey(key, far) { // the picked joint, limb or person nudged, turned, scaled or removed
    const pick = this.picked, frame = this.working(), person = frame.people[pick?.person ?? -1];
    if (!person || !(triplets(person[pick.part])[pick.index]?.[2] > 0)) return false;
    const scope = this.scope.value;
    const nudge = { ArrowLeft: [-far, 0], ArrowRight: [far, 0], ArrowUp: [0, -far], ArrowDown: [0, far] }[key];
    const turn = scope !== "joint" && { "[": -TURN, "]": TURN }[key];
    const scale = scope !== "joint" && { "-": 1 / GROW, "=": GROW, "+": GROW }[key];
    if (nudge) this.commit(this.changed(frame, person, pick, scope, { dx: nudge[0] / frame.canvas_width,
      dy: nudge[1] / frame.canvas_height }));
    else if (turn) this.commit(this.changed(frame, person, pick, scope, { angle: turn }));
    else if (scale) this.commit(this.changed(frame, person, pick, scope, { scale }));
    else if (key !== "Delete" && key !== "Backspace") return false;
    else if (scope === "person") this.deletePerson(pick.person);
    else {
      for (const [part, i] of selection(person, pick, scope)) person[part].splice(3 * i, 3, 0, 0, 0);
      this.picked = null;
      this.commit(frame);
    }
    return true;
  }

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
          person[BODY].splice(3 * Number(missing), 3, x, y, 1);
          this.commit(frame);
        }
        return;
      }
      const found = this.hit(e);
      this.picked = found && { person: found.person, part: found.part, index: found.index };
      if (!found) return this.draw();
      this.person = found.person;
      const frame = this.working();
      const how = e.shiftKey ? "turn" : e.altKey ? "scale" : "move";
      const person = frame.people[found.person], scope = this.scope.value;
      const centre = pivot(person, this.picked, scope, selection(person, this.picked, scope)); // once a drag
      this.drag = { pick: this.picked, frame, person, how, from: this.normalized(e), scope, centre };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      const d = this.drag;
      if (!d) return;
      e.stopPropagation();
      const [x, y] = this.normalized(e);
      const w = d.frame.canvas_width, h = d.frame.canvas_height, centre = d.centre;
      let change;
      if (d.scope === "joint") {
        const [px, py] = triplets(d.person[d.pick.part])[d.pick.index];
        change = { dx: x - px, dy: y - py, centre }; // the joint goes where the pointer is
      } else if (d.how === "move") {
        change = { dx: x - d.from[0], dy: y - d.from[1], centre };
      } else {
        const a = [(d.from[0] - centre[0]) * w, (d.from[1] - centre[1]) * h];
        const b = [(x - centre[0]) * w, (y - centre[1]) * h];
        change = d.how === "turn" ? { angle: Math.atan2(b[1], b[0]) - Math.atan2(a[1], a[0]), centre }
          : { scale: Math.min(20, Math.max(0.05, Math.hypot(...b) / (Math.hypot(...a) || 1))), centre };
      }
      d.shown = this.changed({ ...d.frame, people: [...d.frame.people] }, d.person, d.pick, d.scope, change);
      this.draw(d.shown);
    });
    const finish = (e) => {
      const d = this.drag;
      if (!d) return;
      e.stopPropagation();
      this.drag = null;
      if (d.shown) this.commit(d.shown);
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
      if (["INPUT", "SELECT", "TEXTAREA"].includes(e.target?.tagName)) return; // typing in a field
      if (this.keyed(e)) e.preventDefault();
      else if (e.key !== "Delete" && e.key !== "Backspace") return; // the graph's keys (Ctrl+S, ...) pass
      e.stopPropagation(); // Delete in the editor never removes the node
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
    const loader = linked(linked(this.node, "keypoints"), "image");
    const name = loader?.type === "LoadImage" ? loader.widgets?.find((w) => w.name === "image")?.value : null;
    if (!name) return null;
    const cut = String(name).lastIndexOf("/");
    const params = new URLSearchParams({ filename: String(name).slice(cut + 1), subfolder: cut < 0 ? "" :
      String(name).slice(0, cut), type: "input" });
    return api.apiURL(`/view?${params}`);
  }

  refresh() {
    const frames = this.frames();
    this.frame = Math.max(0, Math.min(this.frame, frames.length - 1));
    this.frameLabel.textContent = `frame ${this.frame + 1}/${frames.length}`;
    const frame = frames[this.frame];
    const count = frame.people.length;
    this.person = Math.max(0, Math.min(this.person, count - 1));
    this.people.replaceChildren(...Array.from({ length: count }, (_, i) => new Option(`person ${i + 1}`, String(i))));
    this.people.value = String(this.person);
    const body = triplets(frame.people[this.person]?.[BODY]);
    const missing = JOINTS.map((name, i) => [name, i]).filter(([, i]) => !(body[i]?.[2] > 0));
    this.adding.replaceChildren(new Option("add a joint…", ""), ...missing.map(([n, i]) => new Option(`add ${n}`, String(i))));
    this.size.forEach((input, i) => {
      if (document.activeElement !== input) input.value = String(i ? frame.canvas_height : frame.canvas_width);
    });
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
    const dot = (pt, r, colour) => {
      ctx.fillStyle = colour;
      ctx.beginPath();
      ctx.arc(...at(pt), r, 0, 2 * Math.PI);
      ctx.fill();
    };
    const line = (a, b, width, colour) => {
      ctx.strokeStyle = colour;
      ctx.lineWidth = width;
      ctx.beginPath();
      ctx.moveTo(...at(a));
      ctx.lineTo(...at(b));
      ctx.stroke();
    };
    const preview = !this.edited();
    frame.people.forEach((person, p) => {
      ctx.globalAlpha = preview ? 0.6 : (p === this.person ? 1 : 0.75);
      const body = triplets(person[BODY]);
      TABLES.limbs.forEach(([a, b], i) => {
        const pa = body[a - 1], pb = body[b - 1];
        if (pa?.[2] > 0 && pb?.[2] > 0) line(pa, pb, 5, rgb(TABLES.colours[i], 0.6));
      });
      body.forEach((pt, i) => pt[2] > 0 && dot(pt, 4, rgb(TABLES.colours[i])));
      if (this.shows.hands) {
        for (const side of HANDS) {
          const hand = triplets(person[side]);
          TABLES.hand_edges.forEach(([a, b], i) => {
            if (hand[a]?.[2] > 0 && hand[b]?.[2] > 0) line(hand[a], hand[b], 1.5, rgb(TABLES.hand_colours[i]));
          });
          hand.forEach((pt) => pt[2] > 0 && dot(pt, 2.5, "#00f"));
        }
      }
      if (this.shows.face) triplets(person[FACE]).forEach((pt) => pt[2] > 0 && dot(pt, 1.8, "#fff"));
    });
    ctx.globalAlpha = 1;
    const pick = this.picked, person = frame.people[pick?.person ?? -1];
    if (person && triplets(person[pick.part])[pick.index]?.[2] > 0) { // what the keys and a drag act on
      ctx.strokeStyle = "#ff0";
      ctx.lineWidth = 1;
      for (const [part, i] of selection(person, pick, this.scope.value)) {
        ctx.beginPath();
        ctx.arc(...at(triplets(person[part])[i]), part === BODY ? 7 : 4, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
    ctx.fillStyle = "#aaa";
    ctx.font = "11px sans-serif";
    const hidden = frame.people.some((q) => (!this.shows.hands && HANDS.some((h) => q[h])) || (!this.shows.face && q[FACE]));
    const note = preview ? (frame.people.length ? "the connected extract's pose: edit it to keep a copy" :
      "no pose: + person, load a file, insert from the library, or run a connected OpenPose Extract") :
      "edited pose (drawn instead of keypoints)";
    ctx.fillText(note + (hidden ? " · hands/face hidden: tick them to edit" : ""), 6, c.clientHeight - 6);
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
        serialize: false, getValue: () => undefined, setValue: () => {}, getMinHeight: () => 380,
      });
      widget.serialize = false;
      this.pfEditor = editor;
      this.setSize([Math.max(this.size[0], 420), Math.max(this.size[1], 680)]);
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
