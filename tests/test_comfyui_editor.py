"""PoseForge's web extension in the real ComfyUI editor (headless Chromium + selenium, the shared
ComfyUI of tests/real_comfyui.py): a joint of PF_PoseRender's pose editor dragged with real mouse
events lands where it was dropped in the map ComfyUI saves, survives a reload and travels in the
API export; the price shown before a Segmind run is the endpoint table's; ComfyUI's progress text
arrives over the websocket during a slow (fake) Segmind run; the routes answer only booleans,
labels and prices. POSEFORGE_SCREENSHOTS=<dir> keeps screenshots of the editor and a hosted run."""
import asyncio
import json
import os
import struct
import time

import pytest
from PIL import Image

import workflows
from real_comfyui import COMFYUI_DIR, LOAD, SENTINEL, browser, call
from test_workflows import UI

pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")
SHOTS = os.environ.get("POSEFORGE_SCREENSHOTS")
WRIST = 4  # right wrist: its joint is drawn in (170, 255, 0)
STANDING = [[0.5, 0.14], [0.5, 0.26], [0.41, 0.26], [0.36, 0.42], [0.33, 0.57], [0.59, 0.26], [0.64, 0.42],
            [0.67, 0.57], [0.45, 0.56], [0.45, 0.74], [0.45, 0.92], [0.55, 0.56], [0.55, 0.74], [0.55, 0.92],
            [0.48, 0.12], [0.52, 0.12], [0.46, 0.13], [0.54, 0.13]]


@pytest.fixture
def editor(comfyui):
    url, _ = comfyui
    for setting, value in (("Comfy.TutorialCompleted", True), ("Comfy.Minimap.Visible", False)):
        call(f"{url}/settings/{setting}", value)
    driver = browser()
    driver.set_script_timeout(60)
    driver.get(url)
    wait_for_app(driver)
    yield driver
    ours = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "poseforge" in e["message"].lower()]
    driver.quit()
    assert ours == [], ours


def wait_for_app(driver):
    for _ in range(120):
        if driver.execute_script("return !!(window.app && window.app.graph && window.LiteGraph "
                                 "&& LiteGraph.registered_node_types['PF_PoseRender'])"):
            return
        time.sleep(0.5)
    pytest.fail("the editor did not register PoseForge's nodes")


def pose_graph(url):
    """PF_PoseRender with a standing person in its editor, into Save Image (512 x 512)."""
    defs = call(url + "/object_info")
    g = workflows.Graph(defs)
    frame = {"people": [{"pose_keypoints_2d": [v for x, y in STANDING for v in (x, y, 1.0)]}],
             "canvas_width": 512, "canvas_height": 512}
    render = g.add("PF_PoseRender", (40, 40), {"width": 512, "height": 512, "pose": json.dumps(frame)},
                   size=(420, 640))
    g.add("SaveImage", (520, 40), {"filename_prefix": "pf_edited"}, {"images": (render, 0)}, size=(400, 400))
    return g.ui()


def node_id(driver, kind):
    return driver.execute_script("return window.app.graph._nodes.find((n) => n.type === arguments[0]).id", kind)


def pose_value(driver):
    return json.loads(driver.execute_script(
        "return window.app.graph._nodes.find((n) => n.type === 'PF_PoseRender').widgets"
        ".find((w) => w.name === 'pose').value"))


def wait_for_saved(url, prefix, after):
    """The file name of the newest image saved under `prefix` after `after` prompts ran."""
    for _ in range(240):
        history = call(url + "/history")
        if len(history) > after:
            for entry in history.values():
                for output in entry.get("outputs", {}).values():
                    for image in output.get("images", []):
                        if image["filename"].startswith(prefix):
                            return image
        time.sleep(0.5)
    pytest.fail(f"no image saved under {prefix}")


