"""Where pose weights are found, never downloaded: our `openpose` model folder first, then
comfyui_controlnet_aux's checkpoint folders (`AUX_ANNOTATOR_CKPTS_PATH`, and `ckpts/` in each
custom_nodes folder, laid out as `<repo>/<file>`), then a Hugging Face cache the user already has.
"""
import os

from ..host import comfy, models


def aux_dirs(repo):
    """The folders where comfyui_controlnet_aux keeps the files of Hugging Face repository `repo`."""
    roots = [os.environ["AUX_ANNOTATOR_CKPTS_PATH"]] if os.environ.get("AUX_ANNOTATOR_CKPTS_PATH") else []
    fp = comfy.module("folder_paths")
    if fp is not None and "custom_nodes" in fp.folder_names_and_paths:
        roots += [os.path.join(d, "comfyui_controlnet_aux", "ckpts") for d in fp.get_folder_paths("custom_nodes")]
    return [os.path.join(root, *repo.split("/")) for root in roots]


def _hf_cached(repo, filename):
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(repo, filename)
    return found if isinstance(found, str) else None


def find(filename, repo):
    """The path of `filename` (of Hugging Face repository `repo`) in one of the places above, or None."""
    found = models.find("openpose", filename)
    for folder in () if found else aux_dirs(repo):
        if os.path.isfile(os.path.join(folder, filename)):
            return os.path.join(folder, filename)
    return found or _hf_cached(repo, filename)


def locate(wanted):
    """{role: path} of `wanted` {role: (filename, repo)}; MissingModelFiles names every file that is
    in none of the places, with its repository."""
    paths = {role: find(name, repo) for role, (name, repo) in wanted.items()}
    absent = [("openpose", name, f"https://huggingface.co/{repo}") for role, (name, repo) in wanted.items()
              if paths[role] is None]
    if absent:
        raise models.MissingModelFiles(absent, hint="Put them into the 'openpose' folder (nothing is downloaded).")
    return paths
