"""Test harness: the pack is loaded the way ComfyUI loads it (see tools/doctor.py)."""
import importlib
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
sys.path.insert(0, HERE)

from doctor import load_pack  # noqa: E402

PACK = load_pack()


def pf(name):
    """A submodule of the loaded pack, e.g. pf("segmind.client")."""
    return importlib.import_module(f"{PACK.__name__}.{name}")


@pytest.fixture
def pack():
    return PACK


@pytest.fixture
def models_root(tmp_path, monkeypatch):
    """An empty models root used for the test, outside ComfyUI."""
    models = pf("host.models")
    monkeypatch.delenv("POSEFORGE_MODELS", raising=False)
    models.set_models_root(tmp_path / "models")
    yield tmp_path / "models"
    models.set_models_root(None)


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    """No Segmind key anywhere (env or key file)."""
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    monkeypatch.setenv("SEGMIND_API_KEY_FILE", str(tmp_path / "no-such-key-file"))
    monkeypatch.delenv("POSEFORGE_OFFLINE", raising=False)


@pytest.fixture
def api_key(monkeypatch, no_key):
    """A Segmind key set in the environment; returns it."""
    value = "SG_0123456789abcdef"
    monkeypatch.setenv("SEGMIND_API_KEY", value)
    return value
