"""local/sdxl_file.py: an SDXL single file and a ControlNet read memory-mapped straight into the
modules give what diffusers' own from_single_file gives, tensor for tensor and dtype for dtype;
a file whose header lies is refused before any tensor is made from it."""
import json
import os
import struct

import pytest
import torch

from conftest import pf

sdxl_file = pf("local.sdxl_file")
engine = pf("local.sdxl")


def diffusers_parts(path, dtype):
    from diffusers import StableDiffusionXLPipeline

    tok, tok2 = engine.tokenizers()
    pipe = StableDiffusionXLPipeline.from_single_file(path, config=engine.config_dir(path), local_files_only=True,
                                                      torch_dtype=dtype, tokenizer=tok, tokenizer_2=tok2)
    return {name: getattr(pipe, name) for name in ("text_encoder", "text_encoder_2", "unet", "vae")}


def configs(path):
    return {part: engine.component_config(path, part) for part in ("text_encoder", "text_encoder_2", "unet", "vae")}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_single_file_gives_what_diffusers_gives(sdxl_files, dtype):
    _, path, _ = sdxl_files
    ours = sdxl_file.sdxl_parts(path, configs(path), dtype, torch.float32)
    theirs = diffusers_parts(path, dtype)
    theirs["vae"] = diffusers_parts(path, torch.float32)["vae"]  # the VAE from the file's own values (fp32 here)
    for name, net in theirs.items():
        mine = ours[name].state_dict()
        assert type(ours[name]) is type(net) and mine.keys() == net.state_dict().keys(), name
        for key, value in net.state_dict().items():
            assert mine[key].dtype == value.dtype and torch.equal(mine[key], value), f"{name}.{key}"
            assert mine[key].device.type == "cpu" and mine[key].is_contiguous()
        assert not ours[name].training
        assert dict(ours[name].named_buffers()).keys() == dict(net.named_buffers()).keys()


def test_the_modules_own_their_tensors(sdxl_files, tmp_path):
    """No tensor keeps the mapping alive: the file can go (or change) once loaded."""
    import shutil

    _, path, _ = sdxl_files
    copy = tmp_path / "copy.safetensors"
    shutil.copy(path, copy)
    shutil.copytree(engine.config_dir(path), tmp_path / "copy.config")
    parts = sdxl_file.sdxl_parts(str(copy), configs(path), torch.float32, torch.float32)
    before = {k: v.clone() for k, v in parts["unet"].state_dict().items()}
    with open(copy, "r+b") as f:  # scribble over the file's tensors
        f.seek(-4096, os.SEEK_END)
        f.write(b"\xff" * 4096)
    os.remove(copy)
    for key, value in parts["unet"].state_dict().items():
        assert torch.equal(value, before[key]), key


def test_the_controlnet_gives_what_diffusers_gives(sdxl_files):
    from diffusers import ControlNetModel

    _, _, cn_dir = sdxl_files
    weights_file = os.path.join(cn_dir, "diffusion_pytorch_model.safetensors")
    with open(os.path.join(cn_dir, "config.json")) as f:
        config = json.load(f)
    ours = sdxl_file.controlnet(weights_file, config, torch.float16, ControlNetModel)
    theirs = ControlNetModel.from_single_file(weights_file, config=cn_dir, local_files_only=True,
                                              torch_dtype=torch.float16)
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key


def header_file(tmp_path, header, data=b"\0" * 64):
    path = tmp_path / "bad.safetensors"
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return str(path)


@pytest.mark.parametrize("header, data, says", [
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 128]}}, b"\0" * 64, "does not fit the file"),
    ({"a": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 16]}}, b"\0" * 64, "does not fit the file"),
    ({"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, b"\0" * 64, "does not fit the file"),
    ({"a": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 64, "malformed"),
    ({"a": {"dtype": "F32", "shape": "big", "data_offsets": [0, 16]}}, b"\0" * 64, "malformed"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
      "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, b"\0" * 64, "overlap"),
])
def test_a_lying_header_is_refused(tmp_path, header, data, says):
    with pytest.raises(sdxl_file.SafetensorsError, match=says):
        sdxl_file.Mapped(header_file(tmp_path, header, data))


def test_a_file_that_is_no_safetensors_is_refused(tmp_path):
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02")
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes(struct.pack("<Q", 2 ** 40) + b"{}")
    text = tmp_path / "text.safetensors"
    text.write_bytes(struct.pack("<Q", 5) + b"hello")
    for path, says in ((short, "shorter than its header"), (huge, "header of"), (text, "unreadable")):
        with pytest.raises(sdxl_file.SafetensorsError, match=says):
            sdxl_file.Mapped(str(path))


def test_a_file_lacking_tensors_names_them(sdxl_files, tmp_path):
    from safetensors.torch import load_file, save_file

    _, path, _ = sdxl_files
    sd = load_file(path)
    cut = {k: v for k, v in sd.items() if "output_blocks.2" not in k}
    save_file(cut, str(tmp_path / "cut.safetensors"))
    with pytest.raises(sdxl_file.SafetensorsError, match="lacks .* UNet2DConditionModel"):
        sdxl_file.sdxl_parts(str(tmp_path / "cut.safetensors"), configs(path), torch.float32, torch.float32)
