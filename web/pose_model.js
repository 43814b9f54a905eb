// The pose the editor on PF_PoseRender changes, as data: POSE_KEYPOINT frames read from the layouts
// people have (normalized or pixel coordinates, BODY_25 converted as the server converts it), the
// skeleton's tree (which joints hang below which), and the changes the editor makes to a person,
// a limb or a joint (move, rotate, scale), done in the frame's pixels so that a turn stays a turn
// on a canvas that is not square. No ComfyUI import: pose_editor.js gives it the server's tables.

export const BODY = "pose_keypoints_2d";
export const HANDS = ["hand_left_keypoints_2d", "hand_right_keypoints_2d"];
export const FACE = "face_keypoints_2d";
export const JOINTS = ["nose", "neck", "right shoulder", "right elbow", "right wrist", "left shoulder", "left elbow",
  "left wrist", "right hip", "right knee", "right ankle", "left hip", "left knee", "left ankle", "right eye",
  "left eye", "right ear", "left ear"];
export const MIRROR = [0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16]; // a joint's left/right twin
// Each body joint's parent: the neck holds the head, the shoulders and the hips; the nose the eyes,
// each eye its ear. The hands hang from the wrists (left: 7, right: 4), the face from the nose.
const PARENT = [1, -1, 1, 2, 3, 1, 5, 6, 1, 8, 9, 1, 11, 12, 0, 0, 14, 15];
const HAND_AT = { hand_left_keypoints_2d: 7, hand_right_keypoints_2d: 4 };
const FACE_AT = 0;
export const STANDING = [[0.5, 0.14], [0.5, 0.26], [0.41, 0.26], [0.36, 0.42], [0.33, 0.57], [0.59, 0.26],
  [0.64, 0.42], [0.67, 0.57], [0.45, 0.56], [0.45, 0.74], [0.45, 0.92], [0.55, 0.56], [0.55, 0.74], [0.55, 0.92],
  [0.48, 0.12], [0.52, 0.12], [0.46, 0.13], [0.54, 0.13]];

export function emptyFrame(width = 512, height = 512) {
  return { people: [], canvas_width: width, canvas_height: height };
}

export function standingPerson() {
  return { [BODY]: STANDING.flatMap(([x, y]) => [x, y, 1]), [HANDS[0]]: null, [HANDS[1]]: null, [FACE]: null };
}

export function triplets(flat) {
  if (!Array.isArray(flat)) return [];
  const out = [];
  for (let i = 0; i + 2 < flat.length; i += 3) out.push([Number(flat[i]), Number(flat[i + 1]), Number(flat[i + 2])]);
  return out;
}

// POSE_KEYPOINT frames in normalized coordinates, from JSON text or an object (a frame or a list of
// them) in the layouts comfyui_controlnet_aux and the common OpenPose editors write; null if none.
// `tables` are the server's (GET /poseforge/pose_tables): parts, bounds and BODY_25's conversion.
export function parseFrames(source, tables) {
  let found = source;
  if (typeof source === "string") {
    if (!source.trim()) return null;
    try { found = JSON.parse(source); } catch { return null; }
  }
  const list = (Array.isArray(found) ? found : [found]).slice(0, tables?.max_frames ?? 1);
  const frames = list.map((f) => parseFrame(f, tables));
  return frames.length && frames.every(Boolean) ? frames : null;
}

function parseFrame(found, tables) {
  if (!tables || !found || typeof found !== "object" || !Array.isArray(found.people)) return null;
  const side = (v) => Math.min(tables.max_side, Math.max(1, Math.round(Number(v)) || 512));
  const width = side(found.canvas_width), height = side(found.canvas_height);
  const kept = found.people.slice(0, tables.max_people).filter((p) => p && typeof p === "object");
  let largest = 0; // pixel or normalized coordinates: a loop, as a spread of a big pose overflows the stack
  for (const p of kept) {
    for (const part of Object.keys(tables.parts)) {
      for (const [x, y, c] of triplets(p[part])) if (c > 0) largest = Math.max(largest, Math.abs(x), Math.abs(y));
    }
  }
  const pixels = largest > 1.5;
  const people = kept.map((p) => {
    const person = {};
    for (const [part, count] of Object.entries(tables.parts)) {
      let points = triplets(p[part]);
      if (part === BODY && points.length === 25) points = tables.body_25_to_coco.map((i) => points[i]);
      person[part] = points.length ? points.slice(0, count).flatMap(([x, y, c]) => c > 0 && Number.isFinite(x + y)
        ? [pixels ? x / width : x, pixels ? y / height : y, 1] : [0, 0, 0]) : null;
    }
    const body = person[BODY] ?? [];
    person[BODY] = body.concat(new Array(Math.max(0, 54 - body.length)).fill(0));
    return person;
  });
  return { people, canvas_width: width, canvas_height: height };
}

// -- what a pick takes with it ------------------------------------------------------------------
// A pick is {person, part, index}; its scope is "joint" (that point), "limb" (the point and all
// that hangs below it: a wrist takes its hand, the nose the eyes, ears and face, a finger's point
// the rest of the finger, a face point the face) or "person" (every point of the person).

