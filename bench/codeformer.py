"""CodeFormer: batched faces versus a per-face loop, and the node versus the
reference procedure (detect, align, restore each face, paste back).

Weights: the files in $POSEFORGE_MODELS (codeformer.pth, detection_Resnet50_Final.pth)
or random-weight ones written to a temp folder. One image with 4 faces placed at
known landmarks (so the restore comparison does not depend on the detector);
the whole-image comparison keeps the centre face only, so that random detector
weights cannot make it restore hundreds of false faces.

    python bench/codeformer.py
"""
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools"), os.path.join(ROOT, "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from doctor import load_pack, submodule  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main():
    pack = load_pack()
    models, engine = submodule(pack, "host.models"), submodule(pack, "local.codeformer")
    if models.missing(list(engine.wanted("codeformer.pth").values())):
        from tiny_models import save_codeformer, save_retinaface

        root = tempfile.mkdtemp()
        save_codeformer(os.path.join(root, "facerestore_models"))
        save_retinaface(os.path.join(root, "facedetection"))
        models.set_models_root(root)
    paths = models.require(engine.wanted("codeformer.pth"))
    cf_path, det_path = paths["model"], paths["detector"]
    residency = submodule(pack, "host.residency")
    net, = residency.use(engine.restorer(cf_path))
    det = engine.on_device(engine.detector(det_path))
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1024, 1024, 3)).astype(np.uint8)
    marks = [engine.TEMPLATE * 0.5 + np.array(o) for o in ((0, 0), (512, 0), (0, 512), (512, 512))]
    crops, matrices = zip(*(engine.align(img, lm) for lm in marks))
    engine.restore_faces(net, [crops[0]], 0.5)  # warm-up

    chosen = engine.device.batch_size(8)
    batched, _ = timed(lambda: engine.restore_faces(net, list(crops), 0.5, batch_size=4))
    node_choice, _ = timed(lambda: engine.restore_faces(net, list(crops), 0.5))
    loop, _ = timed(lambda: [engine.restore_faces(net, [c], 0.5, batch_size=1)[0] for c in crops])
    print(f"device {engine.device.torch_device()}; weights {os.path.dirname(cf_path)}")
    print(f"restore 4 faces: batch of 4 {batched:.2f} s, per-face loop {loop:.2f} s, loop/batched {loop / batched:.2f}x; "
          f"the device's choice (batch {chosen}) {node_choice:.2f} s, loop/choice {loop / node_choice:.2f}x",
          flush=True)

    def reference():  # detect, align, restore each face, paste back
        canvas = engine.upscale_background(img, 2)
        for lm in engine.detect(det, img, only_center=True):
            crop, m = engine.align(img, lm)
            canvas = engine.paste(canvas, engine.restore_faces(net, [crop], 0.5)[0], m, 2)
        return canvas

    node = pack.NODE_CLASS_MAPPINGS["PF_CodeFormer"]()
    batch = torch.from_numpy(img[None].astype(np.float32) / 255)

    def run_node():  # what reference() does: upscale 2, the centre face, square mask
        return node.restore(batch, os.path.basename(cf_path), upscale=2, only_center_face=True, paste_mask="square",
                            backend="local")

    run_node(), reference()  # warm-up: first detection at this size, allocator
    node_s, out = timed(run_node)
    ref_s, _ = timed(reference)
    print(f"whole image ({out['ui']['faces_per_image'][0]} faces detected): node {node_s:.2f} s, "
          f"reference procedure {ref_s:.2f} s, node/reference {node_s / ref_s:.2f}")


if __name__ == "__main__":
    main()
