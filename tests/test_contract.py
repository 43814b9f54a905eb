"""Every registered node against ComfyUI's V1 custom-node contract.
Grows by itself as nodes are added."""
import re

import pytest

from conftest import PACK

NODE_IDS = sorted(PACK.NODE_CLASS_MAPPINGS)
SECRET = re.compile(r"api_?key|token|secret|password", re.I)


def test_pack_exports():
    assert isinstance(PACK.NODE_CLASS_MAPPINGS, dict)
    assert set(PACK.NODE_DISPLAY_NAME_MAPPINGS) == set(PACK.NODE_CLASS_MAPPINGS)
    assert PACK.WEB_DIRECTORY == "./web"
    assert not hasattr(PACK, "comfy_entrypoint"), "V1 and V3 together: ComfyUI ignores V3"


def _check_spec(name, spec):
    assert isinstance(spec, tuple) and 1 <= len(spec) <= 2, name
    kind = spec[0]
    if isinstance(kind, list):
        assert kind and all(isinstance(c, str) for c in kind), f"{name}: empty combo"
        if len(spec) == 2 and "default" in spec[1]:
            assert spec[1]["default"] in kind, f"{name}: default not among choices"
    else:
        assert isinstance(kind, str) and kind, name
    if len(spec) == 2:
        opts = spec[1]
        assert isinstance(opts, dict), name
        if kind in ("INT", "FLOAT"):
            assert opts["min"] <= opts["default"] <= opts["max"], name


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_node_contract(node_id):
    cls = PACK.NODE_CLASS_MAPPINGS[node_id]
    assert node_id.startswith("PF_")
    inputs = cls.INPUT_TYPES()
    assert set(inputs) <= {"required", "optional", "hidden"} and "required" in inputs
    for section in ("required", "optional"):
        for name, spec in inputs.get(section, {}).items():
            assert not SECRET.search(name), f"{name}: secrets never go in a widget"
            _check_spec(f"{node_id}.{name}", spec)
    assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
    assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    assert callable(getattr(cls, cls.FUNCTION))
    assert cls.CATEGORY.startswith("PoseForge/")
    assert PACK.NODE_DISPLAY_NAME_MAPPINGS[node_id]