def test_a_dragged_joint_lands_where_it_was_dropped_survives_a_reload_and_is_exported(editor, comfyui):
    from selenium.webdriver.common.action_chains import ActionChains

    url, base = comfyui
    driver = editor
    assert "error" not in driver.execute_async_script(LOAD, pose_graph(url))
    time.sleep(1.0)
    start = driver.execute_script("const n = window.app.graph._nodes.find((n) => n.type === 'PF_PoseRender');"
                                  "return n.pfEditor.clientPoint(0, arguments[0]);", WRIST)
    view = driver.execute_script("const e = window.app.graph._nodes.find((n) => n.type === 'PF_PoseRender')"
                                 ".pfEditor; return e.view();")
    target = (0.22, 0.82)  # where the wrist goes, normalized
    dx, dy = (target[0] - STANDING[WRIST][0]) * view["w"], (target[1] - STANDING[WRIST][1]) * view["h"]
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(round(start["x"]), round(start["y"]))
    actions.w3c_actions.pointer_action.pointer_down()
    for k in range(1, 6):  # a real drag: several moves
        actions.w3c_actions.pointer_action.move_to_location(round(start["x"] + dx * k / 5),
                                                            round(start["y"] + dy * k / 5))
    actions.w3c_actions.pointer_action.pointer_up()
    actions.perform()
    moved = pose_value(driver)["people"][0]["pose_keypoints_2d"][3 * WRIST:3 * WRIST + 3]
    assert moved[0] == pytest.approx(target[0], abs=2 / view["w"]) and moved[1] == pytest.approx(target[1],
                                                                                                 abs=2 / view["h"])
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        driver.save_screenshot(os.path.join(SHOTS, "pose_editor.png"))
    before = len(call(url + "/history"))
    driver.execute_script("window.app.queuePrompt(0, 1)")
    saved = wait_for_saved(url, "pf_edited", before)
    with Image.open(base / "output" / saved["subfolder"] / saved["filename"]) as img:
        pixels = img.convert("RGB")
        x, y = round(moved[0] * 512), round(moved[1] * 512)
        assert pixels.getpixel((x, y)) == (170, 255, 0), "the wrist's joint is drawn where it was dropped"
        old = (round(STANDING[WRIST][0] * 512), round(STANDING[WRIST][1] * 512))
        assert pixels.getpixel(old) != (170, 255, 0)
    exported = driver.execute_async_script("const done = arguments[arguments.length - 1];"
                                           "window.app.graphToPrompt().then((p) => done(p.output));")
    render = exported[str(node_id(driver, "PF_PoseRender"))]
    assert json.loads(render["inputs"]["pose"])["people"][0]["pose_keypoints_2d"][3 * WRIST:3 * WRIST + 2] == moved[:2]
    driver.refresh()
    wait_for_app(driver)
    for _ in range(40):  # the editor restores the workflow it had
        if driver.execute_script("return window.app.graph._nodes.some((n) => n.type === 'PF_PoseRender')"):
            break
        time.sleep(0.5)
    assert pose_value(driver)["people"][0]["pose_keypoints_2d"][3 * WRIST:3 * WRIST + 2] == moved[:2]


def test_undo_add_and_delete_in_the_editor(editor, comfyui):
    url, _ = comfyui
    driver = editor
    driver.execute_async_script(LOAD, pose_graph(url))
    time.sleep(0.5)
    script = """const e = window.app.graph._nodes.find((n) => n.type === 'PF_PoseRender').pfEditor;
    e.addPerson(); const two = JSON.parse(e.poseWidget.value).people.length;
    e.flip(); e.deletePerson(); const one = JSON.parse(e.poseWidget.value).people.length;
    e.stepBack(); e.stepBack(); e.stepBack(); const back = JSON.parse(e.poseWidget.value).people.length;
    return [two, one, back];"""
    assert driver.execute_script(script) == [2, 1, 1]


