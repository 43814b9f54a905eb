"""Segmind serverless API client (v1, synchronous).

`run(endpoint, jobs)` sends one request per job, concurrently on a bounded
pool, and returns the images in job order as a ComfyUI IMAGE tensor. A single
failure fails the whole call, naming the job that failed. Everything a server
sends is bounded: the key goes only to the configured https:// host and never
follows a redirect (segmind/transport.py); each answer is capped in bytes
(MAX_BYTES) and must arrive within a total deadline (`read_timeout`); a decoded
image is capped in pixels relative to what was asked (PIXEL_SLACK); cost headers
that are not finite numbers are dropped. Cancel (ComfyUI's interrupt) closes the
connections in flight and ends the worker threads before it propagates.
"""
import base64
import io
import itertools
import json
import logging
import math
import os
import random
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import datetime, timezone

from ..host import cancel, images
from . import endpoints, key
from .transport import Call, TransportError, target

log = logging.getLogger("PoseForge")
DEFAULT_BASE = "https://api.segmind.com/v1"
COST_HEADERS = ("x-remaining-credits", "x-cost", "x-generation-time")
MAX_BYTES = 64 * 2 ** 20  # an answer's body; the largest real image (2048x2048 PNG) is ~12 MB
PIXEL_SLACK = 4  # a decoded image may hold this many times the pixels asked for (or MIN_PIXELS)...
MIN_PIXELS = 2048 * 2048  # ...where the output size is Segmind's (pose models: ~1024x1024)
EXCERPT = 300  # characters of a server's message quoted in an error


_RUNS = itertools.count()


def _join(prefix, deadline):
    """Wait (until `deadline`, time.monotonic) for the threads whose names start with `prefix`."""
    for thread in threading.enumerate():
        if thread.name.startswith(prefix):
            thread.join(max(0.0, deadline - time.monotonic()))


class SegmindError(RuntimeError):
    def __init__(self, message, status=None, retryable=False):
        super().__init__(key.redact(message))
        self.status = status
        self.retryable = retryable


class _Stop(Exception):
    """Internal: a worker noticed the call was stopped."""


def _env_float(name, default):
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


