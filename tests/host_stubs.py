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
