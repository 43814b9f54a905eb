"""Load the pack the way ComfyUI does and report what is ready.

    python tools/doctor.py [MODELS_ROOT]

Lists the registered nodes, imports each runtime library the nodes need (and says which
is missing or broken, with what to do), the model folders searched (and how many weight
files or diffusers folders each holds) and whether a Segmind key is set (the key itself is
never printed). MODELS_ROOT defaults to $POSEFORGE_MODELS or ./models. Exit status 1 when
a runtime library cannot be imported.
"""
import argparse
import importlib
import importlib.util
import os
import sys
import time

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# import name -> what needs it
RUNTIME = {"torch": "every local node", "torchvision": "OpenPose (controlnet-aux), RetinaFace",
           "numpy": "every node", "PIL": "every node", "safetensors": "weight files",
           "cv2": "pose maps, CodeFormer", "controlnet_aux": "PF_OpenPoseExtract",
           "facexlib": "PF_CodeFormer (RetinaFace, ParseNet)", "spandrel": "PF_CodeFormer, upscale models",
           "spandrel_extra_arches": "PF_CodeFormer (CodeFormer)", "transformers": "SDXL, IP-Adapter",
           "diffusers": "SDXL, IP-Adapter", "accelerate": "SDXL loading", "peft": "PF_SDXLLoRA",
           "torchsde": "the DPM++ SDE Karras scheduler"}
OPTIONAL = {"onnxruntime": "DWPose's ONNX files (pip install onnxruntime, or onnxruntime-gpu for CUDA)"}


def load_pack(pack_dir=PACK_DIR):
    """Import the pack as ComfyUI's loader does: a spec from __init__.py under a
    path-derived module name, so only relative imports can work."""
    name = pack_dir.replace(".", "_x_")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(pack_dir, "__init__.py"), submodule_search_locations=[pack_dir])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def submodule(pack, name):
    return importlib.import_module(f"{pack.__name__}.{name}")


def libraries(pack):
    """[(import name, version or None, problem or None)] for every runtime library."""
    import warnings

    libs = submodule(pack, "local.libs")
    found = []
    for name in [*RUNTIME, *OPTIONAL]:
        try:
            with warnings.catch_warnings():  # the libraries' own deprecation chatter is not ours to report
                warnings.simplefilter("ignore")
                module = libs.load(name)
        except libs.LibraryImportError as exc:
            found.append((name, None, str(exc)))
        else:
            found.append((name, getattr(module, "__version__", "?"), None))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description="Load PoseForge as ComfyUI does and report what is ready.")
    parser.add_argument("models_root", nargs="?", help="the models root (default: $POSEFORGE_MODELS or ./models)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    pack = load_pack()
    took = time.perf_counter() - start
    models = submodule(pack, "host.models")
    key = submodule(pack, "segmind.key")
    backend = submodule(pack, "engines.backend")
    if args.models_root:
        models.set_models_root(args.models_root)
    print(f"PoseForge loaded in {took * 1000:.0f} ms with {len(pack.NODE_CLASS_MAPPINGS)} nodes:")
    for node_id, display in pack.NODE_DISPLAY_NAME_MAPPINGS.items():
        print(f"  {node_id:22s} {display}")
    print("runtime libraries:")
    broken = 0
    for name, version, problem in libraries(pack):
        if problem and name in OPTIONAL:
            print(f"  {name:22s} not installed (optional, for {OPTIONAL[name]})")
        elif problem:
            broken += 1
            print(f"  {name:22s} MISSING for {RUNTIME[name]}: {problem}")
        else:
            print(f"  {name:22s} {version}")
    print(f"models root: {models.models_root()}")
    for folder in models.FOLDERS:
        if folder == "diffusers":
            count, what = len(models.list_dirs(folder)), "folder(s)"
        else:
            count, what = len(models.list_files(folder)), "file(s)"
        print(f"  {folder:20s} {count:3d} {what:9s} {' | '.join(models.folder_dirs(folder))}")
    print("Segmind key:", "set" if key.api_key() else "not set. " + key.missing_message())
    blocked = backend.segmind_blocked()
    if blocked:
        print("Segmind disabled:", blocked)
    if broken:
        print(f"{broken} runtime librar{'y is' if broken == 1 else 'ies are'} missing: "
              "pip install -r requirements.txt (in ComfyUI's Python; outside ComfyUI also "
              "requirements-standalone.txt first).")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
