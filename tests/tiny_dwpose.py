"""Tiny DWPose networks with the real files' signatures, exported as the real files are: ONNX
(`yolox_l.onnx`: input `images` 1x3x640x640, output `output` 1x8400x85; `dw-ll_ucoco_384.onnx`:
input `input` Nx3x384x288, outputs `simcc_x` Nx133x576 and `simcc_y` Nx133x768) and TorchScript
(`yolox_l.torchscript.pt`, `dw-ll_ucoco_384_bs5.torchscript.pt`, traced for batches of 5).

Their outputs are crafted: the detector answers two people (and a weaker copy of the first,
and a non-person) in YOLOX's raw layout; the estimator answers fixed SimCC peaks (POINTS, in
estimator-crop pixels) for every crop, except that the nose is only as sure as the crop's
centre is red: the nose is found only for a person whose box the photo painted red. Each box
is 230.4 x 307.2, which the estimator's 1.25 padding makes exactly its 288 x 384 input, so a
point at crop pixel (x, y) is at photo pixel (x + left, y + top) of the person's region.
"""
import math
import os

import torch

SIZE = 640  # the photo: 640 x 640, so the detector's letterbox is the identity
GRIDS = ((8, 80), (16, 40), (32, 20))
BOX_W, BOX_H = 288 / 1.25, 384 / 1.25
PEOPLE = [(20, 60, 0.9), (330, 200, 0.7)]  # (left, top, score): the regions' top-left corners (288 x 384)
LOW = {10, 40, 100}  # points whose peak is 0.2: below DWPose's 0.3, so absent
RED = 2.249  # a red pixel's red channel after DWPose's normalisation: (255 - 123.675) / 58.395


def point(k):
    """Where point k of 133 lies in the 288 x 384 crop (pixels)."""
    return 12.0 + (k % 13) * 20.0, 10.0 + (k // 13) * 34.0


def box(left, top):
    cx, cy = left + 144, top + 192
    return cx - BOX_W / 2, cy - BOX_H / 2, cx + BOX_W / 2, cy + BOX_H / 2


def _anchor(cx, cy, w, h, stride, side, offset):
    gx, gy = int(cx // stride), int(cy // stride)
    raw = torch.zeros(85)
    raw[:4] = torch.tensor([cx / stride - gx, cy / stride - gy, math.log(w / stride), math.log(h / stride)])
    return offset + gy * side + gx, raw


def detector_output():
    """(1, 8400, 85): YOLOX's raw answer (offsets on the grid, log sizes, objectness, class scores)."""
    out = torch.zeros(1, 8400, 85)
    offsets = {8: 0, 16: 6400, 32: 8000}
    for index, (left, top, score) in enumerate(PEOPLE):
        x0, y0, x1, y1 = box(left, top)
        slot, raw = _anchor((x0 + x1) / 2, (y0 + y1) / 2, BOX_W, BOX_H, 32, 20, offsets[32])
        raw[4], raw[5] = 1.0, score
        out[0, slot] = raw
        if index == 0:  # the same person again at the stride-16 grid, a little less sure: suppressed
            slot, copy = _anchor((x0 + x1) / 2 + 3, (y0 + y1) / 2, BOX_W, BOX_H, 16, 40, offsets[16])
            copy[4], copy[5] = 1.0, score - 0.1
            out[0, slot] = copy
    slot, other = _anchor(500, 80, 60, 60, 8, 80, 0)  # a confident non-person (class 3)
    other[4], other[8] = 1.0, 0.95
    out[0, slot] = other
    return out


def estimator_peaks():
    x, y = torch.zeros(133, 576), torch.zeros(133, 768)
    for k in range(133):
        px, py = point(k)
        value = 0.2 if k in LOW else 1.0
        x[k, int(px * 2)], y[k, int(py * 2)] = value, value
    return x, y


class Detector(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("answer", detector_output())
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        return self.answer + self.weight * images.mean()


class Estimator(torch.nn.Module):
    def __init__(self):
        super().__init__()
        x, y = estimator_peaks()
        self.register_buffer("peaks_x", x)
        self.register_buffer("peaks_y", y)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input):
        n = input.shape[0]
        red = (input[:, 0, 160:224, 112:176].mean((1, 2)) / RED).clamp(0, 1)  # the crop's centre
        gate = torch.ones(n, 133, 1, dtype=input.dtype)
        gate[:, 0, 0] = red
        x = self.peaks_x.expand(n, -1, -1) * gate + self.weight
        y = self.peaks_y.expand(n, -1, -1) + self.weight
        return x, y


def save(folder, kinds=("onnx", "torchscript")):
    """Write the detector and estimator into `folder` in each of `kinds`; returns {kind: (det, pose) paths}."""
    os.makedirs(folder, exist_ok=True)
    det, est = Detector().eval(), Estimator().eval()
    image, crops = torch.zeros(1, 3, 640, 640), torch.zeros(5, 3, 384, 288)
    files = {}
    if "onnx" in kinds:
        d, p = os.path.join(folder, "yolox_l.onnx"), os.path.join(folder, "dw-ll_ucoco_384.onnx")
        torch.onnx.export(det, (image,), d, input_names=["images"], output_names=["output"], dynamo=False)
        torch.onnx.export(est, (crops,), p, input_names=["input"], output_names=["simcc_x", "simcc_y"],
                          dynamic_axes={"input": {0: "batch"}, "simcc_x": {0: "batch"}, "simcc_y": {0: "batch"}},
                          dynamo=False)
        files["onnx"] = (d, p)
    if "torchscript" in kinds:
        d = os.path.join(folder, "yolox_l.torchscript.pt")
        p = os.path.join(folder, "dw-ll_ucoco_384_bs5.torchscript.pt")
        with torch.no_grad():
            torch.jit.trace(det, (image,)).save(d)
            torch.jit.trace(est, (crops,)).save(p)
        files["torchscript"] = (d, p)
    return files
