"""PF_CodeFormer: the released key layout, exact alignment / paste-back geometry,
end to end on random-weight CodeFormer + RetinaFace saved as the real files,
and the Segmind path against the fake server."""
import os

import numpy as np
import pytest
import torch

from conftest import PACK, pf
from tiny_models import codeformer_net

engine = pf("local.codeformer")
models = pf("host.models")
images = pf("host.images")
residency = pf("host.residency")
Node = PACK.NODE_CLASS_MAPPINGS["PF_CodeFormer"]


def test_default_hyperparameters_give_the_released_key_layout():
    sd = codeformer_net(small=False).state_dict()
    assert len(sd) == 515
    assert sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked")) == 94_112_707
    prefixes = {}
    for k in sd:
        prefixes[k.split(".")[0]] = prefixes.get(k.split(".")[0], 0) + 1
    assert prefixes == {"encoder": 164, "generator": 164, "ft_layers": 108, "fuse_convs_dict": 72,
                        "idx_pred_layer": 3, "feat_emb": 2, "position_emb": 1, "quantize": 1}
    shapes = {"position_emb": (256, 512), "feat_emb.weight": (512, 256), "quantize.embedding.weight": (1024, 256),
              "ft_layers.8.self_attn.in_proj_weight": (1536, 512), "ft_layers.0.linear1.weight": (1024, 512),
              "idx_pred_layer.1.weight": (1024, 512), "encoder.blocks.0.weight": (64, 3, 3, 3),
              "generator.blocks.0.weight": (512, 256, 3, 3),
              "fuse_convs_dict.256.encode_enc.conv_out.weight": (128, 256, 1, 1)}
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert "idx_pred_layer.1.bias" not in sd


# -- geometry ----------------------------------------------------------------
def face_image(h=300, w=400, seed=0):
    g = np.random.default_rng(seed)
    img = g.integers(0, 256, (h // 10 + 1, w // 10 + 1, 3)).astype(np.uint8)
    import cv2

    return cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)  # smooth, so resampling is near-exact


def landmarks_for(offset=(100, 60), zoom=0.4, angle=10.0):
    """The template's 5 points rotated, scaled and moved into the image."""
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) * zoom
    return (engine.TEMPLATE - 256) @ rot.T + 256 * zoom + np.array(offset)


def test_alignment_maps_landmarks_onto_the_template():
    lm = landmarks_for()
    crop, matrix = engine.align(face_image(), lm)
    assert crop.shape == (512, 512, 3)
    mapped = np.c_[lm, np.ones(5)] @ matrix.T
    assert np.abs(mapped - engine.TEMPLATE).max() < 1e-3


@pytest.mark.parametrize("scale", [1, 2])
def test_paste_back_of_an_unchanged_face_returns_the_original(scale):
    import cv2

    img = face_image()
    lm = landmarks_for()
    crop, matrix = engine.align(img, lm)
    canvas = engine.upscale_background(img, scale)
    reference = canvas.copy() if scale == 1 else cv2.resize(img, (400 * scale, 300 * scale),
                                                            interpolation=cv2.INTER_LINEAR)
    mask = np.zeros(canvas.shape[:2], np.float32)
    before = canvas.copy()
    pasted = engine.paste(canvas, crop, matrix, scale, mask)
    canvas = before
    inside, outside = mask > 0.99, mask == 0
    assert inside.sum() > 1000 and outside.sum() > 1000
    diff = np.abs(pasted.astype(int) - reference.astype(int)).max(axis=-1)
    assert np.array_equal(pasted[outside], canvas[outside])   # untouched outside the face
    assert np.median(diff[inside]) <= 2 and np.percentile(diff[inside], 99) <= 12


def test_soft_mask_has_no_hard_seam():
    img = face_image()
    crop, matrix = engine.align(img, landmarks_for())
    mask = np.zeros(img.shape[:2], np.float32)
    engine.paste(img, crop, matrix, 1, mask)
    values = np.unique(np.round(mask, 2))
    assert len(values) > 10 and mask.max() == pytest.approx(1.0)   # a gradient, not a step


