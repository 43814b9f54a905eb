"""ComfyUI-facing node classes (V1 contract). Each node is one contract with
up to two backends; the engines live in `local/` and `segmind/`."""
from . import codeformer, ipadapter, pose, sdxl

NODE_MODULES = (pose, ipadapter, sdxl, codeformer)

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in NODE_MODULES:
    for _cls in _module.NODES:
        NODE_CLASS_MAPPINGS[_cls.NODE_ID] = _cls
        NODE_DISPLAY_NAME_MAPPINGS[_cls.NODE_ID] = _cls.DISPLAY_NAME
