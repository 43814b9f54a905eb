"""Reading SDXL and ControlNet .safetensors files straight into diffusers modules.

diffusers' `from_single_file` reads the whole file into memory, converts the keys, then
casts and places the tensors one by one (`load_model_dict_into_meta`): on the real SDXL
file that took seconds longer than ComfyUI's loader and held the file's tensors and the
cast ones together. Here the file is memory-mapped once and parsed from its own header;
the key conversion is diffusers' own (`single_file_utils.convert_ldm_*`, run on views of
the mapping, so nothing is copied by it); each tensor is cast into the target dtype as a
tensor of its own and the mapped pages it came from are given back to the kernel at
once, so the file never sits in memory beside the cast weights. The modules are built
empty (accelerate's `init_empty_weights`) and take the tensors with
`load_state_dict(assign=True)`: no initialisation, no second copy.

The header is checked before anything is mapped into a tensor: known dtypes, offsets in
the file and in order, each tensor's bytes = its shape x its element size.
"""
import json
import math
import mmap
import os
import struct

from . import libs

HEADER_LIMIT = 100 * 2 ** 20  # safetensors' own cap on the JSON header
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
          "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
          "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
CLIP_L = "conditioner.embedders.0.transformer."
OPEN_CLIP = "conditioner.embedders.1.model."


class SafetensorsError(ValueError):
    pass