# -- end to end --------------------------------------------------------------
def test_restore_faces_in_batches_matches_one_by_one(with_codeformer):
    net, = residency.use(engine.restorer(str(with_codeformer / "facerestore_models" / "codeformer.pth")))
    crops = [engine.align(face_image(seed=s), landmarks_for())[0] for s in range(2)]
    batched = engine.restore_faces(net, crops, 0.5, batch_size=2)
    single = [engine.restore_faces(net, [c], 0.5, batch_size=1)[0] for c in crops]
    assert len(batched) == 2 and batched[0].shape == (512, 512, 3)
    for a, b in zip(batched, single):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_node_without_faces_passes_the_image_through_upscaled(with_codeformer):
    img = torch.from_numpy(np.stack([face_image(60, 80, s) for s in range(3)]).astype(np.float32) / 255)
    out = Node().restore(img, "codeformer.pth", upscale=2, detection_threshold=1.0, backend="local")
    result, mask = out["result"]
    assert result.shape == (3, 120, 160, 3) and mask.shape == (3, 120, 160)
    assert out["ui"]["backend"] == ["local"] and out["ui"]["faces_per_image"] == [0, 0, 0]
    assert not mask.any()
    assert (result - img.repeat_interleave(2, 1).repeat_interleave(2, 2)).abs().mean() < 0.05


@pytest.mark.parametrize("channels", [1, 4])
def test_node_restores_detected_faces_grayscale_and_rgba(with_codeformer, channels):
    img = torch.rand(1, 96, 128, channels, generator=torch.Generator().manual_seed(channels))
    out = Node().restore(img, "codeformer.pth", upscale=1, only_center_face=True, detection_threshold=0.05,
                         backend="local")
    result, mask = out["result"]
    counts = out["ui"]["faces_per_image"]
    assert result.shape == (1, 96, 128, 3) and counts == [1]  # these seeded random weights find one face
    assert mask.any() and mask.max() <= 1 and mask.min() >= 0
    assert 0 <= result.min() and result.max() <= 1


def test_missing_model_files_are_named(models_root, no_key):
    with pytest.raises(models.MissingModelFiles) as err:
        Node().restore(torch.rand(1, 32, 32, 3), "codeformer.pth", backend="auto")
    text = str(err.value)
    assert "codeformer.pth" in text and "facerestore_models" in text
    assert "detection_Resnet50_Final.pth" in text and "facedetection" in text and "SEGMIND_API_KEY" in text


def test_segmind_backend_against_the_fake_server(fake, api_key):
    img = torch.rand(3, 24, 32, 3, generator=torch.Generator().manual_seed(0))
    out = Node().restore(img, "codeformer.pth", fidelity=0.7, upscale=2, backend="auto")
    result, mask = out["result"]
    assert out["ui"]["backend"] == ["segmind"] and "x-remaining-credits" in out["ui"]
    assert result.shape == (3, 48, 64, 3) and mask.shape == (3, 48, 64)
    assert torch.allclose(result[:, ::2, ::2], img, atol=1 / 255)  # order and pixels kept
    bodies = [body for _, _, body in fake.requests]
    assert len(bodies) == 3 and all(b["fidelity"] == 0.7 and b["scale"] == 2 and b["bg"] is False for b in bodies)
    assert api_key not in repr(out["ui"])


