"""What a node will do, answered before it runs (engines/plan.py behind POST /poseforge/plan): the
run's own decision on the example graphs, with what their links carry; the refusals the editor used
to price (a LoRA, an image prompt on text-to-image, a local-only scheduler, a drawn pose); no path in
what the route answers."""
import copy
import json
import os

import pytest

from conftest import PACK, pf

routes = pf("nodes.routes")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = json.load(open(os.path.join(ROOT, "segmind", "endpoints.json"), encoding="utf-8"))


def graph(name):
    with open(os.path.join(ROOT, "example_workflows", "api", name + ".json"), encoding="utf-8") as f:
        return json.load(f)


def plans(g):
    return routes.plans({"prompt": g, "nodes": list(g)})["plans"]


def node(g, kind):
    return next(k for k, v in g.items() if v["class_type"] == kind)


def test_the_segmind_examples_are_planned_with_their_endpoints_and_prices(api_key, models_root):
    g = graph("sdxl_openpose_codeformer_segmind")
    g[node(g, "PF_SDXLText2Image")]["inputs"]["samples"] = 3
    found = plans(g)
    t2i, pose, face = (found[node(g, k)] for k in ("PF_SDXLText2Image", "PF_SDXLOpenPose", "PF_CodeFormer"))
    cost = TABLE["sdxl1.0-txt2img"]["cost_usd"]
    assert (t2i["backend"], t2i["endpoint"], t2i["jobs"], t2i["cost_usd"]) == ("segmind", "sdxl1.0-txt2img", 3,
                                                                             round(3 * cost, 6))
    assert t2i["as_of"] == TABLE["_prices"]["as_of"] and t2i["refused"] is None
    assert (pose["endpoint"], pose["jobs"], pose["unit_cost_usd"]) == ("sdxl-openpose", 1, TABLE["sdxl-openpose"]["cost_usd"])
    assert (face["endpoint"], face["cost_usd"]) == ("codeformer", None)  # no published price
    ip = plans(graph("ipadapter_xl_openpose_segmind"))
    assert ip[node(graph("ipadapter_xl_openpose_segmind"), "PF_SDXLOpenPose")]["endpoint"] == "ip-sdxl-openpose"
    assert set(found) == {node(g, k) for k in ("PF_SDXLText2Image", "PF_SDXLOpenPose", "PF_CodeFormer")}


def test_what_segmind_cannot_run_is_refused_before_a_price_is_shown(api_key, models_root):
    local = graph("sdxl_openpose_lora")  # a LoRA: the old editor priced it on auto
    pose_id = node(local, "PF_SDXLOpenPose")
    for backend, expected in (("segmind", "take no LoRA"), ("auto", "Segmind cannot run this graph: Segmind's "
                                                                     "endpoints take no LoRA")):
        g = copy.deepcopy(local)
        g[pose_id]["inputs"]["backend"] = backend
        answer = plans(g)[pose_id]
        assert answer["backend"] is None and expected in answer["refused"], answer
    g = graph("sdxl_openpose_codeformer_segmind")
    t2i = node(g, "PF_SDXLText2Image")
    g[t2i]["inputs"]["scheduler"] = "DPM++ 2M Karras"
    assert "local only" in plans(g)[t2i]["refused"]
    g = graph("ipadapter_xl_openpose_segmind")  # an image prompt into text-to-image
    g["9"] = {"class_type": "PF_SDXLText2Image", "inputs": dict(g[node(g, "PF_SDXLOpenPose")]["inputs"])}
    for name in ("pose", "controlnet_scale", "control_start", "control_end", "pose_fit"):
        g["9"]["inputs"].pop(name, None)
    assert "No Segmind endpoint takes an image prompt without a pose" in plans(g)["9"]["refused"]
    g = graph("ipadapter_xl_openpose_segmind")  # a drawn pose has no photo for Segmind
    g["8"] = {"class_type": "PF_PoseRender", "inputs": {"pose": "", "width": 512, "height": 512}}
    g[node(g, "PF_SDXLOpenPose")]["inputs"]["pose"] = ["8", 1]
    assert "this pose has none" in plans(g)[node(g, "PF_SDXLOpenPose")]["refused"]


def test_local_graphs_are_local_and_auto_follows_the_files_and_the_key(no_key, models_root):
    g = graph("sdxl_openpose_codeformer")
    found = plans(g)
    missing = found[node(g, "PF_SDXLOpenPose")]
    assert missing["backend"] is None and "missing model files" in missing["refused"]
    assert str(models_root) not in json.dumps(found)  # the folders are named, not where they lie
    g[node(g, "PF_SDXLOpenPose")]["inputs"]["backend"] = "auto"
    assert "No Segmind API key is set" in plans(g)[node(g, "PF_SDXLOpenPose")]["refused"]


def test_the_plan_stays_an_answer_for_odd_graphs():
    assert "error" in routes.plans({"prompt": [], "nodes": "1"})
    cyclic = {"1": {"class_type": "PF_SDXLLoRA", "inputs": {"sdxl": ["1", 0], "lora_name": "x", "strength_model": 1.0,
                                                           "strength_clip": 1.0}},
              "2": {"class_type": "PF_SDXLText2Image", "inputs": {"sdxl": ["1", 0], "backend": "local"}}}
    assert "links go over" in routes.plans({"prompt": cyclic, "nodes": ["2"]})["plans"]["2"]["refused"]
    dangling = {"2": {"class_type": "PF_SDXLText2Image", "inputs": {"sdxl": ["7", 0], "backend": "local"}}}
    assert "node 7 is not in the graph" in routes.plans({"prompt": dangling, "nodes": ["2"]})["plans"]["2"]["refused"]


def test_messages_lose_their_paths():
    text = "Cannot read /home/me/models/loras/x.safetensors (in C:\\Users\\me\\models\\y.pth); see /tmp/a/"
    assert routes.without_paths(text) == "Cannot read x.safetensors (in y.pth); see "


def test_the_pose_tables_are_the_servers():
    tables = pf("engines.pose").tables()
    render = pf("local.pose_render")
    assert tables["limbs"] == render.LIMBS and tables["body_25_to_coco"] == render.BODY_25_TO_COCO
    assert tables["parts"]["pose_keypoints_2d"] == 18 and tables["max_people"] == render.MAX_PEOPLE
    assert tables["max_frames"] == pf("engines.pose").MAX_FRAMES and tables["max_side"] == pf("host.images").MAX_SIDE
    json.dumps(tables)