def test_the_price_shown_before_a_segmind_run_is_the_tables(editor, comfyui):
    url, _ = comfyui
    driver = editor
    table = json.load(open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "segmind", "endpoints.json")))
    driver.execute_async_script(LOAD, UI["sdxl_openpose_codeformer_segmind"])
    driver.execute_script("const n = window.app.graph._nodes.find((n) => n.type === 'PF_SDXLText2Image');"
                          "n.widgets.find((w) => w.name === 'samples').value = 3;"
                          "window.app.graph.setDirtyCanvas(true, true);")
    time.sleep(1.5)  # a frame is drawn: the extension works the texts out then
    shown = driver.execute_script("return Object.fromEntries(window.app.graph._nodes.filter((n) => n.pfPriceText)"
                                  ".map((n) => [n.type, n.pfPriceText]))")
    cost = table["sdxl1.0-txt2img"]["cost_usd"]
    assert shown["PF_SDXLText2Image"].startswith(f"Segmind est. ${round(3 * cost, 6)} a photo (3 × ${cost}; "
                                                 f"price list of {table['_prices']['as_of']})")
    assert shown["PF_SDXLOpenPose"].startswith(f"Segmind est. ${table['sdxl-openpose']['cost_usd']} a photo")
    assert shown["PF_CodeFormer"] == "Segmind codeformer: price not published"
    driver.execute_async_script(LOAD, UI["ipadapter_xl_openpose_segmind"])
    time.sleep(1.5)
    shown = driver.execute_script("return window.app.graph._nodes.find((n) => n.type === 'PF_SDXLOpenPose')"
                                  ".pfPriceText")
    assert shown == "Segmind ip-sdxl-openpose: price not published · ip-sdxl-openpose's fields are unconfirmed by Segmind"
    driver.execute_async_script(LOAD, UI["sdxl_openpose_codeformer"])  # local: no price
    time.sleep(1.0)
    assert driver.execute_script("return window.app.graph._nodes.filter((n) => n.pfPriceText).length") == 0


def text_messages(url, graph, seconds):
    """Queue `graph` with a websocket open; returns (the progress texts, the progress messages) it sent."""
    import aiohttp

    async def listen():
        texts, progress = [], []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url.replace("http", "ws") + "/ws?clientId=pf-editor-test") as ws:
                await session.post(url + "/prompt", json={"prompt": graph, "client_id": "pf-editor-test"})
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    try:
                        msg = await ws.receive(timeout=1.0)
                    except asyncio.TimeoutError:
                        continue
                    if msg.type == aiohttp.WSMsgType.BINARY and struct.unpack(">I", msg.data[:4])[0] == 3:
                        size = struct.unpack(">I", msg.data[4:8])[0]
                        texts.append((msg.data[8:8 + size].decode(), msg.data[8 + size:].decode()))
                    elif msg.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        if data["type"] == "progress":
                            progress.append(data["data"])
                        if data["type"] == "executing" and data["data"].get("node") is None and texts:
                            break
        return texts, progress

    return asyncio.run(listen())


def test_progress_text_arrives_during_a_slow_segmind_run(comfyui, segmind):
    url, _ = comfyui
    graph = {"1": {"class_type": "PF_SDXLText2Image", "inputs": {
        "prompt": "slow", "negative_prompt": "", "width": 512, "height": 512, "num_inference_steps": 25,
        "guidance_scale": 7.5, "scheduler": "UniPC", "seed": 5, "samples": 1, "backend": "segmind"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "pf_slow"}}}
    segmind.latency = 2.5
    try:
        texts, progress = text_messages(url, graph, 60)
    finally:
        segmind.latency = 0.0
    ours = [text for node, text in texts if node == "1"]
    assert len(ours) >= 3, texts  # about four a second while Segmind works
    assert ours[0].startswith("Segmind sdxl1.0-txt2img: ") and "s of ~6 s typical" in ours[0]
    assert [p["value"] for p in progress if p["node"] == "1"][-1] == 100


def test_the_routes_answer_only_booleans_labels_and_prices(comfyui, segmind):
    url, base = comfyui
    answers = json.dumps([call(url + "/poseforge/status"), call(url + "/poseforge/prices")])
    for secret in (SENTINEL, segmind.base_url, str(base), os.path.dirname(os.path.dirname(__file__)), "/tmp", "/home"):
        assert secret not in answers, secret

    def leaves(value):
        if isinstance(value, dict):
            return [v for item in value.values() for v in leaves(item)]
        if isinstance(value, list):
            return [v for item in value for v in leaves(item)]
        return [value]

    for value in leaves(json.loads(answers)):  # numbers, booleans and labels: no path, no URL
        assert value is None or isinstance(value, (bool, int, float)) or (
            isinstance(value, str) and not value.startswith(("/", "~")) and "://" not in value and ":\\" not in value)
