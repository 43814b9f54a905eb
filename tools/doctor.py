"""Load the pack the way ComfyUI does and report what is ready.

    python tools/doctor.py [MODELS_ROOT]

Lists the registered nodes, the model folders searched (and how many weight
files each holds) and whether a Segmind key is set (the key itself is never
printed). MODELS_ROOT defaults to $POSEFORGE_MODELS or ./models.
"""
import importlib.util
import os
import sys
import time

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def main(argv):
    start = time.perf_counter()
    pack = load_pack()
    took = time.perf_counter() - start
    models = submodule(pack, "host.models")
    key = submodule(pack, "segmind.key")
    backend = submodule(pack, "engines.backend")
    if len(argv) > 1:
        models.set_models_root(argv[1])
    print(f"PoseForge loaded in {took * 1000:.0f} ms with {len(pack.NODE_CLASS_MAPPINGS)} nodes:")
    for node_id, display in pack.NODE_DISPLAY_NAME_MAPPINGS.items():
        print(f"  {node_id:22s} {display}")
    print(f"models root: {models.models_root()}")
    for folder in models.FOLDERS:
        files = models.list_files(folder) if folder != "diffusers" else []
        print(f"  {folder:20s} {len(files):3d} file(s)  {' | '.join(models.folder_dirs(folder))}")
    print("Segmind key:", "set" if key.api_key() else "not set. " + key.HOW_TO_SET)
    blocked = backend.segmind_blocked()
    if blocked:
        print("Segmind disabled:", blocked)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
