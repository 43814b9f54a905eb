"""The real architectures of DWPose's two networks, with random weights, for bench/openpose.py:
the compute of a bench run is the compute of the real files.

- YOLOX-L (Megvii's YOLOX: CSPDarknet-53 at depth 1.0 / width 1.0 with Focus and SPP, PAFPN,
  the decoupled head), 640x640 in, the raw 1x8400x85 out (sigmoids applied, no decoding), as
  DWPose's yolox_l.onnx;
- DWPose-l at 384x288 (RTMPose-l: CSPNeXt-P5 at 1.0 / 1.0 with channel attention and SPP, the
  RTMCC head: a 7x7 conv to 133 maps, a linear layer to 256, one gated attention unit, and the
  SimCC classifiers to 576 and 768 bins), as dw-ll_ucoco_384.onnx.
Written from the published descriptions of the two models; nothing here is used by the nodes.
"""
import torch
from torch import nn


class Conv(nn.Sequential):
    """Convolution (no bias), batch norm, SiLU."""

    def __init__(self, cin, cout, k=1, s=1, groups=1):
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True, k=3, depthwise=False):
        super().__init__()
        self.conv1 = Conv(c, c, 1 if not depthwise else 3)
        self.conv2 = nn.Sequential(Conv(c, c, k, groups=c), Conv(c, c, 1)) if depthwise else Conv(c, c, k)
        self.shortcut = shortcut

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return x + y if self.shortcut else y


class CSPLayer(nn.Module):
    def __init__(self, cin, cout, n, shortcut=True, attention=False, depthwise=False, k=3):
        super().__init__()
        mid = cout // 2
        self.main, self.short = Conv(cin, mid), Conv(cin, mid)
        self.blocks = nn.Sequential(*(Bottleneck(mid, shortcut, k, depthwise) for _ in range(n)))
        self.attention = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * mid, 2 * mid, 1), nn.Hardsigmoid()) \
            if attention else None
        self.final = Conv(2 * mid, cout)

    def forward(self, x):
        y = torch.cat([self.blocks(self.main(x)), self.short(x)], 1)
        if self.attention is not None:
            y = y * self.attention(y)
        return self.final(y)


class SPP(nn.Module):
    def __init__(self, cin, cout, kernels=(5, 9, 13)):
        super().__init__()
        self.conv1, self.conv2 = Conv(cin, cin // 2), Conv(cin // 2 * (len(kernels) + 1), cout)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [p(x) for p in self.pools], 1))


class YOLOXL(nn.Module):
    def __init__(self, classes=80):
        super().__init__()
        self.stem = Conv(12, 64, 3)  # after Focus (space to depth)
        self.dark2 = nn.Sequential(Conv(64, 128, 3, 2), CSPLayer(128, 128, 3))
        self.dark3 = nn.Sequential(Conv(128, 256, 3, 2), CSPLayer(256, 256, 9))
        self.dark4 = nn.Sequential(Conv(256, 512, 3, 2), CSPLayer(512, 512, 9))
        self.dark5 = nn.Sequential(Conv(512, 1024, 3, 2), SPP(1024, 1024), CSPLayer(1024, 1024, 3, shortcut=False))
        self.lateral0, self.c3_p4 = Conv(1024, 512), CSPLayer(1024, 512, 3, shortcut=False)
        self.reduce1, self.c3_p3 = Conv(512, 256), CSPLayer(512, 256, 3, shortcut=False)
        self.bu2, self.c3_n3 = Conv(256, 256, 3, 2), CSPLayer(512, 512, 3, shortcut=False)
        self.bu1, self.c3_n4 = Conv(512, 512, 3, 2), CSPLayer(1024, 1024, 3, shortcut=False)
        self.heads = nn.ModuleList()
        for cin in (256, 512, 1024):
            head = nn.Module()
            head.stem = Conv(cin, 256)
            head.cls = nn.Sequential(Conv(256, 256, 3), Conv(256, 256, 3), nn.Conv2d(256, classes, 1))
            head.reg = nn.Sequential(Conv(256, 256, 3), Conv(256, 256, 3))
            head.box, head.obj = nn.Conv2d(256, 4, 1), nn.Conv2d(256, 1, 1)
            self.heads.append(head)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, images):
        x = torch.cat([images[..., ::2, ::2], images[..., 1::2, ::2], images[..., ::2, 1::2], images[..., 1::2, 1::2]], 1)
        c3 = self.dark3(self.dark2(self.stem(x)))
        c4 = self.dark4(c3)
        c5 = self.dark5(c4)
        p5 = self.lateral0(c5)
        f4 = self.c3_p4(torch.cat([self.up(p5), c4], 1))
        p4 = self.reduce1(f4)
        out2 = self.c3_p3(torch.cat([self.up(p4), c3], 1))
        out1 = self.c3_n3(torch.cat([self.bu2(out2), p4], 1))
        out0 = self.c3_n4(torch.cat([self.bu1(out1), p5], 1))
        levels = []
        for head, feature in zip(self.heads, (out2, out1, out0)):
            f = head.stem(feature)
            r = head.reg(f)
            y = torch.cat([head.box(r), head.obj(r).sigmoid(), head.cls(f).sigmoid()], 1)
            levels.append(y.flatten(2))
        return torch.cat(levels, 2).permute(0, 2, 1)


class ScaleNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.scale, self.g = dim ** -0.5, nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=1e-5) * self.scale * self.g


class GAU(nn.Module):
    """The gated attention unit of RTMCC's head (one head, squared-ReLU attention over the points)."""

    def __init__(self, dim=256, expansion=2, s=128):
        super().__init__()
        self.e, self.s = dim * expansion, s
        self.norm, self.uv = ScaleNorm(dim), nn.Linear(dim, 2 * self.e + s, bias=False)
        self.gamma, self.beta = nn.Parameter(torch.rand(2, s)), nn.Parameter(torch.zeros(2, s))
        self.o, self.act = nn.Linear(self.e, dim, bias=False), nn.SiLU()
        self.res_scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        u, v, base = torch.split(self.act(self.uv(self.norm(x))), [self.e, self.e, self.s], -1)
        q, k = (base[..., None, :] * self.gamma + self.beta).unbind(-2)
        kernel = torch.relu(q @ k.transpose(1, 2) / self.s ** 0.5) ** 2
        return x * self.res_scale + self.o(u * (kernel @ v))


class DWPoseL(nn.Module):
    def __init__(self, points=133, bins=(576, 768)):
        super().__init__()
        self.stem = nn.Sequential(Conv(3, 32, 3, 2), Conv(32, 32, 3), Conv(32, 64, 3))
        stages = []
        for cin, cout, n, identity, spp in ((64, 128, 3, True, False), (128, 256, 6, True, False),
                                            (256, 512, 6, True, False), (512, 1024, 3, False, True)):
            stages += [Conv(cin, cout, 3, 2)] + ([SPP(cout, cout)] if spp else []) + \
                      [CSPLayer(cout, cout, n, identity, attention=True, depthwise=True, k=5)]
        self.backbone = nn.Sequential(*stages)
        self.final = nn.Conv2d(1024, points, 7, padding=3)
        self.mlp = nn.Sequential(ScaleNorm(12 * 9), nn.Linear(12 * 9, 256, bias=False))
        self.gau = GAU()
        self.cls_x, self.cls_y = nn.Linear(256, bins[0], bias=False), nn.Linear(256, bins[1], bias=False)

    def forward(self, input):
        maps = self.final(self.backbone(self.stem(input))).flatten(2)
        tokens = self.gau(self.mlp(maps))
        return self.cls_x(tokens), self.cls_y(tokens)


def save(folder):
    """Both networks with random weights as ONNX and TorchScript in `folder`; returns {kind: (det, pose)}."""
    import os

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    det, pose = YOLOXL().eval(), DWPoseL().eval()
    with torch.no_grad():  # objectness low everywhere, as a trained detector answers a photo (few candidates)
        for head in det.heads:
            head.obj.bias.fill_(-10.0)
    image, crops = torch.rand(1, 3, 640, 640) * 255, torch.randn(5, 3, 384, 288)
    files = {"onnx": (os.path.join(folder, "yolox_l.onnx"), os.path.join(folder, "dw-ll_ucoco_384.onnx")),
             "torchscript": (os.path.join(folder, "yolox_l.torchscript.pt"),
                             os.path.join(folder, "dw-ll_ucoco_384_bs5.torchscript.pt"))}
    with torch.no_grad():
        torch.onnx.export(det, (image,), files["onnx"][0], input_names=["images"], output_names=["output"],
                          dynamo=False)
        torch.onnx.export(pose, (crops,), files["onnx"][1], input_names=["input"], output_names=["simcc_x", "simcc_y"],
                          dynamic_axes={"input": {0: "batch"}, "simcc_x": {0: "batch"}, "simcc_y": {0: "batch"}},
                          dynamo=False)
        torch.jit.trace(det, (image,)).save(files["torchscript"][0])
        torch.jit.trace(pose, (crops,)).save(files["torchscript"][1])
    return files


if __name__ == "__main__":
    for name, net in (("YOLOX-L", YOLOXL()), ("DWPose-l", DWPoseL())):
        print(name, sum(p.numel() for p in net.parameters()) / 1e6, "M parameters")
