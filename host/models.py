"""Model folders: ComfyUI's `folder_paths` inside the host, a models root outside.

Inside ComfyUI the folders below are registered without touching paths the user
configured in `extra_model_paths.yaml`. Outside ComfyUI a models root is given
explicitly (`set_models_root`) or by the `POSEFORGE_MODELS` environment variable,
and each folder is `<root>/<folder name>`.
"""
import os

from . import comfy

WEIGHTS = {".safetensors", ".sft", ".pth", ".pt", ".bin", ".ckpt"}

# folder name -> file extensions listed in it
FOLDERS = {
    "checkpoints": WEIGHTS,
    "diffusers": set(),  # folders, not files
    "controlnet": WEIGHTS,
    "ipadapter": WEIGHTS,
    "clip_vision": WEIGHTS,
    "facerestore_models": WEIGHTS,
    "facedetection": WEIGHTS,
    "upscale_models": WEIGHTS,
    "openpose": WEIGHTS,
    "loras": WEIGHTS,
}

_root = None


class MissingModelFiles(FileNotFoundError):
    """One or more model files are absent; the message names each file and folder."""

    def __init__(self, missing, hint=None):
        self.missing = list(missing)  # [(folder name, filename, where to get it)]
        lines = ["PoseForge is missing model files:"]
        for folder, filename, source in self.missing:
            where = " or ".join(folder_dirs(folder)) or f"models/{folder}"
            lines.append(f"  - {filename} in the '{folder}' folder ({where})"
                         + (f"; get it from {source}" if source else ""))
        if hint:
            lines.append(hint)
        super().__init__("\n".join(lines))


def set_models_root(path):
    """Outside ComfyUI: use `path` as the models root (None: back to POSEFORGE_MODELS)."""
    global _root
    _root = None if path is None else os.fspath(path)


def models_root():
    return _root or os.environ.get("POSEFORGE_MODELS") or os.path.join(os.getcwd(), "models")


def register_folders():
    """Add our folders to ComfyUI, keeping every path the user already registered."""
    fp = comfy.module("folder_paths")
    if fp is None:
        return
    for name, exts in FOLDERS.items():
        if name in fp.folder_names_and_paths:
            paths, old_exts = fp.folder_names_and_paths[name]
            fp.folder_names_and_paths[name] = (paths, set(old_exts) | exts)
        else:
            fp.folder_names_and_paths[name] = ([os.path.join(fp.models_dir, name)], set(exts))


def folder_dirs(folder):
    """The directories searched for `folder`, in priority order."""
    fp = comfy.module("folder_paths")
    if fp is not None:
        return list(fp.get_folder_paths(folder))
    return [os.path.join(models_root(), folder)]


def list_files(folder):
    """File names in `folder` (relative, recursive), for a node's combo input."""
    fp = comfy.module("folder_paths")
    if fp is not None:
        return list(fp.get_filename_list(folder))
    exts = FOLDERS.get(folder, WEIGHTS)
    found = set()
    for base in folder_dirs(folder):
        for dirpath, _, files in os.walk(base, followlinks=True):
            for f in files:
                if os.path.splitext(f)[1].lower() in exts:
                    found.add(os.path.relpath(os.path.join(dirpath, f), base).replace(os.sep, "/"))
    return sorted(found)


def list_dirs(folder, marker="model_index.json"):
    """Sub-folders of `folder` holding `marker` (diffusers pipelines), relative, for a combo input."""
    found = set()
    for base in folder_dirs(folder):
        if os.path.isdir(base):
            for name in os.listdir(base):
                if os.path.exists(os.path.join(base, name, marker)):
                    found.add(name)
    return sorted(found)


def find(folder, filename):
    """Full path of `filename` in `folder`, or None."""
    for base in folder_dirs(folder):
        path = os.path.normpath(os.path.join(base, filename))
        if not path.startswith(os.path.normpath(base) + os.sep):
            continue  # refuse "../" escapes from a graph
        if os.path.exists(path):
            return path
    return None


def missing(wanted):
    """Of `wanted` [(folder, filename, source)], the entries not present."""
    return [w for w in wanted if find(w[0], w[1]) is None]


def require(wanted):
    """{role: path} of `wanted` {role: (folder, filename, source)}; MissingModelFiles names all absent ones."""
    absent = missing(list(wanted.values()))
    if absent:
        raise MissingModelFiles(absent)
    return {role: find(folder, filename) for role, (folder, filename, _) in wanted.items()}


def choices(folder, fallback):
    """Combo choices for a file input: the files present, else the expected default name."""
    return list_files(folder) or [fallback]
