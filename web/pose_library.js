// The pose library of PF_PoseRender's editor: poses kept in the user's ComfyUI data
// (user/<user>/poseforge/poses/<name>.json) through ComfyUI's own /userdata routes, so they are the
// user's, not a workflow's, and survive a reload. A pose is stored as POSE_KEYPOINT JSON (a list of
// frames), the layout a pose file has, and read back through the editor's parser.
import { api } from "../../scripts/api.js";

const FOLDER = "poseforge/poses";
const MAX_NAME = 64;

// A name the library can keep (letters, digits, spaces, - _ .; no path, no leading dot), or "".
export function poseName(text) {
  return String(text ?? "").replace(/[^\p{L}\p{N} _.-]+/gu, "").replace(/^[\s.]+/, "").trim().slice(0, MAX_NAME);
}

const file = (name) => `/userdata/${encodeURIComponent(`${FOLDER}/${name}.json`)}`;

async function answer(response, what) {
  if (!response.ok) throw new Error(`the pose library could not ${what} (${response.status})`);
  return response;
}

export async function listPoses() {
  const response = await api.fetchApi(`/userdata?dir=${encodeURIComponent(FOLDER)}`);
  if (response.status === 404) return []; // nothing kept yet
  const names = await (await answer(response, "be listed")).json();
  return names.filter((n) => typeof n === "string" && n.endsWith(".json")).map((n) => n.slice(0, -5))
    .sort((a, b) => a.localeCompare(b));
}

export async function readPose(name) {
  return (await answer(await api.fetchApi(file(name)), `read ${name}`)).text();
}

// Keeps `frames` under `name`; false (nothing written) when the name is taken and `replace` is not set.
export async function keepPose(name, frames, replace = false) {
  const response = await api.fetchApi(`${file(name)}?overwrite=${replace}`,
    { method: "POST", body: JSON.stringify(frames) });
  if (response.status === 409) return false;
  await answer(response, `keep ${name}`);
  return true;
}

export async function deletePose(name) {
  await answer(await api.fetchApi(file(name), { method: "DELETE" }), `delete ${name}`);
}
