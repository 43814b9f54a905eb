"""PF_OpenPoseExtract versus controlnet-aux's detector called directly.

Same weights (the files in $POSEFORGE_MODELS/openpose, or random-weight ones
written to a temp folder), same images. Prints in one run: per-image time of
the node (warm) and of the library, their ratio, and cold (first run, loads the
networks) versus warm time.

    python bench/openpose.py [images] [size]
"""
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools"), os.path.join(ROOT, "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from doctor import load_pack, submodule  # noqa: E402


def main(n=4, size=512, repeats=3):
    pack = load_pack()
    models, residency = submodule(pack, "host.models"), submodule(pack, "host.residency")
    device = submodule(pack, "host.device")
    if not models.missing([("openpose", "body_pose_model.pth", None)]):
        root = None
    else:
        from tiny_models import save_openpose

        root = tempfile.mkdtemp()
        save_openpose(os.path.join(root, "openpose"))
        models.set_models_root(root)
    node = pack.NODE_CLASS_MAPPINGS["PF_OpenPoseExtract"]()
    batch = torch.rand(n, size, size, 3, generator=torch.Generator().manual_seed(0))
    photos = [(b.numpy() * 255).round().astype(np.uint8) for b in batch]

    residency.release_all()
    t = time.perf_counter()
    node.extract(batch[:1], resolution=512)  # first run in this process: imports and loads the networks
    cold = time.perf_counter() - t
    t = time.perf_counter()
    node.extract(batch[:1], resolution=512)
    warm_one = time.perf_counter() - t

    from controlnet_aux.open_pose import Body, OpenposeDetector

    dev = device.torch_device()
    lib = OpenposeDetector(Body(models.find("openpose", "body_pose_model.pth")).to(dev))
    node_times, lib_times = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine state
        t = time.perf_counter()
        node.extract(batch, resolution=512)
        node_times.append((time.perf_counter() - t) / n)
        t = time.perf_counter()
        for p in photos:
            lib(p, detect_resolution=512, image_resolution=size, output_type="np")
        lib_times.append((time.perf_counter() - t) / n)
    warm, direct = statistics.median(node_times), statistics.median(lib_times)
    print(f"weights: {'random (temp folder)' if root else models.folder_dirs('openpose')[0]}, device {dev}")
    print(f"{n} images {size}x{size}, detect resolution 512, body only, median of {repeats}")
    print(f"node, warm       {warm * 1000:.0f} ms/image")
    print(f"controlnet-aux   {direct * 1000:.0f} ms/image")
    print(f"node/library     {warm / direct:.3f}")
    print(f"one image: cold (first run) {cold * 1000:.0f} ms, warm {warm_one * 1000:.0f} ms, "
          f"cold/warm {cold / warm_one:.1f}x")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
