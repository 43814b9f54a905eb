"""A faithful fake of Segmind's v1 serverless API: real HTTP on 127.0.0.1.

It implements the contract in shared/reference/segmind-api.md on its own (it
does not read the client's endpoint table): auth via x-api-key, JSON or
multipart only (406 otherwise), per-endpoint validation of required fields,
ranges and enums, raw image bytes or `base64: true` JSON, the credit and cost
headers, 404 for unknown slugs, 405 (HTML) for GET, 410 for retired models,
429 with x-rate-limit-reset-at-utc, 406 for insufficient credits.

Tests choose failures with `fail_next(status, times)`, slow answers with
`latency`, and read what arrived in `requests`.

Success images are derived from the request, so a test can check it arrived
intact: text-to-image gives a solid colour hashed from prompt and seed at
img_width x img_height; image endpoints return the input image inverted
(ControlNet family) or enlarged by `scale` with nearest-neighbour (codeformer).
"""
import base64
import hashlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

SCHEDULERS = ["DDIM", "DPM Multi", "DPM Single", "Euler a", "Euler", "Heun", "DPM2 a Karras", "DPM2 Karras",
              "LMS", "PNDM", "DDPM", "UniPC"]
NUM, INT, BOOL, STR, IMG = "num", "int", "bool", "str", "image"

# slug -> (required fields, {field: (kind, lo, hi) | (enum list)}, accepts unknown fields, cost)
CONTRACT = {
    "sdxl1.0-txt2img": ({"prompt"}, {
        "samples": (INT, 1, 4), "guidance_scale": (NUM, 1, 25), "img_width": (INT, 512, 2048),
        "img_height": (INT, 512, 2048), "high_noise_fraction": (NUM, 0, 1), "num_inference_steps": (INT, 1, 100),
        "seed": (INT, -1, 999999999999999), "strength": (NUM, 0, 1), "refiner": (BOOL,), "base64": (BOOL,),
        "prompt": (STR,), "negative_prompt": (STR,), "style": (STR,), "scheduler": (STR,)}, False, 0.008),
    "sdxl-openpose": ({"image", "prompt"}, {
        "samples": (INT, 1, 4), "scheduler": SCHEDULERS, "num_inference_steps": (INT, 20, 100),
        "guidance_scale": (NUM, 1, 25), "controlnet_scale": (NUM, 0, 1), "seed": (INT, -1, 999999999999999),
        "base64": (BOOL,), "image": (IMG,), "prompt": (STR,), "negative_prompt": (STR,)}, False, 0.008),
    "sdxl-controlnet": ({"image", "prompt"}, {
        "samples": (INT, 1, 4), "scheduler": SCHEDULERS, "guidance_scale": (NUM, 1, 25),
        "cn_model": ["sdxl_canny", "sdxl_depth", "sdxl_scribble", "sdxl_softedge", "sdxl_openpose"],
        "controlnet_scale": (NUM, 0, 1), "seed": (INT, -1, 999999999999999), "num_inference_steps": (INT, 1, 100),
        "base64": (BOOL,), "image": (IMG,), "prompt": (STR,), "negative_prompt": (STR,)}, False, 0.012),
    # schema unpublished: accept unknown keys, insist only on what any pose model needs
    "ip-sdxl-openpose": ({"image", "prompt"}, {"image": (IMG,), "prompt": (STR,), "samples": (INT, 1, 4),
                                               "base64": (BOOL,)}, True, 0.01),
    "codeformer": ({"image"}, {"image": (IMG,), "scale": (INT, 1, 4), "fidelity": (NUM, 0, 1),
                               "bg": (BOOL,), "face": (BOOL,), "base64": (BOOL,)}, False, 0.002),
}


