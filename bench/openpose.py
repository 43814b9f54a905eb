"""PF_OpenPoseExtract versus controlnet-aux's detector called directly.

Same weights (the files in $POSEFORGE_MODELS/openpose, or random-weight ones
written to a temp folder), same images. Prints in one run: per-image time of
the node (warm) and of the library, their ratio, and cold (first run, loads the
networks) versus warm time.

    python bench/openpose.py [images] [size]     # OpenPose, then DWPose
    python bench/openpose.py dwpose [size] [repeats]
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




# -- DWPose -------------------------------------------------------------------------------
def dwpose_main(size=768, repeats=3):
    """DWPose's real architectures (random weights, bench/dwpose_arch.py) as ONNX and TorchScript:
    (a) the node's detector and estimator stages and the whole node against rtmlib (the library made
    for these files: YOLOX, RTMPose, Wholebody) on the same ONNX files and image, when it is installed
    (pip install --no-deps rtmlib: its own requirements pull a third OpenCV distribution);
    (b) DWPose against OpenPose per image for one person, each network's real compute: DWPose's
    detector on the photo + its estimator on one crop; OpenPose's body network at detect size 512 +
    its hand network on two hand crops + its face network on one face crop."""
    import dwpose_arch
    from tiny_models import save_openpose

    pack = load_pack()
    models, residency = submodule(pack, "host.models"), submodule(pack, "host.residency")
    dw = submodule(pack, "local.dwpose")
    root = tempfile.mkdtemp()
    files = dwpose_arch.save(os.path.join(root, "dw"))
    save_openpose(os.path.join(root, "openpose"))
    photo = (np.random.default_rng(0).random((size, size, 3)) * 255).astype(np.uint8)
    image = torch.from_numpy(photo[None].astype(np.float32) / 255)
    boxes = np.array([[size * 0.3, size * 0.1, size * 0.7, size * 0.9]])
    node = pack.NODE_CLASS_MAPPINGS["PF_OpenPoseExtract"]()

    def timed(fn):
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    print(f"DWPose, real architectures with random weights: YOLOX-L + DWPose-l 384x288; photo {size}x{size}, "
          f"CPU threads {torch.get_num_threads()}, median of {repeats}")
    results = {}
    for kind in ("onnx", "torchscript"):
        folder = os.path.join(root, kind, "openpose")
        os.makedirs(folder)
        for path in files[kind]:
            os.link(path, os.path.join(folder, os.path.basename(path)))
        models.set_models_root(os.path.join(root, kind))
        residency.release_all()
        nets = dw.networks()
        dw.people(nets["detector"], photo), dw.estimate(nets["estimator"], photo, boxes)  # warm
        results[kind] = {"detector": timed(lambda: dw.people(nets["detector"], photo)),
                         "estimator": timed(lambda: dw.estimate(nets["estimator"], photo, boxes)),
                         "node": timed(lambda: node.extract(image, detect_hands=True, detect_face=True,
                                                            detector="dwpose"))}
        print(f"  {kind:11s} detector {results[kind]['detector'] * 1000:6.0f} ms, estimator (1 person) "
              f"{results[kind]['estimator'] * 1000:5.0f} ms, whole node {results[kind]['node'] * 1000:6.0f} ms "
              "(random weights find nobody: detector pass + conversion)")
    try:
        import rtmlib
    except ImportError:
        print("  rtmlib is not installed (pip install --no-deps rtmlib): no library comparison")
    else:
        det_path, pose_path = files["onnx"]
        yolox = rtmlib.YOLOX(det_path, model_input_size=(640, 640), backend="onnxruntime", device="cpu")
        rtmpose = rtmlib.RTMPose(pose_path, model_input_size=(288, 384), backend="onnxruntime", device="cpu")
        whole = rtmlib.Wholebody(det=det_path, det_input_size=(640, 640), pose=pose_path,
                                 pose_input_size=(288, 384), backend="onnxruntime", device="cpu")
        yolox(photo), rtmpose(photo, bboxes=boxes), whole(photo)  # warm
        models.set_models_root(os.path.join(root, "onnx"))
        nets = dw.networks()
        pairs = {"detector": (lambda: dw.people(nets["detector"], photo), lambda: yolox(photo)),
                 "estimator": (lambda: dw.estimate(nets["estimator"], photo, boxes),
                               lambda: rtmpose(photo, bboxes=boxes))}
        for stage, (ours, theirs) in pairs.items():
            times = {"ours": [], "theirs": []}
            for _ in range(repeats):  # interleaved, so both see the same machine state
                for side, fn in (("ours", ours), ("theirs", theirs)):
                    t = time.perf_counter()
                    fn()
                    times[side].append(time.perf_counter() - t)
            a, b = statistics.median(times["ours"]), statistics.median(times["theirs"])
            print(f"  {stage:9s} node/rtmlib {a / b:.3f} ({a * 1000:.0f} vs {b * 1000:.0f} ms, same ONNX file and image)")
        print(f"  (rtmlib's Wholebody {timed(lambda: whole(photo)) * 1000:.0f} ms: when it detects nobody it estimates "
              "the whole image as one person, where the node, as comfyui_controlnet_aux, reports nobody)")

    # OpenPose's networks for one person, on the same photo
    from controlnet_aux.open_pose import OpenposeDetector

    models.set_models_root(root)
    residency.release_all()
    op = submodule(pack, "local.openpose")
    det = op.detector(hands=True, face=True)
    small = op.detect_resized(photo, 512)
    hand_crop, face_crop = small[:184, :184][:, :, ::-1].copy(), small[:256, :256][:, :, ::-1].copy()
    assert isinstance(det, OpenposeDetector)

    def openpose_person():
        det.body_estimation(small[:, :, ::-1].copy())
        det.hand_estimation(hand_crop), det.hand_estimation(hand_crop)
        det.face_estimation(face_crop)

    openpose_person()
    openpose_time = timed(openpose_person)
    body_time = timed(lambda: det.body_estimation(small[:, :, ::-1].copy()))
    best = min(results[k]["detector"] + results[k]["estimator"] for k in results)
    print(f"  per image, one person: OpenPose body + 2 hands + face {openpose_time * 1000:.0f} ms (body alone "
          f"{body_time * 1000:.0f} ms); DWPose detector + estimator (whole body) {best * 1000:.0f} ms: "
          f"DWPose/OpenPose {best / openpose_time:.2f} (vs body alone {best / body_time:.2f})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["dwpose"]:
        dwpose_main(*(int(a) for a in sys.argv[2:4]))
    else:
        main(*(int(a) for a in sys.argv[1:3]))
        dwpose_main()