function below(joint) { // body joints in the subtree of `joint`, itself included
  const out = [joint];
  for (let k = 0; k < out.length; k += 1) PARENT.forEach((p, j) => { if (p === out[k]) out.push(j); });
  return out;
}

// [[part, index], ...] the scope of `pick` moves.
export function selection(person, pick, scope) {
  const present = (part) => triplets(person[part]).map((p, i) => [part, i, p]).filter(([, , p]) => p[2] > 0)
    .map(([part, i]) => [part, i]);
  if (scope === "person") return [BODY, ...HANDS, FACE].flatMap(present);
  if (scope === "joint") return [[pick.part, pick.index]];
  if (pick.part === BODY) {
    const joints = new Set(below(pick.index));
    const out = present(BODY).filter(([, i]) => joints.has(i));
    for (const hand of HANDS) if (joints.has(HAND_AT[hand])) out.push(...present(hand));
    if (joints.has(FACE_AT)) out.push(...present(FACE));
    return out;
  }
  if (pick.part === FACE || pick.index === 0) return present(pick.part); // the face; a hand from its wrist
  const fingerEnd = Math.ceil(pick.index / 4) * 4; // points 1-4 are the thumb, 5-8 the index finger, ...
  return present(pick.part).filter(([, i]) => i >= pick.index && i <= fingerEnd);
}

// The point (normalized) the scope of `pick` turns and scales about: a limb's parent joint (the
// wrist for a hand, the nose for the face, the previous point of a finger), else the centre of the
// points' box.
export function pivot(person, pick, scope, points) {
  const at = (part, i) => { const p = triplets(person[part])[i]; return p && p[2] > 0 ? [p[0], p[1]] : null; };
  if (scope === "limb") {
    let found = null;
    if (pick.part === BODY) found = PARENT[pick.index] >= 0 ? at(BODY, PARENT[pick.index]) : null;
    else if (pick.part === FACE) found = at(BODY, FACE_AT);
    else if (pick.index === 0) found = at(BODY, HAND_AT[pick.part]);
    else found = at(pick.part, pick.index % 4 === 1 ? 0 : pick.index - 1); // a finger's first point: the hand's wrist
    if (found) return found;
  }
  const xy = points.map(([part, i]) => at(part, i)).filter(Boolean);
  if (!xy.length) return [0.5, 0.5];
  const xs = xy.map((p) => p[0]), ys = xy.map((p) => p[1]);
  return [(Math.min(...xs) + Math.max(...xs)) / 2, (Math.min(...ys) + Math.max(...ys)) / 2];
}

// `points` of `person` (changed in place) moved by (dx, dy), turned by `angle` radians and scaled by
// `scale` about `centre`, all normalized; done in the frame's pixels.
export function transform(frame, person, points, { dx = 0, dy = 0, angle = 0, scale = 1, centre = [0.5, 0.5] }) {
  const w = frame.canvas_width, h = frame.canvas_height;
  const cos = Math.cos(angle) * scale, sin = Math.sin(angle) * scale;
  const cx = centre[0] * w, cy = centre[1] * h;
  for (const [part, i] of points) {
    const flat = person[part];
    const x = flat[3 * i] * w - cx, y = flat[3 * i + 1] * h - cy;
    flat[3 * i] = (cx + cos * x - sin * y) / w + dx;
    flat[3 * i + 1] = (cy + sin * x + cos * y) / h + dy;
  }
}

export function flipPerson(person) {
  const body = triplets(person[BODY]);
  const present = [BODY, ...HANDS, FACE].flatMap((part) => triplets(person[part])).filter((p) => p[2] > 0);
  if (!present.length) return false;
  const xs = present.map((p) => p[0]), centre = (Math.min(...xs) + Math.max(...xs)) / 2;
  const mirror = (points) => points.map(([x, y, c]) => c > 0 ? [2 * centre - x, y, c] : [0, 0, 0]);
  const mirrored = mirror(body);
  person[BODY] = MIRROR.map((j) => mirrored[j] ?? [0, 0, 0]).flat();
  const [left, right] = HANDS.map((hand) => person[hand]);
  person[HANDS[0]] = right ? mirror(triplets(right)).flat() : null;
  person[HANDS[1]] = left ? mirror(triplets(left)).flat() : null;
  if (person[FACE]) person[FACE] = mirror(triplets(person[FACE])).flat();
  return true;
}

// `people` of a frame of canvas (fromW, fromH) placed on a canvas (toW, toH): the same shape,
// scaled to fit and centred (so a wider canvas leaves room at the sides). Changed in place.
export function refit(people, fromW, fromH, toW, toH) {
  const s = Math.min(toW / fromW, toH / fromH);
  for (const person of people) {
    for (const part of [BODY, ...HANDS, FACE]) {
      const flat = person[part];
      if (!Array.isArray(flat)) continue;
      for (let i = 0; i + 2 < flat.length; i += 3) {
        if (!(flat[i + 2] > 0)) continue;
        flat[i] = ((flat[i] - 0.5) * fromW * s + toW / 2) / toW;
        flat[i + 1] = ((flat[i + 1] - 0.5) * fromH * s + toH / 2) / toH;
      }
    }
  }
  return people;
}
