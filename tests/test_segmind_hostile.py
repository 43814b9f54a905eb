"""The Segmind client against servers that misbehave on purpose: redirects to another host,
plain-http bases, malformed keys, keys echoed across a cut, dripping and endless answers,
decompression bombs, non-finite cost headers, and cancel while requests are in flight."""
import io
import json
import socket
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import pf

client_mod = pf("segmind.client")
cancel = pf("host.cancel")
KEY = "SG_0123456789abcdef"
JOB = {"prompt": "x", "width": 512, "height": 512}


def client(**kw):
    kw.setdefault("backoff", 0.01)
    kw.setdefault("retries", 0)
    return client_mod.Client(**kw)


def png(width=8, height=8):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Server:
    """A listener on `host` whose answer to POST is `respond(handler)`; it records what arrived."""

    def __init__(self, respond, host="127.0.0.1"):
        self.received = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.received.append((self.path, dict(self.headers), body))
                respond(self)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self):
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    started = []

    def start(respond, host="127.0.0.1"):
        started.append(Server(respond, host))
        return started[-1]

    yield start
    for s in started:
        s.stop()


def answer(handler, status, body=b"", ctype="application/json", headers=()):
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in headers:
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


# -- the key goes to the configured host and nowhere else ------------------------------
@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_host_receives_nothing(servers, api_key, monkeypatch, status):
    elsewhere = servers(lambda h: answer(h, 200, png(), "image/png"), host="127.0.0.2")
    api = servers(lambda h: answer(h, status, headers=[("Location", elsewhere.url + "/sdxl1.0-txt2img")]))
    monkeypatch.setenv("SEGMIND_API_BASE", api.url)
    with pytest.raises(client_mod.SegmindError, match=rf"redirect \(HTTP {status}\) to 127.0.0.2") as err:
        client().run("sdxl1.0-txt2img", [JOB])
    time.sleep(0.2)
    assert len(api.received) == 1 and elsewhere.received == []
    assert api_key not in str(err.value)


@pytest.mark.parametrize("base", ["http://api.segmind.com/v1", "http://10.0.0.5:8080/v1", "ftp://127.0.0.1/v1",
                                  "api.segmind.com/v1", "https://user:pw@api.segmind.com/v1"])
def test_only_https_or_loopback_bases_are_used(servers, api_key, monkeypatch, base):
    monkeypatch.setenv("SEGMIND_API_BASE", base)
    with pytest.raises(client_mod.SegmindError, match="Nothing was sent"):
        client().run("sdxl1.0-txt2img", [JOB])


def test_loopback_names_and_https_are_accepted():
    transport = pf("segmind.transport")
    for base in ("http://localhost:9/v1", "http://127.3.4.5/v1", "http://[::1]:8188/v1"):
        assert transport.target(base)[0] == "http"
    assert transport.target("https://api.segmind.com/v1") == ("https", "api.segmind.com", 443, "/v1")


def test_a_two_line_key_file_is_refused_without_showing_the_key(servers, no_key, monkeypatch, tmp_path):
    api = servers(lambda h: answer(h, 200, png(), "image/png"))
    monkeypatch.setenv("SEGMIND_API_BASE", api.url)
    path = tmp_path / "segmind_api_key"
    path.write_text("SG_firstline0000000\nSG_secondline000000\n")
    monkeypatch.setenv("SEGMIND_API_KEY_FILE", str(path))
    with pytest.raises(client_mod.SegmindError) as err:
        client().run("sdxl1.0-txt2img", [JOB])
    text = str(err.value) + repr(err.value.args) + repr(err.value.__cause__) + repr(err.value.__context__)
    assert "firstline" not in text and "secondline" not in text and str(path) in text
    assert api.received == []


@pytest.mark.parametrize("cut", [300 - 8, 60 - 8])  # the lengths errors quote
def test_the_key_is_redacted_before_a_message_is_cut(servers, api_key, monkeypatch, cut):
    sent = "SG_giventotheclient00"  # not the environment's key: the one that was sent is redacted
    status = 400 if cut > 60 else 200
    body = ("x" * cut + sent + " tail").encode()
    api = servers(lambda h: answer(h, status, body, "image/png" if status == 200 else "text/plain"))
    monkeypatch.setenv("SEGMIND_API_BASE", api.url)
    with pytest.raises(client_mod.SegmindError) as err:
        client(api_key=sent).run("sdxl1.0-txt2img", [JOB])
    assert api.received[0][1]["x-api-key"] == sent
    text = str(err.value)
    for start in range(len(sent) - 5):
        assert sent[start:start + 6] not in text, text


