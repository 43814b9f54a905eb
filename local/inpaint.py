"""Inpainting on the SDXL sampler: only a masked region is generated, the rest is kept.

Two ways in, both ComfyUI's meaning of a mask (1: generate, 0: keep):
- an image to keep and a MASK on the sampler: the mask is resized to the image (bilinear, as core's
  VAE Encode for Inpainting), grown by `grow` pixels and feathered over `feather` pixels each side of its
  edge (a box blur: exactly 0 beyond); both take time linear in the image's size, whatever their
  radius. The image is encoded (the latent's mean, as core's VAE Encode),
  the region sampled, and the decoded result pasted into the image through the feathered mask, so every
  pixel the mask leaves at 0 is the input's own;
- a LATENT carrying a noise mask (core's Set Latent Noise Mask): resized to the latent as core's
  KSampler does, with no pixels to paste into.

Sampling is diffusers' own inpainting step for 4-channel UNets (the SDXL inpaint pipelines'): after
every scheduler step the kept region is put back, noised to the next timestep with the run's own
initial noise, and at the last step put back as it is. It runs through the sampler's usual pipelines,
so ControlNets, an IP-Adapter, LoRAs and every scheduler work as they do without a mask.
"""

LIMIT = 256  # pixels a mask may grow or feather by


def pixel_mask(mask, height, width, grow=0, feather=0):
    """MASK [b, h, w] -> [b, height, width] float in 0..1, grown and feathered (see the module)."""
    import torch
    import torch.nn.functional as F

    m = torch.nan_to_num(mask.detach().float().cpu(), nan=0.0).clamp(0, 1)
    m = m.reshape(-1, 1, m.shape[-2], m.shape[-1])
    if tuple(m.shape[-2:]) != (height, width):
        m = F.interpolate(m, size=(height, width), mode="bilinear").clamp(0, 1)
    if grow:  # as core's grow_mask_by: the mask rounded, then every pixel within `grow` of it
        m = (_box(_box(m.round(), grow, 2, "constant"), grow, 3, "constant") > 0).to(m.dtype)
    if feather:
        m = (_box(_box(m, feather, 2, "replicate"), feather, 3, "replicate") / (2 * feather + 1) ** 2).clamp(0, 1)
    return m[:, 0]


def _box(m, radius, dim, padding):
    """Sums of `m` ([b, 1, H, W]) over windows of 2 x radius + 1 along `dim`, from running sums in float64
    (linear in the image's size whatever the radius; a window of zeros sums to exactly 0)."""
    import torch
    import torch.nn.functional as F

    pad = (0, 0, radius, radius) if dim == 2 else (radius, radius, 0, 0)
    padded = F.pad(m, pad, mode=padding).double()
    running = F.pad(padded.cumsum(dim), (0, 0, 1, 0) if dim == 2 else (1, 0, 0, 0))
    width = 2 * radius + 1
    return (running.narrow(dim, width, running.shape[dim] - width)
            - running.narrow(dim, 0, running.shape[dim] - width)).to(torch.float32)


def latent_mask(mask):
    """A pixel mask [b, H, W] -> [b, 1, H/8, W/8]: 1 where a latent pixel covers any pixel to generate."""
    import torch.nn.functional as F

    return (F.max_pool2d(mask[:, None], 8) > 0).float()


def noise_mask(mask, height, width):
    """A LATENT's noise mask (any of core's shapes) -> [b, 1, height, width] at the latent's size, as core's
    KSampler resizes it (bilinear)."""
    import torch
    import torch.nn.functional as F

    m = torch.nan_to_num(mask.detach().float().cpu(), nan=0.0)
    m = m.reshape(-1, 1, m.shape[-2], m.shape[-1])
    return F.interpolate(m, size=(height, width), mode="bilinear").clamp(0, 1)


def initial_noise(seeds, shape, dev, dtype):
    """The noise a pipeline draws first from generators seeded with `seeds` (its starting latents, or the
    noise it adds to the image): drawn the same way again, for the kept region."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    return randn_tensor(shape, generator=generators, device=dev, dtype=dtype)


def blend(pipe, index, latents, known, noise, mask):
    """diffusers' inpainting step: after step `index` of `pipe`'s run, the latents with the region `mask` is
    0 in replaced by `known` (model-space latents) noised to the next timestep, or as they are after the
    last."""
    timesteps = pipe.scheduler.timesteps[-pipe._num_timesteps:]
    if index < len(timesteps) - 1:
        known = pipe.scheduler.add_noise(known, noise, timesteps[index + 1:index + 2])
    return (1 - mask) * known + mask * latents


def composite(images, pixels, mask):
    """The generated `images` (HxWx3 float arrays) pasted into `pixels` ([n, H, W, 3]) through `mask`
    ([n, H, W]), one of each per image: where the mask is 0 the pixels are the input's."""
    out = []
    for image, keep, m in zip(images, pixels, mask):
        m = m.numpy()[..., None]
        out.append(keep.numpy() * (1 - m) + image * m)
    return out
