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


COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
# ComfyUI's modules the pack talks to (host/comfy.py), imported from COMFYUI_DIR for the in-process tests
HOST_MODULES = ("comfy.cli_args", "comfy.model_management", "comfy.model_patcher", "comfy.utils",
                "comfy.latent_formats", "folder_paths", "utils.extra_config",
                "nodes", "comfy.sd", "comfy.sdxl_clip", "comfy.supported_models", "comfy.supported_models_base",
                "comfy.clip_vision", "comfy_extras.nodes_model_advanced")


@pytest.fixture(scope="session")
def comfy_modules():
    """ComfyUI 0.3.64's own modules (COMFYUI_DIR), imported in this process as ComfyUI starts
    them with --cpu, then taken out of sys.modules again: {name: module}. Skips without
    COMFYUI_DIR. `comfy_host` puts them back for one test."""
    if not COMFYUI_DIR:
        pytest.skip("set COMFYUI_DIR to a ComfyUI checkout to run against the real host")
    root = os.path.realpath(COMFYUI_DIR)
    before, argv = set(sys.modules), sys.argv
    sys.path.insert(0, root)
    try:
        sys.argv = ["main.py", "--cpu"]
        importlib.import_module("comfy.options").enable_args_parsing()
        for name in HOST_MODULES:
            importlib.import_module(name)
    finally:
        sys.argv = argv
        sys.path.remove(root)

    def from_comfyui(module):
        places = [getattr(module, "__file__", None) or ""] + list(getattr(module, "__spec__", None) and
                                                                  module.__spec__.submodule_search_locations or [])
        return any(os.path.realpath(p).startswith(root + os.sep) for p in places if p)

    theirs = [name for name in set(sys.modules) - before if from_comfyui(sys.modules[name])]
    return {name: sys.modules.pop(name) for name in theirs}


class Host:
    """The real ComfyUI host of one test: its memory manager (`mm`), progress bar (`utils`) and
    interrupt, with what the test reads of them: `loads` [(patchers, force_full_load)] of every
    load_models_gpu call, `progress` [(value, total, preview given)], `on_progress(fn)`."""

    def __init__(self, modules, monkeypatch):
        self.mm, self.utils = modules["comfy.model_management"], modules["comfy.utils"]
        self.modules, self.loads, self.progress, self._callbacks = modules, [], [], []
        real_load = self.mm.load_models_gpu

        def load_models_gpu(models, *args, **kwargs):
            self.loads.append((list(models), kwargs.get("force_full_load", False)))
            return real_load(models, *args, **kwargs)

        monkeypatch.setattr(self.mm, "load_models_gpu", load_models_gpu)
        monkeypatch.setattr(self.mm, "unload_all_models", self.mm.unload_all_models)  # our hook goes after the test
        self.utils.set_progress_bar_global_hook(self._hook)

    def _hook(self, value, total, preview, node_id=None):
        self.progress.append((value, total, preview is not None))
        for fn in list(self._callbacks):
            fn(value, total)

    def on_progress(self, fn):
        self._callbacks.append(fn)

    def interrupt(self, value=True):
        self.mm.interrupt_current_processing(value)

    def ours(self):
        return [m for m in self.mm.current_loaded_models if hasattr(m.model.model, "pf_key")]


@pytest.fixture
def comfy_host(comfy_modules, monkeypatch):
    """The pack inside the real ComfyUI host (comfy_modules) for one test; our cache starts
    empty, ComfyUI's memory manager is emptied and its interrupt flag cleared afterwards."""
    residency = pf("host.residency")
    residency.release_all()
    for name, module in comfy_modules.items():
        if name != "folder_paths":  # the tests' models stay in their own roots (host/models.py)
            monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(residency, "_hooked", False)
    host = Host(comfy_modules, monkeypatch)
    yield host
    host.utils.set_progress_bar_global_hook(None)
    host.interrupt(False)
    host.mm.unload_all_models()
    residency.release_all()


# -- random-weight models in the real file formats, built once per session ------
@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    """One models root that each fixture below adds its files to."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def cf_root(tiny_root):
    from tiny_models import save_codeformer, save_parsenet, save_restoreformer_pp, save_retinaface

    root = tiny_root
    save_codeformer(str(root / "facerestore_models"))
    save_restoreformer_pp(str(root / "facerestore_models"))
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


@pytest.fixture(scope="session")
def core_files(sdxl_files, tiny_root):
    """tests/tiny_sdxl.save_core: the tiny SDXL with an SD-architecture VAE, which core's loader loads (and
    the tiny ControlNet in the original layout, which core's ControlNet loader loads)."""
    import tiny_sdxl

    tiny_sdxl.save_core_controlnet(str(tiny_root), sdxl_files[0])
    return tiny_sdxl.save_core(str(tiny_root), sdxl_files[0])


@pytest.fixture
def core_host(comfy_host):
    """comfy_host with ComfyUI taught the tiny SDXL's sizes (tests/tiny_comfy)."""
    import tiny_comfy

    tiny_comfy.register()
    return comfy_host


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
def control_files(sdxl_files, tiny_root):
    """A second plain ControlNet and xinsir-layout union / ProMax files beside the tiny ones
    (tests/tiny_sdxl.save_controlnets): {name: (module, path under controlnet/)}."""
    import tiny_sdxl

    return tiny_sdxl.save_controlnets(str(tiny_root), sdxl_files[0])


@pytest.fixture(scope="session")
def vpred_file(sdxl_files, tiny_root):
    """The tiny SDXL with NoobAI's v_pred / ztsnr keys (tests/tiny_sdxl.save_vpred)."""
    import tiny_sdxl

    return tiny_sdxl.save_vpred(str(tiny_root), sdxl_files[0])


@pytest.fixture(scope="session")
def ip_files(sdxl_files, tiny_root):
    """Tiny CLIP vision encoders and IP-Adapters for the tiny SDXL (tests/tiny_ipadapter.py)."""
    import tiny_ipadapter

    built, _, _ = sdxl_files
    return tiny_ipadapter.save(str(tiny_root), built["unet"])


@pytest.fixture
def ready(sdxl, ip_files):
    """The tiny SDXL with the tiny IP-Adapter files beside it, and no cached image embeddings."""
    pf("local.ipadapter").clear_cache()
    return sdxl


@pytest.fixture(scope="session")
def lora_files(sdxl_files, tiny_root):
    """Tiny LoRAs for the tiny SDXL in kohya and diffusers layouts, and files to refuse (tests/tiny_lora.py)."""
    import tiny_lora

    built, _, _ = sdxl_files
    return tiny_lora.save(str(tiny_root), built)


@pytest.fixture(scope="session")
def dwpose_files(tiny_root):
    """Tiny DWPose networks with the real files' signatures, as ONNX and TorchScript (tests/tiny_dwpose.py):
    (folder, {kind: (detector path, estimator path)})."""
    pytest.importorskip("onnxruntime")
    import tiny_dwpose

    folder = tiny_root / "dwpose"
    return folder, tiny_dwpose.save(str(folder))


from real_comfyui import comfy_files, comfyui, comfyui_newest, segmind  # noqa: E402,F401 - the real ComfyUIs (and their fake Segmind) a session