# -- layout checks a random network hides ---------------------------------------
class IdentityRestorer(torch.nn.Module):
    """A 'CodeFormer' that returns its input: whatever comes back pasted must be the photo."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, weight=0.5):
        return (x,)


def test_identity_restorer_pastes_back_the_input_and_detector_gets_bgr(with_codeformer, monkeypatch):
    seen = []
    real_detector = engine.detector

    def recording_detector(path):
        resident = real_detector(path)
        net = resident.net
        if not hasattr(net, "pf_recording"):
            original = net.detect_faces

            def detect_faces(image, *args, **kwargs):
                seen.append(image.copy())
                return original(image, *args, **kwargs)

            net.detect_faces, net.pf_recording = detect_faces, True
        return resident

    monkeypatch.setattr(engine, "detector", recording_detector)
    monkeypatch.setattr(engine, "restorer", lambda path: residency.get(("identity-restorer",), IdentityRestorer))
    photo = face_image(96, 128, seed=5)
    photo[0, 0] = (250, 10, 10)  # a red corner pixel, to see the channel order the detector gets
    img = torch.from_numpy(photo[None].astype(np.float32) / 255)
    for paste_mask in ("square", "parse"):
        out = Node().restore(img, "codeformer.pth", only_center_face=True, detection_threshold=0.05,
                             paste_mask=paste_mask, backend="local")
        result, mask = out["result"]
        assert out["ui"]["faces"] == [1] and mask.max() > 0.5
        diff = (result[0] - img[0]).abs().max(-1).values
        # RGB order, [-1,1] scaling and geometry right (the sharp red marker pixel aside, which resampling blurs)
        assert diff[mask[0] > 0.5].median() < 3 / 255 and diff[3:, 3:].max() < 40 / 255
    corner = seen[0][0, 0]
    assert corner[2] > 200 and corner[0] < 60  # RetinaFace was given BGR


def test_parse_mask_limits_the_paste_to_the_face(with_codeformer):
    img = face_image()
    crop, matrix = engine.align(img, landmarks_for())
    parse = np.zeros((512, 512), np.float32)
    parse[150:400, 150:360] = 1.0  # "the face"
    square = np.zeros(img.shape[:2], np.float32)
    engine.paste(img.copy(), crop, matrix, 1, square)
    limited = np.zeros(img.shape[:2], np.float32)
    engine.paste(img.copy(), crop, matrix, 1, limited, parse_mask=parse, visibility=0.5)
    assert 0 < limited.sum() < square.sum() and limited.max() <= 0.5 + 1e-6
    assert np.all(limited <= square + 1e-6)


def test_failed_alignment_skips_the_face():
    assert engine.align(face_image(), np.zeros((5, 2), np.float32)) is None


def test_model_list_shows_codeformer_files_by_content(tmp_path, cf_root):
    folder = tmp_path / "facerestore_models"
    folder.mkdir()
    os.link(cf_root / "facerestore_models" / "codeformer.pth", folder / "my_restorer.pth")  # not a 285 MB copy
    torch.save({"params_ema": {"conv_body_first.weight": torch.zeros(1), "stylegan_decoder.x": torch.zeros(1)}},
               folder / "GFPGANv1.4.pth")
    models.set_models_root(tmp_path)
    try:
        choices = Node.INPUT_TYPES()["required"]["model"][0]
    finally:
        models.set_models_root(None)
    assert choices == ["my_restorer.pth"]


def test_segmind_lists_inputs_it_ignores_and_enhances_without_a_local_file(fake):
    out = Node().restore(torch.rand(1, 24, 32, 3), "codeformer.pth", background_enhance=True,
                         detection_threshold=0.5, paste_mask="parse", backend="segmind")
    assert fake.requests[0][2]["bg"] is True
    assert out["ui"]["segmind_ignores"] == ["detection_threshold, paste_mask"]


def test_background_enhance_locally_needs_an_upscale_model(with_codeformer):
    with pytest.raises(pf("engines.codeformer").CodeFormerRequestError, match="upscale_model"):
        Node().restore(torch.rand(1, 24, 32, 3), "codeformer.pth", background_enhance=True, backend="local")


def test_an_upscale_model_core_loaded_is_used_instead_of_the_file(with_codeformer, comfy_host):
    import spandrel
    from spandrel.architectures.Compact import Compact

    descriptor = spandrel.ModelLoader().load_from_state_dict(Compact(num_feat=8, num_conv=2, upscale=2).state_dict())
    seen = []
    descriptor.model.register_forward_hook(lambda module, args, out: seen.append(tuple(args[0].shape[-2:])))
    img = torch.rand(1, 24, 32, 3, generator=torch.Generator().manual_seed(3))
    out = Node().restore(img, "codeformer.pth", upscale=2, background_enhance=True, upscale_model="no-such-file.pth",
                         loaded_upscale_model=descriptor, detection_threshold=1.0, backend="local")
    assert out["result"][0].shape == (1, 48, 64, 3) and seen == [(24, 32)]  # the background went through it
    assert any(m.model.model.pf_key[:2] == ("upscaler", "loaded") for m in comfy_host.ours())


@pytest.mark.timeout(60)
def test_hostile_and_broken_files_in_the_folder_are_skipped_with_a_reason(cf_root, tmp_path, caplog):
    """A 2 KB .pth of shared dicts (40^6 paths when walked naively), a broken .safetensors and a
    truncated CodeFormer file: each is left out of the list with the reason logged, and the real file
    is still listed; /poseforge/status answers."""
    import shutil

    folder = tmp_path / "facerestore_models"
    folder.mkdir()
    real = next(p for p in (cf_root / "facerestore_models").iterdir())
    shutil.copy(real, folder / real.name)
    level = {"w": torch.zeros(1)}
    for _ in range(6):
        level = {str(k): level for k in range(40)}
    torch.save(level, folder / "shared.pth")
    assert (folder / "shared.pth").stat().st_size < 8192
    (folder / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    (folder / "truncated.pth").write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    models.set_models_root(tmp_path)
    try:
        with caplog.at_level("WARNING", logger="PoseForge"):
            assert Node.INPUT_TYPES()["required"]["model"][0] == [real.name]
            assert pf("nodes.routes").status()["codeformer_files"] is False  # no detector in this root: still answers
        said = caplog.text
        assert "shared.pth is not listed" in said and "shared between entries" in said
        assert "broken.safetensors is not listed" in said and "truncated.pth is not listed" in said
    finally:
        models.set_models_root(None)


def test_a_file_replaced_under_the_same_name_is_loaded_again(tmp_path):
    """Networks are cached by file identity (path, size, modification time), not by path alone."""
    import time

    from tiny_models import save_codeformer

    cf = pf("local.codeformer")
    path = save_codeformer(str(tmp_path))
    first = cf.restorer(path).net
    state = torch.load(path, weights_only=True)
    name = next(k for k, v in state["params_ema"].items() if v.is_floating_point())
    state["params_ema"][name] = state["params_ema"][name] + 1.0
    time.sleep(0.01)
    torch.save(state, path)  # the same name, new contents
    second = cf.restorer(path).net
    assert second is not first and not torch.equal(second.state_dict()[name], first.state_dict()[name])


# -- GFPGAN and RestoreFormer, told apart by their weights ---------------------------------------
@pytest.fixture(scope="module")
def restorers_root(cf_root, tmp_path_factory):
    """A models root whose facerestore_models holds CodeFormer, GFPGAN (real-sized: spandrel builds it at one
    size), a tiny RestoreFormer and RestoreFormer++ (a Lightning .ckpt, as released), plus an upscaler and a
    file that is no model; facedetection linked."""
    import spandrel
    from spandrel.architectures.Compact import Compact

    from tiny_models import save_gfpgan, save_restoreformer, save_restoreformer_pp

    root = tmp_path_factory.mktemp("restorers")
    folder = root / "facerestore_models"
    folder.mkdir()
    os.link(cf_root / "facerestore_models" / "codeformer.pth", folder / "codeformer.pth")
    save_gfpgan(str(folder))
    save_restoreformer(str(folder))
    save_restoreformer_pp(str(folder))
    torch.save(Compact(num_feat=8, num_conv=2, upscale=2).state_dict(), folder / "4x-upscaler.pth")
    assert spandrel.ModelLoader().load_from_file(str(folder / "4x-upscaler.pth")).architecture.id == "Compact"
    torch.save({"just": torch.zeros(3)}, folder / "notes.pth")
    os.symlink(cf_root / "facedetection", root / "facedetection")
    return root


@pytest.fixture
def with_restorers(restorers_root):
    models.set_models_root(restorers_root)
    yield restorers_root
    models.set_models_root(None)


RESTORER_FILES = {"GFPGANv1.4.pth": "GFPGAN", "RestoreFormer++.ckpt": "RestoreFormer++",
                  "RestoreFormer.pth": "RestoreFormer", "codeformer.pth": "CodeFormer"}


def test_the_list_holds_every_restorer_by_content(with_restorers):
    assert Node.INPUT_TYPES()["required"]["model"][0] == sorted(RESTORER_FILES)
    kinds = {name: engine.restorer_kind(str(with_restorers / "facerestore_models" / name))
             for name in (*RESTORER_FILES, "4x-upscaler.pth", "notes.pth")}
    assert kinds == {**RESTORER_FILES, "4x-upscaler.pth": None, "notes.pth": None}


@pytest.mark.parametrize("small", [True, False], ids=["tiny", "released-widths"])
def test_restoreformer_pp_computes_what_its_authors_network_does(tmp_path, small):
    """A RestoreFormer++ .ckpt (the network under 'vqvae.' beside the loss's tensors) loads strictly into 4-head
    attention with the decoder's extra 32 px level, and gives the authors' output; with RestoreFormer's 8 heads,
    or the 32 px level attending to anything but the encoder's feature there, it would not."""
    from tiny_models import restoreformer_pp_net, restoreformer_pp_reference, save_restoreformer_pp

    reference = restoreformer_pp_net(small)
    path = save_restoreformer_pp(str(tmp_path), net=reference)
    assert engine.restorer_kind(path) == "RestoreFormer++"
    net, = residency.use(engine.restorer(path))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        expected = restoreformer_pp_reference(reference, x)
        assert torch.allclose(net(x)[0], expected, atol=1e-5)
        blocks = [m for m in net.modules() if type(m).__name__ == "MultiHeadAttnBlock"]
        assert len(blocks) == (7 if small else 10)  # encoder: 16 px, middle; decoder: middle, 16 and 32 px
        for block in blocks:
            block.head_size, block.att_size = 8, block.in_channels // 8
        assert not torch.allclose(net(x)[0], expected, atol=1e-3)
    residency.release_all()  # the heads changed above: no later test may get this network


def test_a_restoreformer_ckpt_of_the_plus_plus_repository_runs_as_restoreformer(tmp_path, comfy_host):
    """That repository's RestoreFormer.ckpt (8 heads, attention at 16 px only, under 'vqvae.' in a Lightning
    checkpoint) is RestoreFormer, read through ComfyUI's own loader, and computes what spandrel's network does."""
    from tiny_models import restoreformer_net

    reference = restoreformer_net()
    state = {f"vqvae.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": dict(state, **{"loss.logvar": torch.zeros(())}), "epoch": 1}, tmp_path / "rf.ckpt")
    assert engine.restorer_kind(str(tmp_path / "rf.ckpt")) == "RestoreFormer"
    net, = residency.use(engine.restorer(str(tmp_path / "rf.ckpt")))
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(net(x)[0], reference(x)[0], atol=1e-5)


