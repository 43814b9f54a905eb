"""web/pose_model.js, the editor's pose data and changes, run by Node.js on the server's own tables
(engines/pose.tables): what a pick of a joint, a limb or a person takes with it, the pivot it turns
about, a turn measured in the canvas's pixels, the canvas refit, the frames read from files (BODY_25
converted as the server converts it, the bounds applied). The real-browser tests drive the same code
through the editor; these pin its rules where they are cheapest to state. Skipped without `node`."""
import json
import math
import os
import shutil
import subprocess

import pytest

from conftest import pf

NODE = shutil.which("node")
MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web", "pose_model.js")
pytestmark = pytest.mark.skipif(not NODE, reason="Node.js runs the editor's module")
STANDING = [[0.5, 0.14], [0.5, 0.26], [0.41, 0.26], [0.36, 0.42], [0.33, 0.57], [0.59, 0.26], [0.64, 0.42],
            [0.67, 0.57], [0.45, 0.56], [0.45, 0.74], [0.45, 0.92], [0.55, 0.56], [0.55, 0.74], [0.55, 0.92],
            [0.48, 0.12], [0.52, 0.12], [0.46, 0.13], [0.54, 0.13]]
BODY = "pose_keypoints_2d"


def js(body, **values):
    """Run `body` (an async function body with `m`, the module, `T`, the server's tables, and
    `values` as consts) in Node.js; its returned value, through JSON."""
    consts = "".join(f"const {k} = {json.dumps(v)};\n" for k, v in values.items())
    script = (f"import * as m from {json.dumps('file://' + MODEL)};\n"
              f"const T = {json.dumps(pf('engines.pose').tables())};\n{consts}"
              f"const out = await (async () => {{ {body} }})();\nprocess.stdout.write(JSON.stringify(out));\n")
    done = subprocess.run([NODE, "--input-type=module"], input=script, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def person(hands=True, face=True):
    p = {BODY: [v for x, y in STANDING for v in (x, y, 1.0)]}
    if hands:
        p["hand_right_keypoints_2d"] = [v for k in range(21) for v in (0.3, 0.6 + 0.001 * k, 1.0)]
        p["hand_left_keypoints_2d"] = [v for k in range(21) for v in (0.7, 0.6 + 0.001 * k, 1.0)]
    if face:
        p["face_keypoints_2d"] = [v for k in range(70) for v in (0.5, 0.12 + 0.0001 * k, 1.0)]
    return p


def picked(p, part, index, scope):
    return js("return m.selection(p, pick, scope);", p=p, pick={"person": 0, "part": part, "index": index},
              scope=scope)


def test_a_limb_takes_what_hangs_below_it():
    p = person()
    body = lambda sel: sorted(i for part, i in sel if part == BODY)
    parts = lambda sel: {part for part, _ in sel}
    elbow = picked(p, BODY, 3, "limb")  # the right elbow: the wrist and the right hand
    assert body(elbow) == [3, 4] and parts(elbow) == {BODY, "hand_right_keypoints_2d"}
    assert len([s for s in elbow if s[0] == "hand_right_keypoints_2d"]) == 21
    nose = picked(p, BODY, 0, "limb")  # the nose: eyes, ears, face
    assert body(nose) == [0, 14, 15, 16, 17] and parts(nose) == {BODY, "face_keypoints_2d"}
    hip = picked(p, BODY, 11, "limb")
    assert body(hip) == [11, 12, 13] and parts(hip) == {BODY}
    assert len(picked(p, BODY, 1, "limb")) == 18 + 21 + 21 + 70  # the neck holds everything
    finger = picked(p, "hand_left_keypoints_2d", 6, "limb")  # the index finger's second point: 6, 7, 8
    assert sorted(i for _, i in finger) == [6, 7, 8]
    assert len(picked(p, "hand_left_keypoints_2d", 0, "limb")) == 21  # the hand's wrist: the hand
    assert len(picked(p, "face_keypoints_2d", 30, "limb")) == 70
    assert picked(p, BODY, 3, "joint") == [[BODY, 3]]
    assert len(picked(p, BODY, 3, "person")) == 18 + 21 + 21 + 70
    missing = person(hands=False, face=False)
    missing[BODY][3 * 4 + 2] = 0  # a lost wrist is not moved
    assert body(picked(missing, BODY, 3, "limb")) == [3]


def test_a_turn_is_about_the_parent_joint_in_the_canvas_pixels():
    """A quarter turn of the right forearm on a 1024 x 512 canvas: the wrist's pixel offset from the
    elbow turns by 90° (normalized coordinates alone would skew it); a scale about the pivot keeps
    its direction."""
    frame = {"people": [person(hands=False, face=False)], "canvas_width": 1024, "canvas_height": 512}
    out = js("const p = f.people[0], pick = {person: 0, part: 'pose_keypoints_2d', index: 4};"
             "const sel = m.selection(p, pick, 'limb'); const c = m.pivot(p, pick, 'limb', sel);"
             "m.transform(f, p, sel, {angle: Math.PI / 2, centre: c}); return [c, p.pose_keypoints_2d];", f=frame)
    centre, flat = out
    assert centre == STANDING[3]  # the elbow
    ex, ey = STANDING[3][0] * 1024, STANDING[3][1] * 512
    wx, wy = STANDING[4][0] * 1024 - ex, STANDING[4][1] * 512 - ey
    assert (flat[12] * 1024, flat[13] * 512) == (pytest.approx(ex - wy), pytest.approx(ey + wx))
    assert flat[9:11] == pytest.approx(STANDING[3])  # the elbow stays
    scaled = js("const p = f.people[0], sel = [['pose_keypoints_2d', 4]];"
                "m.transform(f, p, sel, {scale: 2, centre: c}); return p.pose_keypoints_2d.slice(12, 14);",
                f=frame, c=STANDING[3])
    assert scaled == pytest.approx([STANDING[3][0] + 2 * (STANDING[4][0] - STANDING[3][0]),
                                    STANDING[3][1] + 2 * (STANDING[4][1] - STANDING[3][1])])
    assert math.isclose(js("return m.pivot(m.standingPerson(), {part: 'pose_keypoints_2d', index: 1}, 'limb',"
                           "m.selection(m.standingPerson(), {part: 'pose_keypoints_2d', index: 1}, 'limb'))[1];"),
                        (0.12 + 0.92) / 2)  # the neck has no parent: the middle of the body's box


def test_refit_keeps_the_shape_centred():
    people = [person(hands=False, face=False)]
    out = js("return m.refit(p, 512, 512, 768, 512);", p=people)
    for (x, y), k in zip(STANDING, range(18)):
        assert out[0][BODY][3 * k] * 768 == pytest.approx(x * 512 + 128)
        assert out[0][BODY][3 * k + 1] == pytest.approx(y)
    tall = js("return m.refit(p, 512, 512, 512, 1024);", p=people)[0][BODY]
    assert tall[1] * 1024 == pytest.approx(STANDING[0][1] * 512 + 256)


def test_frames_are_read_as_the_server_reads_them():
    tables = pf("engines.pose").tables()
    coco = [[x * 640, y * 480] for x, y in STANDING]  # pixels
    body25 = coco[:8] + [[300, 270]] + coco[8:] + [[100, 460]] * 6
    frame = {"people": [{BODY: [v for x, y in body25 for v in (x, y, 0.8)]}], "canvas_width": 640,
             "canvas_height": 480}
    frames = js("return m.parseFrames(text, T);", text=json.dumps([frame, frame]))
    assert len(frames) == 2 and frames[0]["canvas_width"] == 640
    assert [frames[0]["people"][0][BODY][3 * j:3 * j + 2] for j in range(18)] == [pytest.approx(p) for p in STANDING]
    many = js("return m.parseFrames(text, T).length;", text=json.dumps([frame] * (tables["max_frames"] + 5)))
    assert many == tables["max_frames"]
    crowd = js("return m.parseFrames(f, T)[0].people.length;",
               f={"people": [person()] * (tables["max_people"] + 1), "canvas_width": 512, "canvas_height": 512})
    assert crowd == tables["max_people"]
    odd = js("return m.parseFrames(f, T)[0];", f={"people": [{BODY: [float("nan"), 1, 1] * 18}],
                                                  "canvas_width": 10 ** 9, "canvas_height": "x"})
    assert (odd["canvas_width"], odd["canvas_height"]) == (tables["max_side"], 512)
    assert odd["people"][0][BODY] == [0] * 54  # no NaN gets through
    assert js("return [m.parseFrames('not json', T), m.parseFrames('[]', T), m.parseFrames({people: 3}, T)];") == [
        None, None, None]
