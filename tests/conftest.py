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


@pytest.fixture
def comfy_host(monkeypatch):
    """ComfyUI's model management, patcher and progress bar as stand-ins (see host_stubs);
    our cache starts empty and is emptied again afterwards."""
    import host_stubs

    residency = pf("host.residency")
    residency.release_all()
    modules = host_stubs.comfy_modules()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(residency, "_hooked", False)
    yield modules["comfy.model_management"], modules["comfy.utils"]
    residency.release_all()


# -- random-weight models in the real file formats, built once per session ------
@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """One models root that each fixture below adds its files to."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def cf_root(tiny_root):
    from tiny_models import save_codeformer, save_parsenet, save_retinaface

    root = tiny_root
    save_codeformer(str(root / "facerestore_models"))
    save_retinaface(str(root / "facedetection"))
    save_parsenet(str(root / "facedetection"))
    return root


@pytest.fixture
def with_codeformer(cf_root):
    pf("host.models").set_models_root(cf_root)
    yield cf_root
    pf("host.models").set_models_root(None)


@pytest.fixture(scope="session")
def openpose_root(tiny_root):
    from tiny_models import save_openpose

    root = tiny_root
    save_openpose(str(root / "openpose"))
    return root


@pytest.fixture
def with_openpose(openpose_root, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pf("host.models").set_models_root(openpose_root)
    yield openpose_root
    pf("host.models").set_models_root(None)


@pytest.fixture
def fake(api_key, monkeypatch, models_root):
    """The fake Segmind (tests/fake_segmind.py) on 127.0.0.1, knowing `api_key`; the client points at it."""
    from fake_segmind import FakeSegmind

    server = FakeSegmind(keys=(api_key,), image_format="PNG").start()
    monkeypatch.setenv("SEGMIND_API_BASE", server.base_url)
    yield server
    server.stop()


# -- tiny SDXL (tests/tiny_sdxl.py), shared by the SDXL and IP-Adapter tests -------
@pytest.fixture(scope="session")
def sdxl_files(tiny_root):
    import tiny_sdxl

    return tiny_sdxl.save(str(tiny_root))


@pytest.fixture
def no_network(monkeypatch):
    """Any connection except to this machine fails the test (diffusers must stay offline)."""
    import socket

    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"PoseForge tried to reach the network: {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def sdxl(sdxl_files, tiny_root, no_network):
    models = pf("host.models")
    models.set_models_root(tiny_root)
    loader = PACK.NODE_CLASS_MAPPINGS["PF_SDXLLoader"]()
    yield loader.load("tiny_sdxl.safetensors", "tiny-openpose-sdxl/diffusion_pytorch_model.safetensors")[0]
    models.set_models_root(None)


@pytest.fixture(scope="session")
def ip_files(sdxl_files, tiny_root):
    """Tiny CLIP vision encoders and IP-Adapters for the tiny SDXL (tests/tiny_ipadapter.py)."""
    import tiny_ipadapter

    built, _, _ = sdxl_files
    return tiny_ipadapter.save(str(tiny_root), built["unet"])
