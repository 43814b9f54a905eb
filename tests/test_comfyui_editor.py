"""PoseForge's web extension in the real ComfyUI editor (headless Chromium + selenium, the shared
ComfyUI of tests/real_comfyui.py): a joint of PF_PoseRender's pose editor dragged with real mouse
events lands where it was dropped in the map ComfyUI saves, survives a reload and travels in the
API export; the price shown before a Segmind run is the endpoint table's; ComfyUI's progress text
arrives over the websocket during a slow (fake) Segmind run; the routes answer only booleans,
labels and prices. POSEFORGE_SCREENSHOTS=<dir> keeps screenshots of the editor and a hosted run."""
import asyncio
import collections
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


FRONTENDS = {"pinned": ("comfyui", False), "newest": ("comfyui_newest", False), "newest-vue": ("comfyui_newest", True)}


Site = collections.namedtuple("Site", "url base vue shots")


@pytest.fixture(params=list(FRONTENDS))
def site(request):
    """The ComfyUI an editor test runs on: the frontend 0.3.64 pins, the newest one in its classic canvas,
    and the newest one in its Vue node rendering. Screenshots (for the README) come from the first."""
    server, vue = FRONTENDS[request.param]
    url, base = request.getfixturevalue(server)
    return Site(url, base, vue, SHOTS if request.param == "pinned" else None)


@pytest.fixture
def editor(site):
    url, vue = site.url, site.vue
    settings = [("Comfy.TutorialCompleted", True), ("Comfy.Minimap.Visible", False), ("Comfy.VueNodes.Enabled", vue)]
    for setting, value in settings:
        call(f"{url}/settings/{setting}", value)
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
    driver = browser()
    driver.set_script_timeout(60)
    driver.get(url)
    wait_for_app(driver)
    yield driver
    ours = [e for e in driver.get_log("browser") if e["level"] == "SEVERE" and "poseforge" in e["message"].lower()
            and not ("userdata?dir=poseforge" in e["message"] and "404" in e["message"])]  # an empty pose library
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


def until(check, what, seconds=30.0):
    """Poll `check()` until it gives something true (returned), failing after `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"waited {seconds:g} s for {what}")


def written(path):
    """The JSON ComfyUI wrote at `path`, once it is there whole (the file appears before its bytes), else None."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


EDITOR = "window.app.graph._nodes.find((n) => n.type === 'PF_PoseRender')?.pfEditor"


def load_editor(driver, graph):
    """Load `graph` and wait until its pose editor has drawn its first person's joints."""
    assert "error" not in driver.execute_async_script(LOAD, graph)
    until(lambda: driver.execute_script(f"const e = {EDITOR}; return !!(e && e.canvas.clientWidth && "
                                        "(e.clientPoint(0, 0) || !e.shown().people.length));"), "the pose editor")


def click(driver, label):
    """Click the editor's toolbar button `label`, as a user does."""
    found = driver.execute_script(f"return [...{EDITOR}.toolbar.querySelectorAll('button')]"
                                  ".find((b) => b.textContent === arguments[0]);", label)
    assert found is not None, label
    found.click()


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
            for entry in list(history.values())[after:]:  # ComfyUI keeps them in the order they ran
                for output in entry.get("outputs", {}).values():
                    for image in output.get("images", []):
                        if image["filename"].startswith(prefix):
                            return image
        time.sleep(0.5)
    pytest.fail(f"no image saved under {prefix}")


def test_a_dragged_joint_lands_where_it_was_dropped_survives_a_reload_and_is_exported(editor, site):
    from selenium.webdriver.common.action_chains import ActionChains

    url, base = site.url, site.base
    driver = editor
    load_editor(driver, pose_graph(url))
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
    until(lambda: driver.execute_script("return window.app.graph._nodes.some((n) => n.type === 'PF_PoseRender')"),
          "the editor to restore the workflow it had")
    assert pose_value(driver)["people"][0]["pose_keypoints_2d"][3 * WRIST:3 * WRIST + 2] == moved[:2]