class Client:
    """Timeouts and retries are configurable here or by environment variables
    (POSEFORGE_SEGMIND_CONNECT_TIMEOUT; POSEFORGE_SEGMIND_READ_TIMEOUT, the total time
    an answer may take once connected, long because an idle model cold-starts)."""

    def __init__(self, base_url=None, api_key=None, connect_timeout=None, read_timeout=None,
                 retries=3, backoff=1.0, max_backoff=30.0, max_workers=4, base64_response=False,
                 max_bytes=MAX_BYTES):
        self.base_url = (base_url or os.environ.get("SEGMIND_API_BASE") or DEFAULT_BASE).rstrip("/")
        self._key = api_key
        self.connect_timeout = connect_timeout or _env_float("POSEFORGE_SEGMIND_CONNECT_TIMEOUT", 10)
        self.read_timeout = read_timeout or _env_float("POSEFORGE_SEGMIND_READ_TIMEOUT", 180)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_workers = max_workers
        self.base64_response = base64_response  # ask for {"image": <base64>} JSON instead of raw bytes
        self.max_bytes = max_bytes

    # -- public -------------------------------------------------------------
    def run(self, endpoint, jobs, on_wait=None):
        """Run `jobs` (a list of parameter dicts with OUR names; image values are
        IMAGE tensors [1,H,W,3] or [H,W,3]) on `endpoint`; `on_wait(elapsed s, done, total)` is
        called about four times a second while they run.
        Returns (IMAGE tensor [N,H,W,3], info dict of cost signals)."""
        prepared = [endpoints.build_body(endpoint, params) for params in jobs]  # validate all first
        try:
            base = target(self.base_url)
        except TransportError as exc:
            raise SegmindError(str(exc)) from None
        api_key = self._key or key.api_key()
        if not api_key:
            raise SegmindError(key.missing_message(), status=401)
        try:
            key.checked(api_key, None if self._key is None else "the key given to the client")
        except key.KeyFormatError as exc:
            raise SegmindError(str(exc), status=401) from None
        entry = endpoints.endpoint(endpoint)
        hint = None if entry.get("confirmed") else (
            f" Segmind has not published {endpoint}'s fields: PoseForge sends "
            f"{', '.join(spec.get('field', name) for name, spec in entry['params'].items())} as a guess. If "
            "Segmind names them otherwise, give the right names in a JSON file named by SEGMIND_ENDPOINTS_FILE "
            "(see the README, Segmind endpoints), or use backend 'local'.")
        requests = []
        for (slug, body, image_fields), params in zip(prepared, jobs):
            for field in image_fields:
                body[field] = encode_png(body[field])
            if self.base64_response:
                body["base64"] = True
            requests.append((slug, json.dumps(body).encode(), pixel_limit(params)))
        calls = [Call() for _ in requests]
        stop = threading.Event()
        name = f"PoseForge-segmind-{next(_RUNS)}"  # this run's workers, joined by name at the end
        pool = ThreadPoolExecutor(max_workers=min(self.max_workers, len(requests)) or 1, thread_name_prefix=name)
        futures = [pool.submit(self._request, base, slug, data, limit, api_key, call, stop, hint)
                   for (slug, data, limit), call in zip(requests, calls)]
        started, told = time.monotonic(), 0.0
        try:
            pending = set(futures)
            while pending:
                cancel.check_cancel()
                elapsed = time.monotonic() - started
                if on_wait is not None and elapsed - told >= 0.25:
                    told = elapsed
                    on_wait(elapsed, len(futures) - len(pending), len(futures))
                for call in calls:
                    if call.late():  # a dripping or silent server: wake its read so it fails now
                        call.abort()
                done, pending = wait(pending, timeout=0.05, return_when=FIRST_EXCEPTION)
                for future in done:
                    err = future.exception()
                    if err is not None:
                        index = futures.index(future)
                        prefix = f"Segmind request {index + 1} of {len(futures)} failed: " if len(futures) > 1 else ""
                        raise SegmindError(prefix + str(err), getattr(err, "status", None)) from err
        finally:
            stop.set()
            for call in calls:
                call.abort()
            pool.shutdown(wait=False, cancel_futures=True)
            _join(name + "_", time.monotonic() + 2.0)  # aborted reads return at once; none outlives the call
        results = [f.result() for f in futures]
        import torch

        out = [img for imgs, _ in results for img in imgs]
        info = _merge_info([i for _, i in results])
        log.info("PoseForge Segmind %s: %d image(s)%s", endpoint, len(out),
                 "".join(f", {k}={v}" for k, v in info.items()))
        return torch.cat(out, dim=0), info

    # -- one request, with retries -----------------------------------------
    def _request(self, base, slug, data, max_pixels, api_key, call, stop, hint=None):
        headers = {"x-api-key": api_key, "Content-Type": "application/json",
                   "Accept": "image/*, application/json", "User-Agent": "PoseForge/0.1",
                   "Content-Length": str(len(data))}
        attempt = 0
        while True:
            if stop.is_set():
                raise _Stop()
            wait_s = None
            try:
                status, answer, raw = call.post(base, slug, headers, data, self.connect_timeout, self.read_timeout,
                                                self.max_bytes)
            except TransportError as exc:
                if exc.kind == "aborted" or stop.is_set():
                    raise _Stop() from None
                if exc.kind == "connect":
                    err = SegmindError(f"Could not connect to {self.base_url} within {self.connect_timeout:g} s "
                                       f"({exc}; network down or proxy needed?).", retryable=True)
                elif exc.kind == "deadline":  # the request may be running (and billed) already: do not resend it
                    raise SegmindError(f"Segmind did not answer /{slug} within {self.read_timeout:g} s. A cold model "
                                       "can take minutes to start: raise POSEFORGE_SEGMIND_READ_TIMEOUT or retry "
                                       "later.") from None
                elif exc.kind == "size":
                    raise SegmindError(f"Segmind's answer to /{slug} was refused: {exc}.") from None
                else:
                    err = SegmindError(f"Could not reach {self.base_url}: {exc}.", retryable=True)
            else:
                if status == 200:
                    return decode_response(answer, raw, slug, max_pixels, api_key), _info(answer)
                err = _http_error(status, answer, raw, slug, api_key, hint)
                wait_s = _reset_wait(answer) if status == 429 else None
            if not err.retryable or attempt >= self.retries:
                raise err
            attempt += 1
            delay = wait_s if wait_s is not None else min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            delay = min(delay, self.max_backoff) * (1 + 0.1 * random.random())
            log.warning("PoseForge Segmind /%s: %s retry %d/%d in %.1f s", slug, err, attempt, self.retries, delay)
            call.deadline = None
            if stop.wait(delay):
                raise _Stop()


# -- what goes out ------------------------------------------------------------
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


def pixel_limit(params):
    """The most pixels an answer to `params` may decode to: PIXEL_SLACK times what was asked
    (the input image times scale^2, or width x height), at least MIN_PIXELS."""
    asked = [int(v.shape[-2]) * int(v.shape[-3]) for v in params.values() if hasattr(v, "shape")]
    if asked:
        wanted = max(asked) * int(params.get("scale") or 1) ** 2
    else:
        wanted = int(params.get("width") or 1024) * int(params.get("height") or 1024)
    return PIXEL_SLACK * max(wanted, MIN_PIXELS)


