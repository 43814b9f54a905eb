"""Minimal stand-ins for the ComfyUI host modules the pack talks to, following
ComfyUI's folder_paths / cli_args / model_management API (see the reference notes)."""
import os
import types


def folder_paths(models_dir, preset=None):
    """A `folder_paths` module: `preset` {name: ([paths], {exts})} as a yaml would add."""
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(models_dir)
    fp.supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
    fp.folder_names_and_paths = {k: (list(v[0]), set(v[1])) for k, v in (preset or {}).items()}

    def get_folder_paths(name):
        return fp.folder_names_and_paths[name][0][:]

    def get_filename_list(name):
        paths, exts = fp.folder_names_and_paths[name]
        out = []
        for base in paths:
            for dirpath, _, files in os.walk(base):
                for f in files:
                    if not exts or os.path.splitext(f)[1].lower() in exts:
                        out.append(os.path.relpath(os.path.join(dirpath, f), base).replace(os.sep, "/"))
        return sorted(set(out))

    fp.get_folder_paths = get_folder_paths
    fp.get_filename_list = get_filename_list
    return fp


def cli_args(**flags):
    mod = types.ModuleType("comfy.cli_args")
    mod.args = types.SimpleNamespace(offline=False, disable_partner_nodes=False, **{
        k: v for k, v in flags.items() if k not in ("offline", "disable_partner_nodes")})
    for k in ("offline", "disable_partner_nodes"):
        if k in flags:
            setattr(mod.args, k, flags[k])
    return mod


# -- comfy.model_management / model_patcher / utils --------------------------
class InterruptProcessingException(Exception):
    """As in ComfyUI 0.3.x (newer versions derive it from BaseException)."""


def comfy_modules(device="cpu"):
    """{name: module} for comfy, comfy.model_management, comfy.model_patcher and comfy.utils,
    following ComfyUI's API: models are registered in `current_loaded_models` by
    load_models_gpu, evicted by free_memory / unload_all_models, and progress goes
    through ProgressBar to a hook."""
    import torch

    dev = torch.device(device)
    root = types.ModuleType("comfy")
    mm = types.ModuleType("comfy.model_management")
    mp = types.ModuleType("comfy.model_patcher")
    utils = types.ModuleType("comfy.utils")
    root.model_management, root.model_patcher, root.utils = mm, mp, utils

    def module_size(module):
        return sum(t.nelement() * t.element_size() for t in module.state_dict().values())

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device
            self.size = size or module_size(model)
            if not hasattr(model, "device"):
                model.device = offload_device

        def model_size(self):
            return self.size

        def detach(self, unpatch_all=True):
            self.model.to(self.offload_device)
            self.model.device = self.offload_device
            return self.model

    class LoadedModel:
        def __init__(self, patcher):
            self.model, self.device = patcher, patcher.load_device

        def model_memory(self):
            return self.model.model_size()

        def model_unload(self, memory_to_free=None, unpatch_weights=True):
            self.model.detach(unpatch_weights)
            return True

    mm.current_loaded_models = []
    mm.load_calls = []
    mm.OOM_EXCEPTION = torch.cuda.OutOfMemoryError
    mm.InterruptProcessingException = InterruptProcessingException
    mm.interrupt_processing = False
    mm.module_size = module_size
    mm.get_torch_device = lambda: dev
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.soft_empty_cache = lambda force=False: None

    def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                        force_full_load=False):
        mm.load_calls.append((list(models), force_full_load))
        for patcher in models:
            if not any(m.model is patcher for m in mm.current_loaded_models):
                patcher.model.to(patcher.load_device)
                patcher.model.device = patcher.load_device
                mm.current_loaded_models.insert(0, LoadedModel(patcher))

    def free_memory(memory_required, device, keep_loaded=()):
        freed = 0
        for loaded in list(reversed(mm.current_loaded_models)):
            if freed >= memory_required:
                break
            if loaded.device == device and loaded not in keep_loaded:
                loaded.model_unload()
                mm.current_loaded_models.remove(loaded)
                freed += loaded.model_memory()
        return freed

    def unload_all_models():
        free_memory(1e30, mm.get_torch_device())

    def interrupt_current_processing(value=True):
        mm.interrupt_processing = value

    def processing_interrupted():
        return mm.interrupt_processing

    def throw_exception_if_processing_interrupted():
        if mm.interrupt_processing:
            mm.interrupt_processing = False
            raise InterruptProcessingException()

    for fn in (load_models_gpu, free_memory, unload_all_models, interrupt_current_processing,
               processing_interrupted, throw_exception_if_processing_interrupted):
        setattr(mm, fn.__name__, fn)
    mp.ModelPatcher = ModelPatcher

    utils.PROGRESS_BAR_HOOK = None
    utils.progress_events = []  # (value, total, preview given)

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current, self.node_id = total, 0, node_id

        def update_absolute(self, value, total=None, preview=None):
            if total is not None:
                self.total = total
            self.current = min(value, self.total)
            utils.progress_events.append((self.current, self.total, preview is not None))
            if utils.PROGRESS_BAR_HOOK is not None:
                utils.PROGRESS_BAR_HOOK(self.current, self.total, preview, node_id=self.node_id)

        def update(self, value):
            self.update_absolute(self.current + value)

    def load_torch_file(path, safe_load=False, device=None):
        if path.lower().endswith((".safetensors", ".sft")):
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=safe_load)

    utils.ProgressBar = ProgressBar
    utils.load_torch_file = load_torch_file
    return {"comfy": root, "comfy.model_management": mm, "comfy.model_patcher": mp, "comfy.utils": utils}