class Mapped:
    """A .safetensors file mapped into memory: `tensors` {name: tensor viewing the mapping}.
    `done(tensor)` gives back the pages under a tensor once it has been copied out."""

    def __init__(self, path):
        import torch

        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise SafetensorsError(f"{path} is not a safetensors file (shorter than its header)")
            (length,) = struct.unpack("<Q", head)
            if length > min(HEADER_LIMIT, size - 8):
                raise SafetensorsError(f"{path} is not a safetensors file (header of {length} bytes)")
            try:
                header = json.loads(f.read(length))
            except ValueError as exc:
                raise SafetensorsError(f"{path}: unreadable safetensors header ({exc})") from exc
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # private: the file is never written
        start = 8 + length
        self.tensors = {}
        self._base = torch.frombuffer(self.map, dtype=torch.uint8, count=1).data_ptr() if size > start else 0
        spans = []
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = getattr(torch, DTYPES[info["dtype"]])
                shape = [int(n) for n in info["shape"]]
                begin, end = (int(n) for n in info["data_offsets"])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise SafetensorsError(f"{path}: tensor {name!r} has a malformed entry ({exc!r})") from exc
            count = math.prod(shape)
            fits = 0 <= begin <= end <= size - start and end - begin == count * dtype.itemsize
            if min(shape, default=0) < 0 or not fits:
                raise SafetensorsError(f"{path}: tensor {name!r} does not fit the file (offsets {begin}..{end}, "
                                       f"shape {shape}, {info['dtype']})")
            spans.append((begin, end))
            flat = (torch.frombuffer(self.map, dtype=dtype, count=count, offset=start + begin) if count
                    else torch.empty(0, dtype=dtype))
            self.tensors[name] = flat.view(shape)
        spans.sort()
        if any(b < a_end for (_, a_end), (b, _) in zip(spans, spans[1:])):
            raise SafetensorsError(f"{path}: tensors overlap in the file")

    def done(self, tensor):
        """Drop the mapped pages under `tensor` (a view of the mapping) from memory."""
        storage = tensor.untyped_storage()
        offset = storage.data_ptr() - self._base
        if not (self._base and 0 <= offset < len(self.map)) or not hasattr(self.map, "madvise"):
            return
        page = mmap.PAGESIZE
        first = offset // page * page
        last = min(len(self.map), -(-(offset + storage.nbytes()) // page) * page)
        self.map.madvise(mmap.MADV_DONTNEED, first, last - first)

    def close(self):
        self.tensors.clear()  # the views go (a caller's name for the dict sees it empty too)
        try:
            self.map.close()
        except BufferError:  # a view is still alive somewhere; the mapping goes with it
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def matched(model, converted, source, error):
    """{key: (the empty model's tensor, the converted value in its shape)} for every tensor `model`
    has; a missing one is an `error` naming `source` and them."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in converted]
    if missing:
        raise error(f"{source} lacks {len(missing)} tensor(s) of the {type(model).__name__}, e.g. {missing[:3]}: "
                    "is it a complete SDXL model?")
    found = {}
    for key, meta in expected.items():
        value = converted[key]
        if tuple(value.shape) != tuple(meta.shape):
            value = value.reshape(meta.shape)  # 1x1 convs stored for linear layers and the like (a view)
        found[key] = (meta, value)
    return found


def fill(model, converted, dtype, mapped):
    """Give the empty `model` the tensors of `converted` ({diffusers key: view}), each cast
    into `dtype` as a tensor of its own; unexpected keys are left out (as diffusers leaves
    them), missing ones are an error naming them."""
    import torch

    state = {}
    for key, (meta, value) in matched(model, converted, mapped.path, SafetensorsError).items():
        target = dtype if meta.is_floating_point() else meta.dtype
        state[key] = value.to(dtype=target, copy=True, memory_format=torch.contiguous_format)
        mapped.done(value)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def empty(build):
    """`build()` with accelerate's empty weights (parameters on the meta device, buffers real)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return build()


def sdxl_parts(path, configs, dtype, vae_dtype, text_as_stored=False):
    """{text_encoder, text_encoder_2, unet, vae} diffusers/transformers modules of the SDXL
    single file `path` (LDM layout), `configs`: {part: config dict}. `text_as_stored`: the text
    encoders keep the file's 16-bit floats when `dtype` is wider (ComfyUI's choice on the CPU: half
    the RAM), tagged `pf_compute_dtype` so each block is cast to `dtype` as it runs
    (host/streaming.py) — the same numbers as casting them here."""
    import torch

    diffusers, transformers = libs.diffusers(), libs.transformers()
    from diffusers.loaders import single_file_utils as su

    with Mapped(path) as mapped:
        sd = mapped.tensors
        unet = empty(lambda: diffusers.UNet2DConditionModel.from_config(configs["unet"]))
        fill(unet, su.convert_ldm_unet_checkpoint(sd, unet.config), dtype, mapped)
        vae = empty(lambda: diffusers.AutoencoderKL.from_config(configs["vae"]))
        fill(vae, su.convert_ldm_vae_checkpoint(sd, vae.config), vae_dtype, mapped)
        stored = next((t.dtype for k, t in sd.items() if k.startswith(CLIP_L) and t.is_floating_point()), dtype)
        narrow = text_as_stored and stored in (torch.float16, torch.bfloat16) and dtype.itemsize > stored.itemsize
        text_dtype = stored if narrow else dtype
        te = empty(lambda: transformers.CLIPTextModel(transformers.CLIPTextConfig(**configs["text_encoder"])))
        fill(te, unwrapped(te, su.convert_ldm_clip_checkpoint(sd, remove_prefix=CLIP_L)), text_dtype, mapped)
        te2 = empty(lambda: transformers.CLIPTextModelWithProjection(
            transformers.CLIPTextConfig(**configs["text_encoder_2"])))
        fill(te2, unwrapped(te2, su.convert_open_clip_checkpoint(te2, sd, prefix=OPEN_CLIP)), text_dtype, mapped)
        if narrow:
            te.pf_compute_dtype = te2.pf_compute_dtype = dtype
    return {"text_encoder": te, "text_encoder_2": te2, "unet": unet, "vae": vae}


def unwrapped(model, converted):
    """transformers >= 5.6 flattened CLIPTextModel (no `text_model.`): keys as the model has them."""
    if hasattr(model, "text_model"):
        return converted
    return {k.removeprefix("text_model."): v for k, v in converted.items()}


def controlnet(path, config, dtype, cls):
    """A diffusers ControlNet (`cls`: ControlNetModel or ControlNetUnionModel) from a .safetensors file in
    diffusers' or the original layout."""
    from diffusers.loaders import single_file_utils as su

    with Mapped(path) as mapped:
        net = empty(lambda: cls.from_config(config))
        return fill(net, su.convert_controlnet_checkpoint(mapped.tensors, net.config), dtype, mapped)
