"""The backend policy shared by every generating node, and the key's secrecy."""
import logging
import sys

import pytest

from conftest import pf
import host_stubs

backend = pf("engines.backend")
models = pf("host.models")
key = pf("segmind.key")
NEEDS = [("facerestore_models", "codeformer.pth", "https://github.com/sczhou/CodeFormer/releases")]


def _place(models_root):
    (models_root / "facerestore_models").mkdir(parents=True)
    (models_root / "facerestore_models" / "codeformer.pth").write_bytes(b"x")


def test_auto_prefers_local_when_files_present(models_root, api_key):
    _place(models_root)
    assert backend.choose("auto", NEEDS) == "local"


def test_auto_falls_back_to_segmind_with_key(models_root, api_key):
    assert backend.choose("auto", NEEDS) == "segmind"


def test_auto_without_files_or_key_names_files_and_key(models_root, no_key):
    with pytest.raises(models.MissingModelFiles) as err:
        backend.choose("auto", NEEDS)
    text = str(err.value)
    assert "codeformer.pth" in text and "facerestore_models" in text
    assert "SEGMIND_API_KEY" in text


def _segmind_refused(flag):
    with pytest.raises(models.MissingModelFiles) as err:
        backend.choose("auto", NEEDS)
    assert flag in str(err.value)
    with pytest.raises(backend.BackendUnavailable, match=flag):
        backend.choose("segmind", NEEDS)


@pytest.mark.parametrize("flag", ["offline", "disable_partner_nodes"])
def test_auto_respects_later_comfyuis_offline_flags(models_root, api_key, monkeypatch, flag):
    monkeypatch.setitem(sys.modules, "comfy.cli_args", host_stubs.cli_args(**{flag: True}))
    _segmind_refused("--" + flag.replace("_", "-"))


def test_auto_respects_comfyui_0364s_disable_api_nodes(models_root, api_key, monkeypatch, comfy_modules):
    cli = comfy_modules["comfy.cli_args"]
    monkeypatch.setitem(sys.modules, "comfy.cli_args", cli)
    monkeypatch.setattr(cli, "args", cli.parser.parse_args(["--cpu", "--disable-api-nodes"]))
    _segmind_refused("--disable-api-nodes")
    monkeypatch.setattr(cli, "args", cli.parser.parse_args(["--cpu"]))
    assert backend.choose("auto", NEEDS) == "segmind"


def test_explicit_local_and_segmind(models_root, no_key, monkeypatch):
    with pytest.raises(models.MissingModelFiles):
        backend.choose("local", NEEDS)
    with pytest.raises(backend.BackendUnavailable, match="SEGMIND_API_KEY"):
        backend.choose("segmind", NEEDS)
    monkeypatch.setenv("POSEFORGE_OFFLINE", "1")
    with pytest.raises(backend.BackendUnavailable, match="POSEFORGE_OFFLINE"):
        backend.choose("segmind", NEEDS)
    with pytest.raises(backend.BackendUnavailable, match="Unknown backend"):
        backend.choose("cloud", NEEDS)


def test_key_from_file(no_key, tmp_path, monkeypatch):
    assert key.api_key() is None
    path = tmp_path / "k"
    path.write_text("SG_fromfile0000000\n")
    monkeypatch.setenv("SEGMIND_API_KEY_FILE", str(path))
    assert key.api_key() == "SG_fromfile0000000"


def test_key_never_in_logs_or_ui(models_root, api_key, caplog):
    caplog.set_level(logging.INFO, logger="PoseForge")
    ui = backend.report("PF_Test", "segmind", note=f"echo {api_key}")
    logging.getLogger("PoseForge").info("server said: bad key %s", api_key)
    assert api_key not in repr(ui)
    for record in caplog.records:
        assert api_key not in record.getMessage()
    assert ui["backend"] == ["segmind"]
    assert key.redact(f"x {api_key} y") == "x [SEGMIND_API_KEY] y"
