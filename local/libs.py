"""The heavy generation libraries, imported on first use with an error a user can act on.

ComfyUI's requirements pull in torchaudio; when the registry's newest torchaudio was built
for another torch, `import transformers` fails with a RuntimeError (not an ImportError)
deep inside. We catch both here and say which package and what to do.
"""
import importlib


class LibraryImportError(RuntimeError):
    pass


def load(name):
    try:
        return importlib.import_module(name)
    except (ImportError, RuntimeError, OSError) as exc:
        text = f"{type(exc).__name__}: {exc}"
        hint = ""
        if "torchaudio" in text:
            hint = (" torchaudio was built for a different torch than the one installed: install the torchaudio "
                    "release that matches your torch (pip install 'torchaudio==<your torch version>'), or "
                    "uninstall torchaudio if nothing else needs it.")
        elif "torchvision" in text:
            hint = (" torchvision does not match the installed torch: install torch and torchvision together "
                    "(pip install torch torchvision).")
        elif isinstance(exc, ImportError):
            hint = " Install the pack's requirements: pip install -r requirements.txt (in ComfyUI's Python)."
        raise LibraryImportError(f"PoseForge could not import {name} ({text[:400]}).{hint}") from exc


def diffusers():
    load("transformers")
    return load("diffusers")


def transformers():
    return load("transformers")
