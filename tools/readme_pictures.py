"""The pictures the README and the template browser show, from a run of the integration test.

    COMFYUI_DIR=... POSEFORGE_SCREENSHOTS=/tmp/shots pytest tests/test_comfyui_integration.py \
        tests/test_comfyui_editor.py
    python tools/readme_pictures.py /tmp/shots <that run's ComfyUI output folder>

Writes example_workflows/<name>.jpg (thumbnails: the graph in the real editor),
docs/images/<name>.jpg (the same, larger; the pose editor and a hosted run there only)
and docs/images/outputs.jpg: the pose photo,
PF_PoseRender's map of keypoints placed on it by hand, and what the local example
graphs produced in that run - on tiny random-weight test models, so noise, and labelled so.
"""
import os
import sys

from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
EXAMPLES = os.path.join(ROOT, "example_workflows")
IMAGES = os.path.join(ROOT, "docs", "images")
CANVAS = (68, 80, 1600, 857)  # the editor's graph canvas in a 1600-wide screenshot (no sidebar, no menu)
FEATURES = {"pose_editor": (110, 95, 975, 670), "hosted_run": (110, 95, 800, 480)}  # README-only, the nodes

# COCO-18 body points placed by hand on poseforge_astronaut.jpg (512x512, pixels; 0 = not visible)
ASTRONAUT = [(222, 122), (225, 235), (110, 270), (60, 400), (150, 490), (330, 275), (355, 420), (300, 470),
             (0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (200, 100), (245, 100), (165, 110), (285, 110)]


def graphs(shots):
    os.makedirs(IMAGES, exist_ok=True)
    for file in sorted(os.listdir(shots)):
        name = os.path.splitext(file)[0]
        with Image.open(os.path.join(shots, file)) as shot:
            canvas = shot.convert("RGB").crop(FEATURES.get(name, CANVAS))
        canvas.save(os.path.join(IMAGES, name + ".jpg"), quality=85)
        if name in FEATURES:
            continue
        canvas.resize((768, round(768 * canvas.height / canvas.width)), Image.LANCZOS).save(
            os.path.join(EXAMPLES, name + ".jpg"), quality=85)


def pose_render():
    import numpy as np
    from doctor import load_pack

    points = [v for x, y in ASTRONAUT for v in (x, y, 1.0 if x or y else 0.0)]
    frame = {"people": [{"pose_keypoints_2d": points}], "canvas_width": 512, "canvas_height": 512}
    node = load_pack().NODE_CLASS_MAPPINGS["PF_PoseRender"]()
    image = node.render([frame], 512, 512, True, False, False, 4, 0.0, 512)["result"][0][0]  # first image of the IMAGE
    return Image.fromarray((image.numpy() * 255).round().astype(np.uint8))


def outputs(output_dir):
    panels = [(Image.open(os.path.join(EXAMPLES, "input", "poseforge_astronaut.jpg")), "input photo"),
              (pose_render(), "PF_PoseRender: keypoints placed by hand")]
    for prefix, label in (("ipadapter_openpose", "PF_SDXLOpenPose + PF_IPAdapter\n(tiny random-weight test model)"),
                          ("sdxl_openpose_codeformer", "... + PF_CodeFormer\n(tiny random-weight test models)")):
        file = sorted(f for f in os.listdir(os.path.join(output_dir, "PoseForge")) if f.startswith(prefix))[0]
        panels.append((Image.open(os.path.join(output_dir, "PoseForge", file)), label))
    size, pad = 320, 44
    strip = Image.new("RGB", (len(panels) * (size + 8) + 8, size + pad + 8), (24, 24, 24))
    draw = ImageDraw.Draw(strip)
    for i, (image, label) in enumerate(panels):
        x = 8 + i * (size + 8)
        strip.paste(image.convert("RGB").resize((size, size), Image.LANCZOS), (x, 8))
        draw.multiline_text((x + 4, size + 12), label, fill=(230, 230, 230))
    strip.save(os.path.join(IMAGES, "outputs.jpg"), quality=88)


if __name__ == "__main__":
    graphs(sys.argv[1])
    outputs(sys.argv[2])