@pytest.mark.parametrize("name", ["GFPGANv1.4.pth", "RestoreFormer.pth", "RestoreFormer++.ckpt"])
def test_gfpgan_and_restoreformer_restore_the_faces(with_restorers, name):
    photo = torch.from_numpy(face_image(96, 128).astype(np.float32) / 255.0)[None]
    args = dict(upscale=1, only_center_face=True, detection_threshold=0.05, backend="local", paste_mask="square")
    out = Node().restore(photo, name, **args)
    assert out["ui"]["faces"] == [1] and out["result"][0].shape == (1, 96, 128, 3)
    assert not torch.equal(out["result"][0], photo) and out["result"][1].max() > 0
    assert torch.equal(Node().restore(photo, name, **args)["result"][0], out["result"][0])  # GFPGAN: stored noise
    assert torch.equal(Node().restore(photo, name, **dict(args, visibility=0.0))["result"][0],
                       Node().restore(photo, "codeformer.pth", **dict(args, visibility=0.0))["result"][0])


def test_a_file_that_is_no_restorer_is_named_with_what_it_is(with_restorers):
    folder = with_restorers / "facerestore_models"
    with pytest.raises(engine.RestorerError, match=r"4x-upscaler.pth is a .*Compact.* model .*not a face restorer"):
        engine.restorer(str(folder / "4x-upscaler.pth"))
    with pytest.raises(engine.RestorerError, match="notes.pth is no model spandrel knows"):
        engine.restorer(str(folder / "notes.pth"))


