"""Segmind serverless API client (v1, synchronous).

`run(endpoint, jobs)` sends one request per job, concurrently on a bounded
pool, and returns the images in job order as a ComfyUI IMAGE tensor. A single
failure fails the whole call, naming the job that failed; cancel (ComfyUI's
interrupt) is honoured between and during requests: the node returns at once
and requests still in flight are abandoned.
"""
import base64
import io
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import datetime, timezone

from ..host import cancel, images
from . import endpoints, key

log = logging.getLogger("PoseForge")
DEFAULT_BASE = "https://api.segmind.com/v1"
COST_HEADERS = ("x-remaining-credits", "x-cost", "x-generation-time")


class SegmindError(RuntimeError):
    def __init__(self, message, status=None, retryable=False):
        super().__init__(key.redact(message))
        self.status = status
        self.retryable = retryable


class _Stop(Exception):
    """Internal: a worker noticed the call was cancelled."""


def _env_float(name, default):
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


class Client:
    """Timeouts and retries are configurable here or by environment variables
    (POSEFORGE_SEGMIND_CONNECT_TIMEOUT, POSEFORGE_SEGMIND_READ_TIMEOUT); the read
    timeout is long because an idle model cold-starts on Segmind's side."""

    def __init__(self, base_url=None, api_key=None, connect_timeout=None, read_timeout=None,
                 retries=3, backoff=1.0, max_backoff=30.0, max_workers=4, base64_response=False):
        self.base_url = (base_url or os.environ.get("SEGMIND_API_BASE") or DEFAULT_BASE).rstrip("/")
        self._key = api_key
        self.connect_timeout = connect_timeout or _env_float("POSEFORGE_SEGMIND_CONNECT_TIMEOUT", 10)
        self.read_timeout = read_timeout or _env_float("POSEFORGE_SEGMIND_READ_TIMEOUT", 180)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_workers = max_workers
        self.base64_response = base64_response  # ask for {"image": <base64>} JSON instead of raw bytes

    # -- public -------------------------------------------------------------
    def run(self, endpoint, jobs):
        """Run `jobs` (a list of parameter dicts with OUR names; image values are
        IMAGE tensors [1,H,W,3] or [H,W,3]) on `endpoint`.
        Returns (IMAGE tensor [N,H,W,3], info dict of cost signals)."""
        prepared = [endpoints.build_body(endpoint, params) for params in jobs]  # validate all first
        api_key = self._key or key.api_key()
        if not api_key:
            raise SegmindError("No Segmind API key is set. " + key.HOW_TO_SET, status=401)
        for _, body, image_fields in prepared:
            for field in image_fields:
                body[field] = encode_png(body[field])
            if self.base64_response:
                body["base64"] = True
        stop = threading.Event()
        pool = ThreadPoolExecutor(max_workers=min(self.max_workers, len(prepared)) or 1,
                                  thread_name_prefix="PoseForge-segmind")
        futures = [pool.submit(self._request, slug, body, api_key, stop) for slug, body, _ in prepared]
        try:
            pending = set(futures)
            while pending:
                cancel.check_cancel()
                done, pending = wait(pending, timeout=0.05, return_when=FIRST_EXCEPTION)
                for future in done:
                    if future.exception() is not None:
                        index = futures.index(future)
                        err = future.exception()
                        prefix = f"Segmind request {index + 1} of {len(futures)} failed: " if len(futures) > 1 else ""
                        raise SegmindError(prefix + str(err), getattr(err, "status", None)) from err
        finally:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
        results = [f.result() for f in futures]
        import torch

        out = [img for imgs, _ in results for img in imgs]
        info = _merge_info([i for _, i in results])
        log.info("PoseForge Segmind %s: %d image(s)%s", endpoint, len(out),
                 "".join(f", {k}={v}" for k, v in info.items()))
        return torch.cat(out, dim=0), info

    # -- one request, with retries -----------------------------------------
    def _request(self, slug, body, api_key, stop):
        import requests

        url = f"{self.base_url}/{slug}"
        headers = {"x-api-key": api_key, "Content-Type": "application/json",
                   "Accept": "image/*, application/json", "User-Agent": "PoseForge/0.1"}
        data = json.dumps(body)
        attempt = 0
        while True:
            if stop.is_set():
                raise _Stop()
            try:
                resp = requests.post(url, data=data, headers=headers,
                                     timeout=(self.connect_timeout, self.read_timeout))
            except requests.ConnectTimeout:
                err = SegmindError(f"Could not connect to {self.base_url} within {self.connect_timeout:g} s "
                                   "(network down or proxy needed?).", retryable=True)
                wait_s = None
            except requests.ReadTimeout:
                # the request may be running (and billed) already: do not resend it
                raise SegmindError(f"Segmind did not answer /{slug} within {self.read_timeout:g} s. A cold model "
                                   "can take minutes to start: raise POSEFORGE_SEGMIND_READ_TIMEOUT or retry later.")
            except requests.ConnectionError as exc:
                err = SegmindError(f"Could not reach {self.base_url}: {type(exc).__name__}.", retryable=True)
                wait_s = None
            else:
                if resp.status_code == 200:
                    return decode_response(resp, slug), _info(resp.headers)
                err = _http_error(resp, slug)
                wait_s = _reset_wait(resp.headers) if resp.status_code == 429 else None
            if not err.retryable or attempt >= self.retries:
                raise err
            attempt += 1
            delay = wait_s if wait_s is not None else min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            delay = min(delay, self.max_backoff) * (1 + 0.1 * random.random())
            log.warning("PoseForge Segmind /%s: %s retry %d/%d in %.1f s", slug, err, attempt, self.retries, delay)
            if stop.wait(delay):
                raise _Stop()


