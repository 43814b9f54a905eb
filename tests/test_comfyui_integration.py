"""The pack inside a real ComfyUI checkout (COMFYUI_DIR), started with --cpu.
Skips when COMFYUI_DIR is not set."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")


@pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run")
def test_pack_loads_in_comfyui(tmp_path):
    base = tmp_path / "comfy"
    (base / "custom_nodes").mkdir(parents=True)
    os.symlink(ROOT, base / "custom_nodes" / "PoseForge")
    proc = subprocess.run([sys.executable, "main.py", "--cpu", "--base-directory", str(base),
                           "--quick-test-for-ci", "--disable-auto-launch"],
                          cwd=COMFYUI_DIR, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert "PoseForge" in log, log[-3000:]
    assert "IMPORT FAILED" not in "".join(l for l in log.splitlines() if "PoseForge" in l), log[-3000:]