def test_which_faces_are_restored(with_restorers):
    """The random RetinaFace sees faces everywhere at a low threshold: all of them, the largest, one by its place
    from the left, none past the last, fewer under a minimum size (detection only: restoring them all is slow)."""
    rgb = face_image(96, 128)
    det = engine.on_device(engine.detector(str(with_restorers / "facedetection" / engine.DETECTION_FILE)))
    everything = engine.detect(det, rgb, 0.05)
    assert len(everything) > 1
    largest = engine.detect(det, rgb, 0.05, select="largest")
    last = engine.detect(det, rgb, 0.05, select="index", index=len(everything) - 1)
    assert len(largest) == len(last) == 1
    lefts = sorted(lm[:, 0].min() for lm in everything)
    assert engine.detect(det, rgb, 0.05, select="index", index=0)[0][:, 0].min() <= lefts[len(lefts) // 2]
    assert engine.detect(det, rgb, 0.05, select="index", index=len(everything)) == []
    counts = [len(engine.detect(det, rgb, 0.05, min_size=m)) for m in (8, 64)]  # random boxes: any size
    assert len(everything) > counts[0] > counts[1] > 0
    photo = torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]
    out = Node().restore(photo, "RestoreFormer.pth", upscale=1, detection_threshold=0.05, backend="local",
                         paste_mask="square", face_select="largest")
    assert out["ui"]["faces"] == [1]