# -- what comes back ------------------------------------------------------------
def _excerpt(raw, api_key, limit=EXCERPT):
    """A server's words for an error message: the key redacted first, then cut short."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return key.redact(text, api_key)[:limit]


def _to_tensor(raw, slug, max_pixels, api_key):
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    too_big = (f"Segmind /{slug} answered with an image of more than the {max_pixels} pixels this request can "
               "produce: refused without decoding it.")
    try:
        img = Image.open(io.BytesIO(raw))
        if img.width * img.height > max_pixels:
            raise SegmindError(too_big.replace("an image of", f"a {img.width}x{img.height} image,"))
        img.load()
    except Image.DecompressionBombError:
        raise SegmindError(too_big) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise SegmindError(f"Segmind /{slug} answered 200 but the body is not an image "
                           f"({len(raw)} bytes: {_excerpt(raw[:400], api_key, 60)!r}).") from None
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr)[None]


def decode_response(headers, raw, slug, max_pixels, api_key):
    """Image bytes, or base64 JSON ({"image": str | [str, ...]}) -> list of [1,H,W,3] tensors."""
    ctype = headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype.startswith("image/") or not ctype.endswith("json"):
        return [_to_tensor(raw, slug, max_pixels, api_key)]
    try:
        payload = json.loads(raw)
    except ValueError:
        raise SegmindError(f"Segmind /{slug} answered 200 with invalid JSON.") from None
    found = payload.get("image", payload.get("images")) if isinstance(payload, dict) else None
    if isinstance(found, str):
        found = [found]
    if not found or not isinstance(found, list) or not all(isinstance(s, str) for s in found):
        names = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise SegmindError(f"Segmind /{slug} answered 200 without an image ({_excerpt(str(names), api_key)}).")
    out = []
    for text in found:
        try:
            data = base64.b64decode(text.split(",", 1)[-1])
        except ValueError:
            raise SegmindError(f"Segmind /{slug} answered 200 with an image that is not valid base64.") from None
        out.append(_to_tensor(data, slug, max_pixels, api_key))
    return out


def _message(raw, api_key):
    try:
        body = json.loads(raw)
        if isinstance(body, dict):
            return _excerpt(body.get("error") or body.get("message") or body.get("html-message") or body, api_key)
    except ValueError:
        pass
    text = _excerpt(raw, api_key).strip()
    return "(HTML error page)" if text.lower().startswith(("<!doctype", "<html")) else text


def _http_error(status, headers, raw, slug, api_key, hint=None):
    """The SegmindError of an HTTP status; `hint`: what to say when an endpoint whose fields are
    unconfirmed has a field rejected."""
    msg = _message(raw, api_key)
    if 300 <= status < 400:
        where = headers.get("location", "")
        import urllib.parse

        host = urllib.parse.urlsplit(where).hostname or "(no Location)"
        return SegmindError(f"Segmind's API answered /{slug} with a redirect (HTTP {status}) to {host}: PoseForge "
                            "never follows a redirect with your key. Check SEGMIND_API_BASE.", status)
    if status in (400, 422):
        return SegmindError(f"Segmind rejected a parameter for /{slug} (HTTP {status}): {msg}.{hint or ''}", status)
    if status == 401:
        return SegmindError(f"Segmind refused the API key (HTTP 401: missing, invalid or expired). {key.HOW_TO_SET}",
                            status)
    if status == 403:
        return SegmindError(f"Your Segmind account may not use /{slug} (HTTP 403): {msg}", status)
    if status == 404:
        return SegmindError(f"Segmind does not know the model /{slug} (HTTP 404): it may have been renamed. "
                            "Update its slug in a SEGMIND_ENDPOINTS_FILE override or use backend 'local'.", status)
    if status == 405:
        return SegmindError(f"Segmind refused the method for /{slug} (HTTP 405); check SEGMIND_API_BASE.", status)
    if status == 406:
        if "content" in msg.lower() and "type" in msg.lower():
            return SegmindError(f"Segmind refused the request's content type (HTTP 406): {msg}", status)
        return SegmindError(f"Not enough Segmind credits for /{slug} (HTTP 406): {msg}. Top up at "
                            "https://www.segmind.com or use backend 'local'.", status)
    if status == 410:
        return SegmindError(f"Segmind has retired the model /{slug} (HTTP 410, not billed). Use backend 'local', "
                            "or point the endpoint at its successor in a SEGMIND_ENDPOINTS_FILE override.", status)
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
    at = _number(value)
    if at is None:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        at = parsed.timestamp()
    return max(0.0, at - time.time())


def _number(value):
    """A finite float from a header value, else None (NaN and inf cannot reach /history: browsers cannot parse them)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _info(headers):
    return {h: n for h in COST_HEADERS if (n := _number(headers.get(h))) is not None}


def _merge_info(infos):
    """Sum costs and generation times; keep the lowest remaining balance."""
    merged = {}
    for info in infos:
        for name, number in info.items():
            if name == "x-remaining-credits":
                merged[name] = min(merged.get(name, number), number)
            else:
                merged[name] = round(merged.get(name, 0.0) + number, 6)
    return merged
