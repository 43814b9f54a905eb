"""tools/doctor.py and tools/queue_example.py as a user runs them."""
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import queue_example

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCTOR = os.path.join(ROOT, "tools", "doctor.py")


def doctor(*args, hide=None):
    """Run the doctor in a fresh Python; `hide`: a library that import must fail for."""
    code = (f"import sys, runpy; sys.modules[{hide!r}] = None; " if hide else "import sys, runpy; ") + \
        f"sys.argv = [{DOCTOR!r}, *{list(args)!r}]; runpy.run_path({DOCTOR!r}, run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_doctor_reports_each_runtime_library_and_the_diffusers_folders(tmp_path):
    (tmp_path / "diffusers" / "sdxl-base").mkdir(parents=True)
    (tmp_path / "diffusers" / "sdxl-base" / "model_index.json").write_text("{}")
    out = doctor(str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    for library in ("torch", "diffusers", "transformers", "controlnet_aux", "facexlib", "spandrel", "peft", "torchsde",
                    "onnxruntime"):
        assert f"  {library} " in out.stdout
    assert "MISSING" not in out.stdout
    assert [l for l in out.stdout.splitlines() if l.strip().startswith("diffusers ") and "folder" in l][0].split()[1] \
        == "1"


def test_doctor_says_an_optional_library_is_not_installed_and_passes():
    out = doctor(hide="onnxruntime")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "onnxruntime            not installed (optional, for DWPose's ONNX files" in out.stdout


@pytest.mark.parametrize("library", ["diffusers", "torch", "peft", "torchsde"])
def test_doctor_fails_when_a_runtime_library_is_missing(library):
    out = doctor(hide=library)
    assert out.returncode == 1
    line = next(l for l in out.stdout.splitlines() if l.strip().startswith(library + " "))
    assert "MISSING" in line and "pip install" in out.stdout


def test_doctor_help_is_help_not_a_folder():
    out = doctor("--help")
    assert out.returncode == 0 and "usage:" in out.stdout and "models root:" not in out.stdout


# -- queue_example --------------------------------------------------------------------
class FakeComfy:
    """Answers /prompt, /history and /view as ComfyUI does, naming the output file `filename`."""

    def __init__(self, filename):
        fake = self
        self.views = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, body):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self._json({"prompt_id": "p1", "number": 0, "node_errors": {}})

            def do_GET(self):
                if self.path.startswith("/history/"):
                    image = {"filename": filename, "subfolder": "", "type": "output"}
                    return self._json({"p1": {"status": {"completed": True, "status_str": "success"},
                                              "outputs": {"9": {"images": [image]}}}})
                fake.views.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"png")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.mark.parametrize("name", ["../../escaped.png", "/tmp/escaped.png", "..", ".hidden.png", "a/b.png"])
def test_queue_example_writes_only_plain_file_names(tmp_path, name, capsys):
    server = FakeComfy(name)
    out = tmp_path / "out"
    try:
        code = queue_example.main(["sdxl_openpose_codeformer_segmind", "--url", server.url, "--out", str(out)])
    finally:
        server.httpd.shutdown()
    assert code == 1 and "not a plain file name" in capsys.readouterr().err
    assert not (tmp_path / "escaped.png").exists() and list(out.iterdir()) == [] and server.views == []


def test_queue_example_saves_a_plain_name(tmp_path):
    server = FakeComfy("PoseForge_00001_.png")
    try:
        assert queue_example.main(["sdxl_openpose_codeformer_segmind", "--url", server.url, "--out",
                                   str(tmp_path)]) == 0
    finally:
        server.httpd.shutdown()
    assert (tmp_path / "PoseForge_00001_.png").read_bytes() == b"png"


def test_queue_example_without_a_server_says_so(capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    assert queue_example.main(["ipadapter_xl_openpose", "--url", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert "No ComfyUI answered" in err and "Traceback" not in err


def test_queue_example_names_the_examples_for_an_unknown_one(capsys):
    assert queue_example.main(["no_such_example"]) == 2
    assert "ipadapter_xl_openpose" in capsys.readouterr().err
