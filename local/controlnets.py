"""SDXL ControlNets for the sampler: plain ones (thibaud's OpenPoseXL2, xinsir's single-task folders)
and xinsir's ControlNet Union / ProMax, told apart by content, loaded as Residents, and stacked for
one run.

A union file is diffusers' own `ControlNetUnionModel`; its config comes from the file's folder (or the
one we ship) with what the weights say put over it: how many control types it has (6 for the union,
8 for ProMax, whose folder shares the union's config.json), the width of its task embedding and the
depth of its mixing transformer. Each union ControlNet runs in one mode per entry (openpose for the
pose, the mode a PF_ControlNet entry is tagged with), as its own pipeline would run it.

One run's ControlNets are one `stack(...)`: diffusers' `MultiControlNetModel`, whose SDXL ControlNet
pipelines (text-to-image, image-to-image) sum what each contributes; a union entry sits in it behind
`Mode`, which makes the call the stack passes the call diffusers' union pipeline makes. So union and
plain ControlNets mix in one run (diffusers' union pipeline takes union models only) and every
pipeline we sample with takes them. An entry at strength 0 is left out of the stack: it costs nothing
and the run is the run without it.
"""
import functools
import os

from ..host import residency, weights
from . import families, libs, sdxl_file

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG_DIR = os.path.join(HERE, "sdxl_config", "controlnet")
# xinsir's control types (the union's task_embedding rows), by the names ComfyUI's SetUnionControlNetType uses
MODES = {"openpose": 0, "depth": 1, "hed/pidi/scribble/ted": 2, "canny/lineart/anime_lineart/mlsd": 3, "normal": 4,
         "segment": 5, "tile": 6, "repaint": 7}
PROMAX_ONLY = ("tile", "repaint")
UNION_SOURCE = "https://huggingface.co/xinsir/controlnet-union-sdxl-1.0 (the ProMax file for tile and repaint)"
TRANS_HEADS = 8  # the union's mixing transformer: heads are not in the weights (xinsir's config)


class ControlNetError(ValueError):
    pass


def config(path):
    """The diffusers config dict of the ControlNet file `path`: its folder's config.json, else SDXL's;
    for a union file, the union's sizes read from its tensors."""
    weights_file = families.controlnet_weights(path)
    folder = os.path.dirname(weights_file)
    found = families.read_json(os.path.join(folder if os.path.exists(os.path.join(folder, "config.json"))
                                            else CONFIG_DIR, "config.json"))
    shapes = weights.shapes(weights_file)
    if "task_embedding" not in shapes:
        return found
    types, width = shapes["task_embedding"]
    layers = len({k.split(".")[1] for k in shapes if k.startswith("transformer_layes.")})
    return dict(found, num_control_type=types, num_trans_channel=width, num_trans_layer=layers,
                num_trans_head=found.get("num_trans_head", TRANS_HEADS),
                num_proj_channel=shapes["spatial_ch_projs.weight"][0])


def is_union(net):
    return type(net).__name__ == "ControlNetUnionModel"


def load(path, dtype):
    """The ControlNet Resident of `path` (a file in diffusers' or the original layout, or a diffusers
    folder), computing in `dtype` (a torch dtype; its name keys the cache)."""
    def build():
        diffusers = libs.diffusers()
        weights_file = families.controlnet_weights(path)
        settings = config(path)
        cls = diffusers.ControlNetUnionModel if "num_control_type" in settings else diffusers.ControlNetModel
        if weights_file.lower().endswith(weights.SAFETENSORS):
            return sdxl_file.controlnet(weights_file, settings, dtype, cls)
        folder = os.path.dirname(weights_file)
        return cls.from_single_file(weights_file, config=folder if os.path.exists(os.path.join(folder, "config.json"))
                                    else CONFIG_DIR, local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=True)

    return residency.get(("controlnet", weights.identity(path), str(dtype).removeprefix("torch.")), build)


def checked_mode(path, mode, what, pose):
    """The ControlNet file `path` checked to be one the sampler runs (families.check_controlnet; `pose`: the
    pose's own) from one read of its header, and the union control type `mode` names for it (None for a
    plain ControlNet, which has one task); an error naming `what` when the file is a union that needs a mode
    or has too few types (the union's 6 against ProMax's 8)."""
    shapes = weights.shapes(families.controlnet_weights(path))
    families.check_controlnet(path, pose, keys=shapes)
    if "task_embedding" not in shapes:
        return None
    if mode not in MODES:
        raise ControlNetError(f"{os.path.basename(path)} is a ControlNet Union: {what} must say which kind of "
                              f"control map its image is ({', '.join(MODES)}), not {mode!r}.")
    types = shapes["task_embedding"][0]
    if MODES[mode] >= types:
        raise ControlNetError(f"{os.path.basename(path)} has {types} control types, and {mode!r} is not among them: "
                              f"{' and '.join(PROMAX_ONLY)} need the ProMax union file ({UNION_SOURCE}).")
    return MODES[mode]


@functools.cache
def _classes():
    """(Mode, Stack): defined on first use, as diffusers loads lazily."""
    import torch

    diffusers = libs.diffusers()

    class Mode(torch.nn.Module):
        """A union ControlNet in one mode, called as a plain ControlNet is (what the stack passes)."""

        def __init__(self, net, mode):
            super().__init__()
            self.net, self.mode = net, mode

        @property
        def config(self):
            return self.net.config

        def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale=1.0, **kwargs):
            # as diffusers' union pipeline: a one-hot control type in the text embeddings' dtype, a row a sample
            chosen = torch.zeros(self.net.config.num_control_type)
            chosen[self.mode] = 1
            control_type = chosen.reshape(1, -1).to(sample.device, encoder_hidden_states.dtype)
            return self.net(sample, timestep, encoder_hidden_states, controlnet_cond=[controlnet_cond],
                            control_type=control_type.repeat(sample.shape[0], 1), control_type_idx=[self.mode],
                            conditioning_scale=[conditioning_scale], **kwargs)

    class Stack(diffusers.MultiControlNetModel):
        """diffusers' multi-ControlNet over plain nets and union nets in a mode."""

    return Mode, Stack


def stack(entries):
    """The ControlNet module one run samples with: `entries` [(net, union mode or None)] in the order of
    their control images, scales and windows."""
    mode_cls, stack_cls = _classes()
    return stack_cls([net if mode is None else mode_cls(net, mode) for net, mode in entries])