# -- helpers ----------------------------------------------------------------
def encode_png(image):
    """One IMAGE ([1,H,W,C] or [H,W,C], 0..1) -> base64 PNG text (no data: prefix)."""
    from PIL import Image

    try:
        pixels = images.to_uint8(image)
    except images.ImageInputError as exc:
        raise endpoints.ParamError(str(exc))
    if len(pixels) != 1:
        raise endpoints.ParamError(f"one image per request, got a batch of {len(pixels)}")
    buf = io.BytesIO()
    Image.fromarray(pixels[0]).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _to_tensor(raw, slug):
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(raw))
        img.load()
    except (UnidentifiedImageError, OSError):
        raise SegmindError(f"Segmind /{slug} answered 200 but the body is not an image "
                           f"({len(raw)} bytes: {raw[:60]!r}).")
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr)[None]


def decode_response(resp, slug):
    """Image bytes, or base64 JSON ({"image": str | [str, ...]}) -> list of [1,H,W,3] tensors."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if ctype.startswith("image/") or not ctype.endswith("json"):
        return [_to_tensor(resp.content, slug)]
    try:
        payload = resp.json()
    except ValueError:
        raise SegmindError(f"Segmind /{slug} answered 200 with invalid JSON.")
    found = payload.get("image", payload.get("images")) if isinstance(payload, dict) else None
    if isinstance(found, str):
        found = [found]
    if not found or not all(isinstance(s, str) for s in found):
        raise SegmindError(f"Segmind /{slug} answered 200 without an image (keys: {sorted(payload)[:8]}).")
    out = []
    for text in found:
        try:
            out.append(_to_tensor(base64.b64decode(text.split(",", 1)[-1]), slug))
        except ValueError:
            raise SegmindError(f"Segmind /{slug} answered 200 with an image that is not valid base64.")
    return out


def _message(resp):
    try:
        body = resp.json()
        if isinstance(body, dict):
            return str(body.get("error") or body.get("message") or body.get("html-message") or body)
    except ValueError:
        pass
    text = resp.text.strip()
    return "(HTML error page)" if text.lower().startswith(("<!doctype", "<html")) else text[:300]


def _http_error(resp, slug):
    status, msg = resp.status_code, _message(resp)
    if status in (400, 422):
        return SegmindError(f"Segmind rejected a parameter for /{slug} (HTTP {status}): {msg}", status)
    if status == 401:
        return SegmindError(f"Segmind refused the API key (HTTP 401: missing, invalid or expired). {key.HOW_TO_SET}",
                            status)
    if status == 403:
        return SegmindError(f"Your Segmind account may not use /{slug} (HTTP 403): {msg}", status)
    if status == 404:
        return SegmindError(f"Segmind does not know the model /{slug} (HTTP 404): it may have been renamed. "
                            "Update its slug in POSEFORGE_SEGMIND_ENDPOINTS or use backend 'local'.", status)
    if status == 405:
        return SegmindError(f"Segmind refused the method for /{slug} (HTTP 405); check SEGMIND_API_BASE.", status)
    if status == 406:
        if "content" in msg.lower() and "type" in msg.lower():
            return SegmindError(f"Segmind refused the request's content type (HTTP 406): {msg}", status)
        return SegmindError(f"Not enough Segmind credits for /{slug} (HTTP 406): {msg}. Top up at "
                            "https://www.segmind.com or use backend 'local'.", status)
    if status == 410:
        return SegmindError(f"Segmind has retired the model /{slug} (HTTP 410, not billed). Use backend 'local', "
                            "or point the endpoint at its successor in POSEFORGE_SEGMIND_ENDPOINTS.", status)
    if status == 429:
        return SegmindError(f"Segmind rate limit reached (HTTP 429): {msg}", status, retryable=True)
    if status >= 500:
        return SegmindError(f"Segmind server error on /{slug} (HTTP {status}): {msg}", status, retryable=True)
    return SegmindError(f"Segmind /{slug} answered HTTP {status}: {msg}", status)


def _reset_wait(headers):
    """Seconds until `x-rate-limit-reset-at-utc` (ISO 8601 or epoch seconds), else None."""
    value = headers.get("x-rate-limit-reset-at-utc")
    if not value:
        return None
    try:
        at = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        at = parsed.timestamp()
    return max(0.0, at - time.time())


def _info(headers):
    return {h: headers[h] for h in COST_HEADERS if h in headers}


def _merge_info(infos):
    """Sum costs and generation times; keep the lowest remaining balance."""
    merged = {}
    for info in infos:
        for name, value in info.items():
            try:
                number = float(value)
            except ValueError:
                continue
            if name == "x-remaining-credits":
                merged[name] = min(merged.get(name, number), number)
            else:
                merged[name] = round(merged.get(name, 0.0) + number, 6)
    return merged