def pose_of(landmarks, width, height, mouth=True):
    """PF_POSE-like keypoints of one person whose eyes, nose (and mouth corners, in the face points) are the
    5 CodeFormer landmarks given (pixels)."""
    body, face = [0.0] * 54, [0.0] * 210
    for index, (x, y) in zip((14, 15, 0), landmarks[:3]):
        body[3 * index:3 * index + 3] = [float(x) / width, float(y) / height, 1.0]
    for index, (x, y) in zip((48, 54), landmarks[3:]):
        if mouth:
            face[3 * index:3 * index + 3] = [float(x) / width, float(y) / height, 1.0]
    frame = {"people": [{"pose_keypoints_2d": body, "face_keypoints_2d": face}], "canvas_width": width,
             "canvas_height": height}
    return {"map": None, "keypoints": [frame], "source": None, "detector": "openpose", "draw": {}}


@pytest.mark.parametrize("mouth", [True, False])
def test_a_poses_faces_align_without_detecting_again(cf_root, tmp_path, monkeypatch, mouth):
    """PF_CodeFormer with `faces` (a PF_POSE): the face is aligned from the pose's eyes, nose and mouth (or,
    without face points, the mouth the template puts there), RetinaFace's file not even there."""
    (tmp_path / "facerestore_models").mkdir()
    os.link(cf_root / "facerestore_models" / "codeformer.pth", tmp_path / "facerestore_models" / "codeformer.pth")
    models.set_models_root(tmp_path)
    crops = []
    real = engine.restore_faces
    monkeypatch.setattr(engine, "restore_faces", lambda net, c, *a, **k: crops.extend(c) or real(net, c, *a, **k))
    try:
        rgb = face_image()
        lm = landmarks_for().astype(np.float32)
        photo = torch.from_numpy(rgb.astype(np.float32) / 255.0)[None]
        out = Node().restore(photo, "codeformer.pth", faces=pose_of(lm, 400, 300, mouth), upscale=1,
                             backend="local", paste_mask="square")
    finally:
        models.set_models_root(None)
    assert out["ui"]["faces"] == [1] and len(crops) == 1
    expected, _ = engine.align(rgb, lm)
    assert np.abs(crops[0].astype(int) - expected.astype(int)).max() <= 2  # the pose's points are stored as floats