class FakeSegmind:
    def __init__(self, keys=("SG_0123456789abcdef",), credits=100.0, image_format="JPEG"):
        self.keys = set(keys)
        self.credits = {k: credits for k in keys}
        self.image_format = image_format
        self.latency = 0.0
        self.gate = None  # a threading.Event: when set here, requests wait until it is set
        self.rule = None  # rule(slug, body) -> HTTP status to fail this request with, or None
        self.retired = set()
        self.requests = []  # (slug, headers dict, parsed body or None)
        self._failures = []  # [status, times, headers]
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, status, times=1, headers=None, body=None, ctype="application/json"):
        with self._lock:
            self._failures.append([status, times, headers or {}, body, ctype])

    def _take_failure(self):
        with self._lock:
            if not self._failures:
                return None
            failure = self._failures[0]
            failure[1] -= 1
            if failure[1] <= 0:
                self._failures.pop(0)
            return failure

    # ------------------------------------------------------------------
    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status, body, ctype="application/json", headers=None):
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                elif isinstance(body, str):
                    body = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/get-user-credits"):
                    k = self.headers.get("x-api-key")
                    if k not in fake.keys:
                        return self._send(401, {"error": "Unauthorized. API key is invalid or may have expired"})
                    return self._send(200, {"credits": fake.credits[k], "free-credits": 0.0})
                self._send(405, "<html><body><h1>405 Method Not Allowed</h1></body></html>", "text/html")

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                slug = self.path.split("/v1/", 1)[-1].strip("/")
                ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
                body = None
                if ctype == "application/json":
                    try:
                        body = json.loads(raw or b"null")
                    except ValueError:
                        body = None
                fake.requests.append((slug, dict(self.headers), body))
                if fake.latency:
                    time.sleep(fake.latency)
                if fake.gate is not None:
                    fake.gate.wait()
                failure = fake._take_failure()
                if failure:
                    status, _, headers, fbody, fctype = failure
                    return self._send(status, fbody if fbody is not None else {"error": f"fake failure {status}"},
                                      fctype, headers)
                ruled = fake.rule(slug, body) if fake.rule else None
                if ruled:
                    return self._send(ruled, {"error": f"rule failure {ruled}"})
                k = self.headers.get("x-api-key")
                if not k:
                    return self._send(401, {"error": "Missing Authorization or x-api-key in header"})
                if k not in fake.keys:
                    return self._send(401, {"error": "Unauthorized. API key is invalid or may have expired"})
                if ctype not in ("application/json", "multipart/form-data"):
                    return self._send(406, {"error": "Invalid content type"})
                if slug in fake.retired:
                    return self._send(410, {"error": f"Model {slug} has been deprecated"})
                if slug not in CONTRACT:
                    return self._send(404, {"error": f"Model {slug} not found"})
                if not isinstance(body, dict):
                    return self._send(400, {"error": "Invalid JSON body"})
                required, fields, open_schema, cost = CONTRACT[slug]
                problem = validate(body, required, fields, open_schema)
                if problem:
                    return self._send(400, {"error": problem})
                if fake.credits[k] < cost:
                    return self._send(406, {"error": f"Insufficient credits: balance {fake.credits[k]:.4f}, "
                                                     f"cost {cost}"})
                try:
                    images = render(slug, body)
                except ValueError as exc:
                    return self._send(400, {"error": str(exc)})
                fake.credits[k] -= cost
                headers = {"x-remaining-credits": f"{fake.credits[k]:.4f}", "x-cost": str(cost),
                           "x-generation-time": "0.01", "x-request-id": hashlib.md5(raw).hexdigest(),
                           "x-seed-value": str(body.get("seed", -1))}
                encoded = [encode(img, fake.image_format) for img in images]
                if body.get("base64") is True:
                    payload = [base64.b64encode(e).decode() for e in encoded]
                    return self._send(200, {"image": payload[0] if len(payload) == 1 else payload,
                                            "status": "Success", "interTime": 0.01}, headers=headers)
                self._send(200, encoded[0], f"image/{fake.image_format.lower()}", headers)

        return Handler


def validate(body, required, fields, open_schema):
    for name in required:
        if body.get(name) in (None, ""):
            return f"Missing required field: {name}"
    for name, value in body.items():
        rule = fields.get(name)
        if rule is None:
            if open_schema:
                continue
            return f"Unknown field: {name}"
        if isinstance(rule, list):
            if value not in rule:
                return f"Invalid value for {name}: {value!r}"
            continue
        kind = rule[0]
        if kind == BOOL and not isinstance(value, bool):
            return f"Invalid type for {name}"
        if kind in (STR, IMG) and not isinstance(value, str):
            return f"Invalid type for {name}"
        if kind in (INT, NUM):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == INT and value != int(value)):
                return f"Invalid type for {name}"
            if not rule[1] <= value <= rule[2]:
                return f"{name} must be between {rule[1]} and {rule[2]}"
    return None


def decode_image(text):
    try:
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(text, validate=True))).convert("RGB"))
    except Exception:  # noqa: BLE001 - anything undecodable is the client's fault
        raise ValueError("image is not a base64-encoded image")


def render(slug, body):
    if slug == "sdxl1.0-txt2img":
        digest = hashlib.sha256(f"{body['prompt']}|{body.get('seed', -1)}".encode()).digest()
        w, h = body.get("img_width", 1024), body.get("img_height", 1024)
        one = np.broadcast_to(np.frombuffer(digest[:3], np.uint8), (h, w, 3)).copy()
        return [one] * body.get("samples", 1)
    source = decode_image(body["image"])
    if slug == "codeformer":
        s = int(body.get("scale", 1))
        return [source.repeat(s, 0).repeat(s, 1)]
    return [255 - source] * body.get("samples", 1)


def encode(pixels, fmt):
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()
