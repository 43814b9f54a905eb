"""The SDXL VAE between pixels and latents: ComfyUI's LATENT convention (unscaled latents) against
the UNet's latent space, a decode that fits the device's free memory (whole images, or tiles), and
an encode for a pass that keeps an image's pixels (inpainting).
"""
import logging

from ..host import device, residency

log = logging.getLogger("PoseForge")


def scaled(vae_config, latents):
    """Unscaled VAE latents (ComfyUI's LATENT) -> the UNet's latent space, as the pipelines do."""
    mean, std = _moments(vae_config, latents)
    if mean is None:
        return latents * vae_config.scaling_factor
    return (latents - mean) * vae_config.scaling_factor / std


def unscaled(vae_config, latents):
    """The UNet's latent space -> unscaled VAE latents (what the VAE decodes, ComfyUI's LATENT)."""
    mean, std = _moments(vae_config, latents)
    if mean is None:
        return latents / vae_config.scaling_factor
    return latents * std / vae_config.scaling_factor + mean


def _moments(vae_config, like):
    import torch

    mean, std = getattr(vae_config, "latents_mean", None), getattr(vae_config, "latents_std", None)
    if mean is None or std is None:
        return None, None
    return torch.tensor(mean).view(1, -1, 1, 1).to(like), torch.tensor(std).view(1, -1, 1, 1).to(like)


VAE_BYTES = 2178 * 64 * 4  # per latent pixel: ComfyUI's estimate of an SD VAE decode, in fp32
TILE = 64  # latent pixels a tile (512 px), overlapping by a quarter, as ComfyUI's tiled decode


def decode(vae, latents):
    """SDXL latents -> list of HxWx3 float32 arrays in 0..1 (VAE in its own dtype, fp32 here). As
    many images at once as the device's free memory holds by ComfyUI's estimate; tiled when one
    does not fit, or when a decode runs out of memory anyway (said in the log)."""
    dev = next(vae.parameters()).device
    per_image = VAE_BYTES * latents.shape[-2] * latents.shape[-1]
    free = residency.free_memory(dev)
    tiled = free is not None and per_image > free
    size = len(latents) if free is None else max(1, min(len(latents), free // per_image))
    if tiled:
        log.info("PoseForge: VAE decode tiled (%.2f GiB free on %s, %.2f GiB a whole image)", free / 2 ** 30,
                 dev, per_image / 2 ** 30)
    try:
        return device.halving(lambda chunk: _decoded(vae, chunk, tiled), list(latents), size, "VAE decode batch")
    except device.oom_errors():
        if tiled:
            raise
        log.warning("PoseForge: out of memory decoding a whole image: decoding it in tiles")
        device.empty_cache()
        return device.halving(lambda chunk: _decoded(vae, chunk, True), list(latents), 1, "VAE decode batch")


def _decoded(vae, chunk, tiled):
    import torch

    with torch.no_grad():
        z = unscaled(vae.config, torch.stack(chunk).to(next(vae.parameters()).device, torch.float32))
        if tiled:
            images = _tiled(vae, z.to(vae.dtype))
        else:
            images = vae.decode(z.to(vae.dtype)).sample
    images = ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
    return list(images)


def _tiled(vae, z):
    """diffusers' tiled decode with tiles of TILE latent pixels (its default is the model's whole
    training size, 1024 px for SDXL: no saving at the sizes people use)."""
    saved = vae.tile_latent_min_size, vae.tile_sample_min_size, vae.tile_overlap_factor
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    vae.tile_latent_min_size, vae.tile_sample_min_size, vae.tile_overlap_factor = TILE, TILE * scale, 0.25
    try:
        return vae.tiled_decode(z).sample
    finally:
        vae.tile_latent_min_size, vae.tile_sample_min_size, vae.tile_overlap_factor = saved


def encode(vae, pixels):
    """IMAGE pixels ([n, H, W, 3] float in 0..1, H and W multiples of 8) -> unscaled latents (n, 4, H/8, W/8)
    float32 on the CPU: the mean of the VAE's latent distribution, as ComfyUI's VAE Encode gives (no noise
    drawn), a batch as large as the device's free memory holds."""
    import torch

    dev = next(vae.parameters()).device
    per_image = VAE_BYTES * (pixels.shape[1] // 8) * (pixels.shape[2] // 8)
    free = residency.free_memory(dev)
    size = len(pixels) if free is None else max(1, min(len(pixels), free // per_image))

    def encoded(chunk):
        x = torch.stack(chunk).to(dev, vae.dtype).permute(0, 3, 1, 2) * 2 - 1
        with torch.no_grad():
            return list(vae.encode(x).latent_dist.mode().float().cpu())

    return torch.stack(device.halving(encoded, list(pixels), size, "VAE encode batch"))