def test_remove_add_flip_load_and_undo_in_the_editor(editor, site):
    """Every change made as a user makes it: right-click, the joint list and a click, the toolbar's
    buttons, a file dropped on the node; each state polled for, not waited for."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    url = site.url
    driver = editor
    load_editor(driver, pose_graph(url))
    get = "return " + EDITOR
    original = pose_value(driver)
    body = lambda: pose_value(driver)["people"][0]["pose_keypoints_2d"] if pose_value(driver)["people"] else None
    wrist = driver.execute_script(get + ".clientPoint(0, arguments[0]);", WRIST)
    canvas = driver.execute_script(get + ".canvas;")
    actions = ActionChains(driver)
    actions.w3c_actions.pointer_action.move_to_location(round(wrist["x"]), round(wrist["y"]))
    actions.w3c_actions.pointer_action.pointer_down(button=2)  # a right click removes the joint
    actions.w3c_actions.pointer_action.pointer_up(button=2)
    actions.perform()
    until(lambda: body()[3 * WRIST:3 * WRIST + 3] == [0, 0, 0], "the right-clicked joint removed")
    adding = Select(driver.execute_script(get + ".adding;"))
    adding.select_by_value(str(WRIST))  # the missing joint, placed with a click
    view = driver.execute_script(get + ".view();")
    rect = driver.execute_script("return arguments[0].getBoundingClientRect();", canvas)
    actions = ActionChains(driver)
    at = (round(rect["left"] + view["x"] + 0.3 * view["w"]), round(rect["top"] + view["y"] + 0.7 * view["h"]))
    actions.w3c_actions.pointer_action.move_to_location(*at)
    actions.w3c_actions.pointer_action.click()
    actions.perform()
    placed = until(lambda: body()[3 * WRIST:3 * WRIST + 3] if body()[3 * WRIST + 2] else None, "the joint placed")
    assert placed[0] == pytest.approx(0.3, abs=2 / view["w"]) and placed[1] == pytest.approx(0.7, abs=2 / view["h"])
    click(driver, "flip")
    left_wrist = 7  # the right wrist, mirrored about the person's middle, is the left wrist now
    xs = [x for x, _ in STANDING] + [placed[0]]
    flipped = until(lambda: body() if body()[3 * left_wrist] == pytest.approx(min(xs) + max(xs) - placed[0])
                    else None, "the person flipped")
    assert flipped[3 * left_wrist + 1] == pytest.approx(placed[1])
    click(driver, "+ person")
    until(lambda: len(pose_value(driver)["people"]) == 2, "a second person")
    click(driver, "− person")
    until(lambda: len(pose_value(driver)["people"]) == 1, "the second person deleted")
    # a pose file as comfyui_controlnet_aux writes it: a list of frames, pixel coordinates, hands
    hand = [v for k in range(21) for v in (100 + 3 * k, 200 + 2 * k, 0.9)]
    person = {"pose_keypoints_2d": [v for x, y in STANDING for v in (x * 768, y * 1024, 0.8)],
              "hand_left_keypoints_2d": hand, "hand_right_keypoints_2d": None, "face_keypoints_2d": None}
    drop(driver, json.dumps([{"people": [person, person], "canvas_width": 768, "canvas_height": 1024}]))
    frame = until(lambda: (f := pose_value(driver))["canvas_width"] == 768 and f, "the dropped file loaded")
    assert (frame["canvas_width"], frame["canvas_height"], len(frame["people"])) == (768, 1024, 2)
    assert frame["people"][0]["hand_left_keypoints_2d"][:2] == pytest.approx([100 / 768, 200 / 1024])
    assert frame["people"][0]["pose_keypoints_2d"][:2] == pytest.approx(STANDING[0])
    drop(driver, "not a pose")
    time.sleep(0.5)  # nothing may change: there is no state to poll for
    assert pose_value(driver) == frame
    for step in range(6):  # load, delete, add, flip, add the joint, remove it: back where it began
        before = driver.execute_script(get + ".undo.length;")
        click(driver, "undo")
        until(lambda: driver.execute_script(get + ".undo.length;") == before - 1, f"undo {step + 1}")
    assert pose_value(driver) == original


def drop(driver, text, name="pose.json"):
    """A file dropped on the editor (a real drop event carrying it)."""
    driver.execute_script(f"const e = {EDITOR}.element; const t = new DataTransfer();"
                          "t.items.add(new File([arguments[0]], arguments[1], {type: 'application/json'}));"
                          "e.dispatchEvent(new DragEvent('drop', {dataTransfer: t, bubbles: true, cancelable: true}));",
                          text, name)


def test_a_body_25_file_is_drawn_as_the_server_converts_it(editor, site):
    """BODY_25 (OpenPose's 25-point body: MidHip at 8, the feet after 18): MidHip dropped, the hips in
    their COCO places, as PF_PoseRender converts it; the editor's tables are the server's."""
    url = site.url
    driver = editor
    load_editor(driver, pose_graph(url))
    tables = driver.execute_script("return fetch('/poseforge/pose_tables').then((r) => r.json());")
    coco = [[x + 0.05, y] for x, y in STANDING]  # another place than the graph's person
    body25 = coco[:8] + [[0.55, 0.56]] + coco[8:] + [[0.4, 0.95]] * 6  # MidHip after the left wrist, then the feet
    assert len(body25) == 25 and tables["body_25_to_coco"][8] == 9
    person = {"pose_keypoints_2d": [v for x, y in body25 for v in (x, y, 1.0)]}
    drop(driver, json.dumps({"people": [person], "canvas_width": 512, "canvas_height": 512}))
    points = until(lambda: (p := pose_value(driver)["people"][0]["pose_keypoints_2d"])[0] == pytest.approx(coco[0][0])
                   and p, "the BODY_25 file loaded")
    assert len(points) == 54
    assert [points[3 * j:3 * j + 2] for j in range(18)] == [pytest.approx(p) for p in coco]  # the right hip at 8


def hand(wrist, towards):
    """21 points of an open hand (OpenPose order: wrist, then four points a finger), pixels."""
    import math
    points = [wrist]
    for finger in range(5):
        angle = towards + math.radians(-50 + 25 * finger)
        for k in range(1, 5):
            points.append((wrist[0] + 9 * k * math.cos(angle), wrist[1] + 9 * k * math.sin(angle)))
    return [v for x, y in points for v in (x, y, 1.0)]


def test_the_editor_takes_the_extracted_pose_over_its_photo(editor, site):
    import math

    from readme_pictures import ASTRONAUT

    url = site.url
    driver = editor
    g = workflows.Graph(call(url + "/object_info"))
    photo = g.add("LoadImage", (40, 40), {"image": "poseforge_astronaut.jpg"}, size=(300, 360))
    # a run of its own on each rendering (stick_width): ComfyUI resends no result of a node it finds cached
    extract = g.add("PF_OpenPoseExtract", (40, 430), {"detect_hands": False, "detect_face": False,
                                                         "detector": "dwpose", "stick_width": 5 if site.vue else 4},
                    {"image": (photo, 0)}, size=(300, 300))
    render = g.add("PF_PoseRender", (380, 40), {"width": 512, "height": 512}, {"keypoints": (extract, 1)},
                   size=(440, 680))
    g.add("SaveImage", (860, 40), {"filename_prefix": "pf_from_extract"}, {"images": (render, 0)}, size=(300, 300))
    load_editor(driver, g.ui())
    get = "return " + EDITOR
    assert "poseforge_astronaut.jpg" in driver.execute_script(get + ".photoUrl;")  # the photo behind the skeleton
    until(lambda: driver.execute_script(get + ".photo?.naturalWidth;") == 512, "the photo behind the skeleton")
    before = len(call(url + "/history"))
    driver.execute_script("window.app.queuePrompt(0, 1)")
    wait_for_saved(url, "pf_from_extract", before)
    entry = next(e for e in call(url + "/history").values()
                 if any(i["filename"].startswith("pf_from_extract") for o in e["outputs"].values()
                        for i in o.get("images", [])))
    found = json.loads(entry["outputs"][str(extract)]["openpose_json"][0])  # JSON text, as comfyui_controlnet_aux
    found = found[0] if isinstance(found, list) else found
    assert len(found["people"]) == 2  # tests/tiny_dwpose.py's crafted two
    until(lambda: driver.execute_script(get + ".extracted();"), "the executed event to reach the page")
    shown = driver.execute_script(get + ".shown();")
    assert driver.execute_script(get + ".edited();") is None  # a preview until the first edit
    assert len(shown["people"]) == len(found["people"])
    click(driver, "from extract")
    copied = until(lambda: driver.execute_script(get + ".edited();") and pose_value(driver), "the extract copied")
    for mine, theirs in zip(copied["people"], found["people"], strict=True):  # present points keep c = 1
        assert mine["pose_keypoints_2d"] == pytest.approx(
            [v if k % 3 != 2 else float(v > 0) for k, v in enumerate(theirs["pose_keypoints_2d"])])
    if site.shots:  # the README's picture: keypoints placed by hand on the photo, with hands
        body = [v for x, y in ASTRONAUT for v in (x, y, 1.0 if x or y else 0.0)]
        frame = [{"people": [{"pose_keypoints_2d": body, "hand_right_keypoints_2d": hand(ASTRONAUT[4], -math.pi / 2),
                              "hand_left_keypoints_2d": hand(ASTRONAUT[7], -2 * math.pi / 3)}],
                  "canvas_width": 512, "canvas_height": 512}]
        driver.execute_async_script("const done = arguments[arguments.length - 1];"
                                    + get + ".loadFile(new File([arguments[0]], 'pose.json')).then(done);",
                                    json.dumps(frame))
        driver.execute_script(get + ".show('hands', true);")
        before = len(call(url + "/history"))
        driver.execute_script("window.app.queuePrompt(0, 1)")  # Save Image shows the edited map
        wait_for_saved(url, "pf_from_extract", before)
        time.sleep(1.0)
        driver.save_screenshot(os.path.join(site.shots, "pose_editor.png"))


def shown_texts(driver, kind, field="pfPriceText"):
    return driver.execute_script("return window.app.graph._nodes.find((n) => n.type === arguments[0])"
                                 "?.[arguments[1]] ?? null", kind, field)


def test_the_price_shown_before_a_segmind_run_is_the_servers_plan(editor, site):
    url = site.url
    driver = editor
    table = json.load(open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "segmind", "endpoints.json")))
    driver.execute_async_script(LOAD, UI["sdxl_openpose_codeformer_segmind"])
    driver.execute_script("const n = window.app.graph._nodes.find((n) => n.type === 'PF_SDXLText2Image');"
                          "n.widgets.find((w) => w.name === 'samples').value = 3;"
                          "window.app.graph.setDirtyCanvas(true, true);")
    cost = table["sdxl1.0-txt2img"]["cost_usd"]
    expected = f"Segmind est. ${round(3 * cost, 6)} for this run (3 × ${cost}; price list of {table['_prices']['as_of']})"
    until(lambda: (shown_texts(driver, "PF_SDXLText2Image") or "").startswith(expected), "the plan's price")
    assert shown_texts(driver, "PF_SDXLOpenPose").startswith(
        f"Segmind est. ${table['sdxl-openpose']['cost_usd']} for each image of the batch")
    assert shown_texts(driver, "PF_CodeFormer") == "Segmind codeformer: price not published"
    driver.execute_async_script(LOAD, UI["ipadapter_xl_openpose_segmind"])
    until(lambda: shown_texts(driver, "PF_SDXLOpenPose") == "Segmind ip-sdxl-openpose: price not published · "
          "ip-sdxl-openpose's fields are unconfirmed by Segmind", "the image-prompt endpoint's plan")
    driver.execute_async_script(LOAD, UI["sdxl_openpose_codeformer"])  # local: no price
    until(lambda: driver.execute_script("return window.app.graph._nodes.filter((n) => n.type === 'PF_SDXLOpenPose'"
                                        " && n.pfPlan?.backend === 'local').length === 1"), "the local graph's plan")
    assert driver.execute_script("return window.app.graph._nodes.filter((n) => n.pfPriceText).length") == 0


def test_the_editor_shows_why_segmind_would_refuse_instead_of_a_price(editor, site):
    """A LoRA (or a local-only scheduler) on a node set to auto or segmind: the run would refuse before
    sending anything, so the editor says so and prices nothing (it priced such runs when it guessed)."""
    driver = editor
    for example, kind, widget, value, said in (
            ("sdxl_openpose_lora", "PF_SDXLOpenPose", "backend", "segmind", "take no LoRA"),
            ("sdxl_openpose_codeformer_segmind", "PF_SDXLText2Image", "scheduler", "DPM++ 2M Karras", "local only")):
        driver.execute_async_script(LOAD, UI[example])
        driver.execute_script("window.app.graph._nodes.find((n) => n.type === arguments[0]).widgets"
                              ".find((w) => w.name === arguments[1]).value = arguments[2];", kind, widget, value)
        until(lambda: said in (shown_texts(driver, kind, "pfRefusalText") or ""), f"{said!r} under {kind}")
        assert shown_texts(driver, kind) == ""


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


def test_a_hosted_run_in_the_editor_shows_its_price_then_its_progress(editor, site, segmind):
    url, vue = site.url, site.vue
    driver = editor
    g = workflows.Graph(call(url + "/object_info"))
    prompt = "a dancer, studio light" + (" (vue)" if vue else "")  # not ComfyUI's cached run of the other rendering
    sdxl = g.add("PF_SDXLText2Image", (40, 40), {"prompt": prompt, "backend": "segmind",
                                                 "width": 768, "height": 768, "samples": 2}, size=(420, 420))
    g.add("SaveImage", (520, 40), {"filename_prefix": "pf_hosted"}, {"images": (sdxl, 0)}, size=(400, 400))
    driver.execute_async_script(LOAD, g.ui())
    driver.execute_script("window.pfTexts = []; window.app.api.addEventListener('progress_text',"
                          " (e) => window.pfTexts.push(e.detail.text));")
    segmind.latency = 4.0
    try:
        before = len(call(url + "/history"))
        driver.execute_script("window.app.queuePrompt(0, 1)")
        until(lambda: len(driver.execute_script("return window.pfTexts")) >= 3, "three progress texts", 60)
        if site.shots:
            driver.save_screenshot(os.path.join(site.shots, "hosted_run.png"))
        texts = driver.execute_script("return window.pfTexts")
        assert texts and all(t.startswith("Segmind sdxl1.0-txt2img: ") for t in texts), texts
        assert (shown_texts(driver, "PF_SDXLText2Image") or "").startswith("Segmind est. $")
        wait_for_saved(url, "pf_hosted", before)
    finally:
        segmind.latency = 0.0


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


def test_a_huge_pose_in_a_workflow_loads_and_stays_editable(editor, site):
    """A 1 MB pose (a face of 100,000 points, 100 people with hands): the workflow loads (a spread of
    its values overflowed the stack and aborted loading), and a click reads the pose once, not once a
    point (a cached parse)."""
    url = site.url
    driver = editor
    person = {"pose_keypoints_2d": [v for x, y in STANDING for v in (x, y, 1.0)],
              "hand_left_keypoints_2d": [0.3, 0.5, 1.0] * 21, "hand_right_keypoints_2d": [0.6, 0.5, 1.0] * 21}
    frame = {"people": [dict(person, face_keypoints_2d=[0.5, 0.1, 1.0] * 100_000)] + [person] * 99,
             "canvas_width": 512, "canvas_height": 512}
    g = pose_graph(url)
    render = next(n for n in g["nodes"] if n["type"] == "PF_PoseRender")
    index = next(k for k, v in enumerate(render["widgets_values"]) if isinstance(v, str) and v.startswith("{"))
    render["widgets_values"][index] = json.dumps(frame)
    assert len(render["widgets_values"][index]) > 1_000_000
    load_editor(driver, g)
    assert driver.execute_script(f"return {EDITOR}.shown().people.length;") == 100
    parses = driver.execute_script(f"const e = {EDITOR}; const p = e.clientPoint(0, 4); let n = 0;"
                                   "const real = JSON.parse; JSON.parse = (...a) => { n += 1; return real(...a); };"
                                   "try { e.hit({clientX: p.x, clientY: p.y}); } finally { JSON.parse = real; }"
                                   "return n;")
    assert parses == 0  # the click found its point in the pose already read


def drag(driver, start, end, steps=6, keys=()):
    """A real drag from `start` to `end` (page points) with `keys` (selenium Keys) held."""
    from selenium.webdriver.common.action_chains import ActionChains

    actions = ActionChains(driver)
    for key in keys:
        actions.key_down(key)
    pointer = actions.w3c_actions.pointer_action
    pointer.move_to_location(round(start[0]), round(start[1]))
    pointer.pointer_down()
    for k in range(1, steps + 1):
        pointer.move_to_location(round(start[0] + (end[0] - start[0]) * k / steps),
                                 round(start[1] + (end[1] - start[1]) * k / steps))
    pointer.pointer_up()
    for key in keys:
        actions.key_up(key)
    actions.perform()


def press(driver, key, shift=False):
    """A key pressed in the editor (focused as a click on it focuses it, without clicking the pose)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script(f"{EDITOR}.element.focus();")
    actions = ActionChains(driver)
    if shift:
        actions.key_down(Keys.SHIFT)
    actions.send_keys(key)
    if shift:
        actions.key_up(Keys.SHIFT)
    actions.perform()


def page_point(driver, x, y):
    """The page position of the normalized point (x, y) of the editor's canvas."""
    rect = driver.execute_script(f"return {EDITOR}.canvas.getBoundingClientRect();")
    view = driver.execute_script(f"return {EDITOR}.view();")
    return rect["left"] + view["x"] + x * view["w"], rect["top"] + view["y"] + y * view["h"]


def joints(frame, person=0):
    flat = frame["people"][person]["pose_keypoints_2d"]
    return [flat[3 * j:3 * j + 3] for j in range(18)]


def set_scope(driver, scope):
    from selenium.webdriver.support.ui import Select

    Select(driver.execute_script(f"return {EDITOR}.scope;")).select_by_value(scope)


def saved_map(url, base, driver, prefix, count=1):
    """Queue the graph in the editor; the images Save Image wrote under `prefix` (RGB, as saved)."""
    before = len(call(url + "/history"))
    driver.execute_script("window.app.queuePrompt(0, 1)")
    first = wait_for_saved(url, prefix, before)
    entry = next(e for e in list(call(url + "/history").values())[before:]
                 if any(i["filename"] == first["filename"] for o in e["outputs"].values() for i in o.get("images", [])))
    saved = [i for o in entry["outputs"].values() for i in o.get("images", []) if i["filename"].startswith(prefix)]
    assert len(saved) == count
    return [Image.open(base / "output" / i["subfolder"] / i["filename"]).convert("RGB") for i in saved]


def test_a_whole_person_and_a_limb_move_turn_and_scale_and_the_saved_map_shows_it(editor, site):
    """Person scope: a drag of any joint moves every joint by the drag; limb scope: the elbow takes the
    wrist, the rest stays; Shift+drag turns the left forearm about its elbow by the angle dragged; the
    keys turn and scale a limb in 5° and 5 % steps; Delete in the editor removes the joint, not the
    node. Then the map ComfyUI saves has each joint's colour where the editor put it."""
    import math

    from selenium.webdriver.common.keys import Keys

    url, base, vue = site.url, site.base, site.vue
    driver = editor
    load_editor(driver, pose_graph(url))
    tables = driver.execute_script("return fetch('/poseforge/pose_tables').then((r) => r.json());")
    get = "return " + EDITOR
    set_scope(driver, "person")
    shift = (0.12, -0.05)
    start = driver.execute_script(get + ".clientPoint(0, 1);")  # the neck
    view = driver.execute_script(get + ".view();")
    drag(driver, (start["x"], start["y"]), (start["x"] + shift[0] * view["w"], start["y"] + shift[1] * view["h"]))
    moved = until(lambda: (f := pose_value(driver)) and joints(f)[0][0] != STANDING[0][0] and f, "the person moved")
    tolerance = 1.5 / view["w"]
    for (x, y), (mx, my, c) in zip(STANDING, joints(moved)):
        assert (mx, my) == (pytest.approx(x + shift[0], abs=tolerance), pytest.approx(y + shift[1], abs=tolerance))
    before = joints(moved)
    set_scope(driver, "limb")
    elbow = driver.execute_script(get + ".clientPoint(0, 3);")  # the right elbow takes the right wrist
    drag(driver, (elbow["x"], elbow["y"]), (elbow["x"] - 0.06 * view["w"], elbow["y"] + 0.04 * view["h"]))
    limb = until(lambda: (f := pose_value(driver)) and joints(f)[3] != before[3] and joints(f), "the limb moved")
    delta = (limb[3][0] - before[3][0], limb[3][1] - before[3][1])
    assert delta == (pytest.approx(-0.06, abs=tolerance), pytest.approx(0.04, abs=tolerance))
    assert limb[4][:2] == pytest.approx([before[4][0] + delta[0], before[4][1] + delta[1]], abs=1e-6)
    assert [j for k, j in enumerate(limb) if k not in (3, 4)] == [j for k, j in enumerate(before) if k not in (3, 4)]
    # Shift+drag the left wrist a quarter turn about its elbow (a square canvas: the angle on screen)
    elbow, wrist = limb[6], limb[7]
    radius = (wrist[0] - elbow[0], wrist[1] - elbow[1])
    turned = (elbow[0] - radius[1], elbow[1] + radius[0])  # +90° on screen (y down)
    arc = [(elbow[0] + math.cos(a) * radius[0] - math.sin(a) * radius[1],
            elbow[1] + math.sin(a) * radius[0] + math.cos(a) * radius[1]) for a in (0, math.pi / 4, math.pi / 2)]
    from selenium.webdriver.common.action_chains import ActionChains

    actions = ActionChains(driver)
    actions.key_down(Keys.SHIFT)
    pointer = actions.w3c_actions.pointer_action
    pointer.move_to_location(*[round(v) for v in page_point(driver, *arc[0])])
    pointer.pointer_down()
    for point in arc[1:]:
        pointer.move_to_location(*[round(v) for v in page_point(driver, *point)])
    pointer.pointer_up()
    actions.key_up(Keys.SHIFT)
    actions.perform()
    after = until(lambda: (j := joints(pose_value(driver)))[7] != wrist and j, "the forearm turned")
    assert after[7][:2] == pytest.approx(turned, abs=2 * tolerance) and after[6] == elbow
    # keys: ] turns the picked limb 5° about its parent, = scales it 5 %, both about the elbow
    canvas = driver.execute_script(get + ".canvas;")
    press(driver, "]")
    keyed = until(lambda: (j := joints(pose_value(driver)))[7] != after[7] and j, "the ] key")
    angle = lambda j: math.atan2(j[7][1] - j[6][1], j[7][0] - j[6][0])
    assert angle(keyed) - angle(after) == pytest.approx(math.radians(5), abs=1e-6)
    press(driver, "=")
    scaled = until(lambda: (j := joints(pose_value(driver)))[7] != keyed[7] and j, "the = key")
    length = lambda j: math.dist(j[7][:2], j[6][:2])
    assert length(scaled) / length(keyed) == pytest.approx(1.05, abs=1e-6)
    count = driver.execute_script("return window.app.graph._nodes.length")
    nose = driver.execute_script(get + ".clientPoint(0, 0);")
    set_scope(driver, "joint")
    ActionChains(driver).move_to_element_with_offset(canvas, 0, 0).perform()
    drag(driver, (nose["x"], nose["y"]), (nose["x"], nose["y"]), steps=1)  # a click picks the nose
    press(driver, Keys.DELETE)
    final = until(lambda: (j := joints(pose_value(driver)))[0] == [0, 0, 0] and j, "Delete removed the nose")
    assert driver.execute_script("return window.app.graph._nodes.length") == count  # the node stays
    [saved] = saved_map(url, base, driver, "pf_edited")
    for j in (1, 4, 6, 7, 10):  # each joint's colour where it now is
        x, y = round(final[j][0] * 512), round(final[j][1] * 512)
        assert saved.getpixel((x, y)) == tuple(tables["colours"][j]), (j, vue)
    old = (round(STANDING[7][0] * 512), round(STANDING[7][1] * 512))
    assert saved.getpixel(old) != tuple(tables["colours"][7])


def test_frames_canvas_size_and_hands_in_the_editor(editor, site):
    """Two frames (a copy added, its person nudged with the arrow keys) are drawn as a batch of two
    maps; the canvas made 768 x 512 keeps the pose's shape; hand points are out of reach until shown,
    then dragged."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    url, base = site.url, site.base
    driver = editor
    load_editor(driver, pose_graph(url))
    get = "return " + EDITOR
    click(driver, "+ frame")
    frames = until(lambda: isinstance(v := pose_value(driver), list) and len(v) == 2 and v, "a second frame")
    assert frames[0] == frames[1] and driver.execute_script(get + ".frameLabel.textContent;") == "frame 2/2"
    neck = driver.execute_script(get + ".clientPoint(0, 1);")
    set_scope(driver, "person")
    drag(driver, (neck["x"], neck["y"]), (neck["x"], neck["y"]), steps=1)  # picks the person
    press(driver, Keys.ARROW_RIGHT, shift=True)  # 10 px right
    press(driver, Keys.ARROW_DOWN)  # 1 px down
    nudged = until(lambda: (v := pose_value(driver))[1] != frames[1] and joints(v[1])[0][1] != STANDING[0][1] and v,
                   "the arrows")
    for (x, y), (mx, my, _) in zip(STANDING, joints(nudged[1])):
        assert (mx, my) == (pytest.approx(x + 10 / 512), pytest.approx(y + 1 / 512))
    assert nudged[0] == frames[0]
    press(driver, Keys.PAGE_UP)
    until(lambda: driver.execute_script(get + ".frameLabel.textContent;") == "frame 1/2", "PgUp")
    width = driver.execute_script(get + ".size[0];")
    width.clear()
    width.send_keys("768", Keys.ENTER)
    resized = until(lambda: (v := pose_value(driver))[0]["canvas_width"] == 768 and v, "the canvas resized")
    assert all((f["canvas_width"], f["canvas_height"]) == (768, 512) for f in resized)
    for (x, y), (mx, my, _) in zip(STANDING, joints(resized[0])):  # the same pixels, centred on a wider canvas
        assert (mx * 768, my * 512) == (pytest.approx(x * 512 + 128), pytest.approx(y * 512))
    driver.execute_script("const n = window.app.graph._nodes.find((n) => n.type === 'PF_PoseRender');"
                          "for (const w of n.widgets) if (w.name === 'width' || w.name === 'height') w.value = 0;")
    one, two = saved_map(url, base, driver, "pf_edited", count=2)  # width, height 0: the canvas's size
    assert one.size == two.size == (768, 512)
    tables = driver.execute_script("return fetch('/poseforge/pose_tables').then((r) => r.json());")
    for img, frame in ((one, resized[0]), (two, resized[1])):
        x, y = joints(frame)[4][:2]
        assert img.getpixel((round(x * 768), round(y * 512))) == tuple(tables["colours"][4])
    # hands: a person with a right hand at the wrist, dropped as a file
    hand_points = [v for k in range(21) for v in (0.33 + 0.01 * (k % 5), 0.6 + 0.01 * (k // 5), 1.0)]
    person = {"pose_keypoints_2d": [v for x, y in STANDING for v in (x, y, 1.0)], "hand_right_keypoints_2d": hand_points}
    drop(driver, json.dumps({"people": [person], "canvas_width": 512, "canvas_height": 512}))
    until(lambda: isinstance(v := pose_value(driver), dict) and v["people"][0].get("hand_right_keypoints_2d"), "the hand")
    tip = driver.execute_script(get + ".clientPoint(0, 20, 'hand_right_keypoints_2d');")
    assert driver.execute_script(get + ".hit({clientX: arguments[0], clientY: arguments[1]});", tip["x"], tip["y"]) \
        is None or driver.execute_script(get + ".hit({clientX: arguments[0], clientY: arguments[1]}).part;",
                                         tip["x"], tip["y"]) == "pose_keypoints_2d"  # hidden: not reachable
    click_box = driver.execute_script(get + ".boxes.hands;")
    click_box.click()
    set_scope(driver, "joint")
    drag(driver, (tip["x"], tip["y"]), (tip["x"] + 30, tip["y"] - 20))
    until(lambda: pose_value(driver)["people"][0]["hand_right_keypoints_2d"][60] != hand_points[60], "the hand point")


def test_a_pose_kept_in_the_library_is_listed_after_a_reload_and_inserts(editor, site):
    """The library is ComfyUI's user data: "keep" writes user/default/poseforge/poses/<name>.json
    through /userdata; after a reload the name is listed and "insert" adds its people; "delete"
    (twice) removes the file."""
    url, base, vue = site.url, site.base, site.vue
    driver = editor
    name = f"arms up {'vue' if vue else 'classic'}"
    load_editor(driver, pose_graph(url))
    get = "return " + EDITOR
    click(driver, "+ person")  # a pose of its own, to know it again
    until(lambda: len(pose_value(driver)["people"]) == 2, "a second person")
    driver.execute_script(get + ".poseName;").send_keys(name)
    click(driver, "keep")
    stored = base / "user" / "default" / "poseforge" / "poses" / f"{name}.json"
    assert until(lambda: written(stored), "the kept pose in ComfyUI's user data") == [pose_value(driver)]
    first = stored.read_text()
    click(driver, "− person")  # one person again, kept under the same name: asked first, then replaced
    until(lambda: len(pose_value(driver)["people"]) == 1, "the second person deleted")
    driver.execute_script(get + ".poseName;").send_keys(name)
    click(driver, "keep")
    until(lambda: driver.execute_script(get + ".keepButton.textContent;") == "replace?", "keep asking first")
    assert stored.read_text() == first
    click(driver, "replace?")
    until(lambda: written(stored) not in (None, json.loads(first)), "the kept pose replaced")
    assert written(stored) == [pose_value(driver)]
    driver.refresh()
    wait_for_app(driver)
    empty = pose_graph(url)
    render = next(n for n in empty["nodes"] if n["type"] == "PF_PoseRender")
    index = next(k for k, v in enumerate(render["widgets_values"]) if isinstance(v, str) and v.startswith("{"))
    render["widgets_values"][index] = json.dumps({"people": [], "canvas_width": 512, "canvas_height": 512})
    load_editor(driver, empty)
    names = driver.execute_async_script("const done = arguments[arguments.length - 1];"
                                        f"{EDITOR}.loadLibrary().then(done);")
    assert name in names
    from selenium.webdriver.support.ui import Select

    Select(driver.execute_script(get + ".library;")).select_by_value(name)
    click(driver, "insert")
    inserted = until(lambda: pose_value(driver)["people"] and pose_value(driver), "the library pose inserted")
    assert inserted["people"] == json.loads(stored.read_text())[0]["people"]
    click(driver, "delete")
    click(driver, "delete?")  # the second click deletes
    until(lambda: not stored.exists(), "the library pose deleted")
    until(lambda: name not in [o.get_attribute("value") for o in
                               Select(driver.execute_script(get + ".library;")).options], "the list without it")