# -- answers are bounded in time, bytes and pixels ----------------------------------------
def raw_server(serve):
    """A bare TCP listener: serve(conn) writes whatever it likes after reading the request."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def loop():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.recv(65536)
            threading.Thread(target=serve, args=(conn, stop), daemon=True).start()
        listener.close()

    threading.Thread(target=loop, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/v1", stop


def drip_headers(conn, stop):
    try:
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Slow: " + b"a" * 10_000:
            if stop.wait(0.05):
                break
            conn.sendall(bytes([byte]))
    except OSError:
        pass


def drip_body(conn, stop):
    try:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
        while not stop.wait(0.05):
            conn.sendall(b"x")
    except OSError:
        pass


def endless(conn, stop):
    try:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n\r\n")  # no length: until closed
        chunk = b"\0" * 65536
        while not stop.is_set():
            conn.sendall(chunk)
    except OSError:
        pass


@pytest.mark.timeout(30)
@pytest.mark.parametrize("serve,match", [(drip_headers, "did not answer"), (drip_body, "did not answer"),
                                         (endless, "larger than")])
def test_dripping_and_endless_servers_end_within_the_deadline_and_the_cap(api_key, monkeypatch, serve, match):
    url, stop = raw_server(serve)
    monkeypatch.setenv("SEGMIND_API_BASE", url)
    start = time.monotonic()
    try:
        with pytest.raises(client_mod.SegmindError, match=match):
            client(read_timeout=1.0, max_bytes=4 * 2 ** 20).run("sdxl1.0-txt2img", [JOB])
    finally:
        stop.set()
    assert time.monotonic() - start < 6.0  # a 1 s deadline, with room for a busy machine (unbounded: 30 s)


def bomb_png(side=13000):
    """A valid 1-bit PNG of side x side pixels that compresses to a few kilobytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (side + 7) // 8)
    pixels = zlib.compress(row * side, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_refused_before_decoding(servers, api_key, monkeypatch):
    bomb = bomb_png()
    assert len(bomb) < 100_000
    api = servers(lambda h: answer(h, 200, bomb, "image/png"))
    monkeypatch.setenv("SEGMIND_API_BASE", api.url)
    with pytest.raises(client_mod.SegmindError, match="13000x13000 image.*refused without decoding"):
        client().run("sdxl1.0-txt2img", [JOB])


def test_an_image_of_the_asked_size_and_a_little_more_is_accepted(servers, api_key, monkeypatch):
    api = servers(lambda h: answer(h, 200, png(2048, 2048), "image/png"))
    monkeypatch.setenv("SEGMIND_API_BASE", api.url)
    images, _ = client().run("sdxl1.0-txt2img", [JOB])
    assert images.shape == (1, 2048, 2048, 3)
    assert client_mod.pixel_limit({"image": torch.zeros(1, 100, 100, 3), "scale": 4}) == 4 * 2048 * 2048
    assert client_mod.pixel_limit({"image": torch.zeros(1, 2000, 2000, 3), "scale": 4}) == 4 * 8000 * 8000


def test_cost_headers_that_are_not_finite_are_dropped(servers, api_key, monkeypatch):
    headers = [("x-cost", "NaN"), ("x-remaining-credits", "inf"), ("x-generation-time", "1.5")]
    api = servers(lambda h: answer(h, 200, png(), "image/png", headers))
    monkeypatch.setenv("SEGMIND_API_BASE", api.url)
    _, info = client().run("sdxl1.0-txt2img", [JOB, JOB])
    assert info == {"x-generation-time": 3.0}
    json.dumps(info, allow_nan=False)


# -- cancel closes what is in flight -----------------------------------------------------------
@pytest.mark.timeout(20)
def test_cancel_closes_connections_and_ends_the_worker_threads(api_key, monkeypatch):
    closed = []

    def silent(conn, stop):
        conn.settimeout(10)
        try:
            while conn.recv(65536):  # the rest of the request, then nothing until the client closes its end
                pass
            closed.append(True)
        except OSError:
            closed.append(False)

    url, stop = raw_server(silent)
    monkeypatch.setenv("SEGMIND_API_BASE", url)
    timer = threading.Timer(0.5, cancel.request_cancel)
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(cancel.Cancelled):
            client().run("sdxl1.0-txt2img", [dict(JOB, seed=s) for s in range(3)])
    finally:
        timer.cancel()
        stop.set()
    assert time.monotonic() - start < 6.0  # cancel at 0.5 s, room for a busy machine (the server holds 10 s)
    assert not [t for t in threading.enumerate() if t.name.startswith("PoseForge-segmind")]  # when run() returns
    deadline = time.monotonic() + 10.0  # the server's side sees the close when its thread next runs (busy machine)
    while len(closed) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed == [True] * 3
