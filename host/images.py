"""ComfyUI IMAGE tensors ([B,H,W,C] float 0..1) to and from uint8 RGB arrays, and the
bounds every resize in the pack keeps: work canvases are sized by the short side, but
never grow past MAX_ASPECT times it on the long side (a 4x2000 strip must not become a
512x256000 canvas), and no image the pack makes has a side over MAX_SIDE."""

MAX_ASPECT = 4  # a work canvas's long side is at most this many times its short side
MAX_SIDE = 16384  # ComfyUI's MAX_RESOLUTION: the largest side of an image the pack makes


class ImageInputError(ValueError):
    pass


def to_uint8(image, what="image"):
    """IMAGE [B,H,W,C] (or one [H,W,C]) -> list of HxWx3 uint8 RGB arrays.
    Grayscale (C=1) is repeated to RGB; RGBA (C=4) is composited on white."""
    import numpy as np

    if image is None:
        raise ImageInputError(f"{what}: no image connected")
    arr = image.detach().cpu().float().numpy() if hasattr(image, "detach") else np.asarray(image, np.float32)
    if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        arr = arr[None]  # one image without its batch axis
    if arr.ndim != 4:
        hint = " (that looks like a MASK; convert it with a Mask To Image node)" if arr.ndim == 3 else ""
        raise ImageInputError(f"{what}: expected an IMAGE batch [B,H,W,C], got shape {tuple(arr.shape)}{hint}")
    if arr.shape[0] == 0:
        raise ImageInputError(f"{what}: the image batch is empty")
    if arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ImageInputError(f"{what}: images of size {arr.shape[2]}x{arr.shape[1]} have no pixels")
    channels = arr.shape[-1]
    if channels == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif channels == 4:
        alpha = arr[..., 3:4]
        arr = arr[..., :3] * alpha + (1.0 - alpha)
    elif channels != 3:
        raise ImageInputError(f"{what}: expected 1, 3 or 4 channels (last axis), got {channels}")
    arr = np.nan_to_num(arr, nan=0.0)
    return list((np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8))


def from_uint8(images):
    """List of HxWx3 uint8 arrays of one size -> IMAGE [B,H,W,3] float32."""
    import numpy as np
    import torch

    return torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)


def digest(image):
    """A cache key of an HxWx3 uint8 image's content (its pixels and shape)."""
    import hashlib

    return hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()


def work_scale(width, height, short_side):
    """The factor that brings the short side of a width x height image to `short_side`, lowered
    for thin images so that the long side stays within MAX_ASPECT * short_side: normal photos
    (aspect up to 4:1) are unchanged; the work on a thin strip grows with its area, not with
    its length."""
    return min(short_side / min(width, height), MAX_ASPECT * short_side / max(width, height))


def check_side(width, height, what):
    """Refuse making an image with a side over MAX_SIDE."""
    if max(width, height) > MAX_SIDE:
        raise ImageInputError(f"{what}: {width}x{height} would have a side over {MAX_SIDE} pixels (ComfyUI's "
                              "largest image side)")
