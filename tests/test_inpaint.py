"""Inpainting on PoseForge's samplers (an image to keep and a MASK, or a LATENT's noise mask) on the tiny SDXL:
outside the feathered mask every pixel is the input's own, inside it is generated."""
import pytest
import torch

from conftest import PACK, pf
from test_sdxl import FAST, pose_map, pose_run, t2i

inpaint = pf("local.inpaint")
requests_ = pf("engines.sdxl")
OpenPose = PACK.NODE_CLASS_MAPPINGS["PF_SDXLOpenPose"]


def photo(height=64, width=80, seed=1):
    return torch.rand(1, height, width, 3, generator=torch.Generator().manual_seed(seed))


def box(height=64, width=80, top=16, left=24, size=24):
    mask = torch.zeros(1, height, width)
    mask[:, top:top + size, left:left + size] = 1.0
    return mask


def test_outside_the_feathered_mask_the_pixels_are_the_inputs_own(sdxl):
    picture, mask = photo(), box()
    out = pose_run(sdxl, pose_map(2), inpaint_image=picture, mask=mask, mask_grow=4, mask_feather=6)
    result = out["result"][0]
    assert result.shape == (1, 64, 80, 3)  # the image sets the size
    feathered = inpaint.pixel_mask(mask, 64, 80, 4, 6)[0]
    kept = feathered == 0
    assert kept.sum() > 0.4 * kept.numel() and torch.equal(result[0][kept], picture[0][kept])
    inside = feathered == 1
    assert (result[0][inside] - picture[0][inside]).abs().mean() > 0.05  # generated there
    ramp = (feathered > 0) & (feathered < 1)
    assert ramp.any() and not torch.equal(result[0][ramp], picture[0][ramp])


def test_grow_and_feather_are_exact_and_bounded():
    mask = box(32, 32, 12, 12, 8)
    grown = inpaint.pixel_mask(mask, 32, 32, grow=3)
    assert grown[0, 9:23, 9:23].eq(1).all() and grown.sum() == 14 * 14
    feathered = inpaint.pixel_mask(mask, 32, 32, feather=2)
    assert feathered[0, 14:18, 14:18].eq(1).all()  # the middle stays whole
    assert feathered[0, :10].eq(0).all() and feathered[0, 22:].eq(0).all()  # nothing beyond the feather
    assert inpaint.latent_mask(feathered).shape == (1, 1, 4, 4)
    rows = [[0.0] * 4, [0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0] * 4]  # 10..21: latent pixels 1 and 2
    assert inpaint.latent_mask(feathered)[0, 0].tolist() == rows


def test_grow_and_feather_are_the_max_and_mean_filters_at_any_radius():
    """Running sums, not a window per pixel: the same as the direct filters, and a 4096-pixel mask at the
    largest radii is no more work than at the smallest."""
    import torch.nn.functional as F

    mask = (torch.rand(2, 40, 48, generator=torch.Generator().manual_seed(0)) > 0.93).float()
    direct = F.max_pool2d(mask[:, None], 11, stride=1, padding=5)[:, 0]
    assert torch.equal(inpaint.pixel_mask(mask, 40, 48, grow=5), direct)
    soft = torch.rand(1, 40, 48, generator=torch.Generator().manual_seed(1))
    mean = F.avg_pool2d(F.pad(soft[:, None], (4,) * 4, mode="replicate"), 9, stride=1)[:, 0]
    assert torch.allclose(inpaint.pixel_mask(soft, 40, 48, feather=4), mean, atol=1e-6)
    big = inpaint.pixel_mask(box(4096, 4096, 2000, 2000, 8), 4096, 4096, grow=inpaint.LIMIT, feather=inpaint.LIMIT)
    assert big[0, 2004, 2004] == 1 and big[0, 0, 0] == 0 and big[0, 2004, 2004 + 8 + 2 * inpaint.LIMIT] == 0


def test_a_mask_of_ones_is_the_plain_run_bit_for_bit(sdxl):
    """Everything generated: the inpainting step keeps nothing, the image is text-to-image's."""
    out = t2i(sdxl, inpaint_image=photo(64, 64), mask=torch.ones(1, 64, 64), mask_grow=0, mask_feather=0)
    assert torch.equal(out["result"][0], t2i(sdxl)["result"][0])


def test_a_latent_noise_mask_keeps_the_latent_where_it_is_zero(sdxl):
    start = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}
    nothing = t2i(sdxl, latent=dict(start, noise_mask=torch.zeros(1, 64, 64)), denoise=1.0)
    assert torch.allclose(nothing["result"][1]["samples"], start["samples"], rtol=0, atol=1e-6)  # scaling's rounding
    half = torch.zeros(1, 64, 64)
    half[:, :, 32:] = 1.0  # core's Set Latent Noise Mask: pixel size, right half
    out = t2i(sdxl, latent=dict(start, noise_mask=half), denoise=0.7)["result"][1]["samples"]
    assert torch.allclose(out[..., :4], start["samples"][..., :4], rtol=0, atol=1e-6)
    assert (out[..., 4:] - start["samples"][..., 4:]).abs().max() > 0.1


def test_samples_and_poses_each_inpaint_their_image(sdxl):
    pictures = torch.cat([photo(seed=1), photo(seed=2)])
    out = pose_run(sdxl, torch.cat([pose_map(1), pose_map(2)]), inpaint_image=pictures, mask=box(), samples=2,
                   mask_feather=0, mask_grow=0)["result"][0]
    assert out.shape == (4, 64, 80, 3)
    kept = box()[0] == 0
    for index, picture in enumerate((pictures[0], pictures[1], pictures[0], pictures[1])):  # one per sample
        assert torch.equal(out[index][kept], picture[kept])


def test_a_size_off_the_grid_is_cropped_as_core_vae_encode_does(sdxl):
    out = t2i(sdxl, inpaint_image=photo(70, 83), mask=torch.ones(1, 10, 10), mask_grow=0, mask_feather=0)
    assert out["result"][0].shape == (1, 64, 80, 3)


@pytest.mark.parametrize("bad, match", [
    (dict(mask=box()), "connect inpaint_image"),
    (dict(inpaint_image=photo()), "connect mask"),
    (dict(inpaint_image=photo(), mask=box(), latent={"samples": torch.zeros(1, 4, 8, 10)}), "either a LATENT"),
    (dict(inpaint_image=photo(), mask=box(), mask_grow=-1), "mask_grow -1"),
    (dict(inpaint_image=photo(), mask=torch.zeros(3, 8, 8)), "3 masks for 1 image"),
    (dict(inpaint_image=torch.cat([photo()] * 3), mask=box(), samples=2), "holds 3 image"),
    (dict(inpaint_image=photo(8, 8), mask=box()), "8x8 pixels"),
])
def test_bad_inpainting_inputs_are_refused_before_anything_loads(sdxl, bad, match):
    with pytest.raises(requests_.SDXLRequestError, match=match):
        t2i(sdxl, **bad)


def test_segmind_refuses_inpainting_before_sending(fake):
    pose = {"map": pose_map(), "keypoints": [], "source": photo()}
    args = dict(FAST, num_inference_steps=30, controlnet_scale=0.5, control_start=0.0, control_end=1.0)
    with pytest.raises(requests_.SDXLRequestError, match="do not inpaint"):
        OpenPose().generate(pose, backend="segmind", inpaint_image=photo(), mask=box(), **args)
    assert fake.requests == []
