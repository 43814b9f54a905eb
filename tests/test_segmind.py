"""The Segmind client against the fake server over real HTTP."""
import hashlib
import json
import logging
import threading

import numpy as np
import pytest
import torch

from conftest import pf
from fake_segmind import FakeSegmind

client_mod = pf("segmind.client")
endpoints = pf("segmind.endpoints")
cancel = pf("host.cancel")
KEY = "SG_0123456789abcdef"


@pytest.fixture
def fake(monkeypatch, api_key):
    server = FakeSegmind(keys=(api_key, "SG_broke0000000000"), image_format="PNG").start()
    server.credits["SG_broke0000000000"] = 0.0
    monkeypatch.setenv("SEGMIND_API_BASE", server.base_url)
    yield server
    if server.gate is not None:
        server.gate.set()
    server.stop()


def client(**kw):
    kw.setdefault("backoff", 0.01)
    return client_mod.Client(**kw)


def photo(h=64, w=48, seed=0):
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.integers(0, 256, (1, h, w, 3)).astype(np.float32) / 255)


def hashed_colour(prompt, seed):
    return np.frombuffer(hashlib.sha256(f"{prompt}|{seed}".encode()).digest()[:3], np.uint8) / 255


# -- happy paths -------------------------------------------------------------
def test_txt2img_raw_bytes_and_cost_headers(fake):
    images, info = client().run("sdxl1.0-txt2img", [{"prompt": "a dancer", "seed": 7, "width": 640,
                                                    "height": 512}])
    assert images.shape == (1, 512, 640, 3) and images.dtype == torch.float32
    assert np.allclose(images[0, 0, 0].numpy(), hashed_colour("a dancer", 7), atol=1 / 255)
    assert info["x-cost"] == 0.008 and "x-remaining-credits" in info and "x-generation-time" in info
    slug, headers, body = fake.requests[0]
    assert slug == "sdxl1.0-txt2img" and headers["x-api-key"] == KEY
    assert headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("endpoint,extra", [
    ("sdxl-openpose", {"controlnet_scale": 0.5, "scheduler": "UniPC"}),
    ("ip-sdxl-openpose", {"ip_image": "IMAGE2", "ip_adapter_scale": 0.6}),
])
def test_pose_endpoints_send_the_photo_intact(fake, endpoint, extra):
    src = photo()
    if extra.get("ip_image") == "IMAGE2":
        extra = dict(extra, ip_image=photo(seed=1))
    images, _ = client().run(endpoint, [dict({"image": src, "prompt": "pose", "seed": 3}, **extra)])
    assert torch.allclose(images, 1 - src, atol=1 / 255)
    body = fake.requests[0][2]
    assert not body["image"].startswith("data:")


def test_codeformer_scale_and_base64_json(fake):
    src = photo(20, 30)
    images, _ = client(base64_response=True).run("codeformer", [{"image": src, "scale": 2, "fidelity": 0.7,
                                                                  "bg": True, "face": False}])
    assert images.shape == (1, 40, 60, 3)
    assert torch.allclose(images[:, ::2, ::2], src, atol=1 / 255)
    assert fake.requests[0][2]["base64"] is True


def test_samples_run_concurrently_in_order(fake):
    fake.latency = 0.2
    jobs = [{"prompt": "p", "seed": s, "width": 512, "height": 512} for s in range(4)]
    images, info = client().run("sdxl1.0-txt2img", jobs)
    for i in range(4):
        assert np.allclose(images[i, 0, 0].numpy(), hashed_colour("p", i), atol=1 / 255)
    assert info["x-cost"] == pytest.approx(0.032)


# -- validation before any request --------------------------------------------
@pytest.mark.parametrize("params,match", [
    ({"prompt": "x", "guidance_scale": 30}, "guidance_scale=30"),
    ({"prompt": "x", "samples": 0}, "samples"),
    ({"prompt": "x", "bogus": 1}, "bogus"),
    ({"negative_prompt": "x"}, "needs prompt"),
    ({"prompt": 3}, "prompt must be text"),
    ({"prompt": "x", "width": 512.5}, "whole number"),
    ({"prompt": "x", "refiner": "yes"}, "true or false"),
])
def test_invalid_parameters_rejected_before_sending(fake, params, match):
    with pytest.raises(endpoints.ParamError, match=match):
        client().run("sdxl1.0-txt2img", [params])
    assert fake.requests == []


def test_bad_enum_and_batch_image_rejected_before_sending(fake):
    with pytest.raises(endpoints.ParamError, match="samples=5 is outside"):
        client().run("sdxl-openpose", [{"image": photo(), "prompt": "x", "samples": 5}])
    with pytest.raises(endpoints.ParamError, match="batch of 2"):
        client().run("codeformer", [{"image": torch.zeros(2, 8, 8, 3)}])
    assert fake.requests == []


def test_override_file_renames_slug_and_field(fake, tmp_path, monkeypatch):
    override = tmp_path / "endpoints.json"
    override.write_text(json.dumps({"ip-sdxl-openpose": {"slug": "ip-sdxl-openpose-v2",
                                                         "params": {"ip_image": {"field": "ip_adapter_image"}}}}))
    monkeypatch.setenv("SEGMIND_ENDPOINTS_FILE", str(override))
    slug, body, images = endpoints.build_body("ip-sdxl-openpose", {"image": 1, "ip_image": 2, "prompt": "x"})
    assert slug == "ip-sdxl-openpose-v2" and body["ip_adapter_image"] == 2 and "ip_adapter_image" in images
    with pytest.raises(client_mod.SegmindError, match="HTTP 404"):
        client().run("ip-sdxl-openpose", [{"image": photo(), "ip_image": photo(), "prompt": "x"}])


def test_the_older_override_variable_and_an_enum_of_the_users_own(fake, tmp_path, monkeypatch):
    override = tmp_path / "endpoints.json"
    override.write_text(json.dumps({"sdxl-openpose": {"params": {"style": {"type": "enum", "choices": ["a", "b"]}}}}))
    monkeypatch.setenv("POSEFORGE_SEGMIND_ENDPOINTS", str(override))
    with pytest.raises(endpoints.ParamError, match="style must be one of a, b"):
        client().run("sdxl-openpose", [{"image": photo(), "prompt": "x", "style": "c"}])
    assert fake.requests == []


def test_an_unconfirmed_endpoints_rejected_field_says_what_to_do(fake):
    fake.fail_next(422, body={"error": "Unknown field: ip_image"})
    with pytest.raises(client_mod.SegmindError) as err:
        client().run("ip-sdxl-openpose", [{"image": photo(), "ip_image": photo(), "prompt": "x"}])
    text = str(err.value)
    assert "Unknown field: ip_image" in text and "has not published ip-sdxl-openpose's fields" in text
    assert "ip_image" in text and "SEGMIND_ENDPOINTS_FILE" in text
    fake.fail_next(422, body={"error": "Validation Error"})
    with pytest.raises(client_mod.SegmindError) as err:
        client().run("sdxl-openpose", [{"image": photo(), "prompt": "x"}])
    assert "has not published" not in str(err.value)  # a confirmed endpoint: no guess to correct


# -- error classes -----------------------------------------------------------
def test_no_key_fails_before_sending(fake, monkeypatch):
    monkeypatch.delenv("SEGMIND_API_KEY")
    with pytest.raises(client_mod.SegmindError, match="SEGMIND_API_KEY"):
        client().run("sdxl1.0-txt2img", [{"prompt": "x"}])
    assert fake.requests == []


@pytest.mark.parametrize("setup,status,match", [
    (lambda f, mp: mp.setenv("SEGMIND_API_KEY", "SG_wrong000000000"), 401, "refused the API key"),
    (lambda f, mp: mp.setenv("SEGMIND_API_KEY", "SG_broke0000000000"), 406, "Not enough Segmind credits"),
    (lambda f, mp: f.retired.add("sdxl1.0-txt2img"), 410, "retired"),
    (lambda f, mp: f.fail_next(403), 403, "may not use"),
    (lambda f, mp: f.fail_next(400, body={"error": "prompt too long"}), 400, "prompt too long"),
    (lambda f, mp: f.fail_next(422, body={"error": "Validation Error"}), 422, "rejected a parameter"),
    (lambda f, mp: f.fail_next(406, body={"error": "Invalid content type"}), 406, "content type"),
    (lambda f, mp: f.fail_next(405, body="<html>405</html>", ctype="text/html"), 405, "method"),
])
def test_error_classes(fake, monkeypatch, setup, status, match):
    setup(fake, monkeypatch)
    with pytest.raises(client_mod.SegmindError, match=match) as err:
        client().run("sdxl1.0-txt2img", [{"prompt": "x"}])
    assert err.value.status == status
    assert len(fake.requests) == 1  # not retried


def test_5xx_retries_stop_at_their_bound(fake):
    fake.fail_next(503, times=10)
    with pytest.raises(client_mod.SegmindError, match="HTTP 503"):
        client(retries=2).run("sdxl1.0-txt2img", [{"prompt": "x"}])
    assert len(fake.requests) == 3


def test_5xx_then_success(fake):
    fake.fail_next(500, times=2)
    images, _ = client(retries=3).run("sdxl1.0-txt2img", [{"prompt": "x", "width": 512, "height": 512}])
    assert images.shape[0] == 1 and len(fake.requests) == 3


def test_429_waits_for_reset_header_then_succeeds(fake):
    from datetime import datetime, timedelta, timezone

    reset = (datetime.now(timezone.utc) + timedelta(seconds=0.2)).isoformat()
    fake.fail_next(429, headers={"x-rate-limit-reset-at-utc": reset})
    images, _ = client().run("sdxl1.0-txt2img", [{"prompt": "x", "width": 512, "height": 512}])
    assert images.shape[0] == 1 and len(fake.requests) == 2


def test_429_gives_up_after_bound(fake):
    fake.fail_next(429, times=5)
    with pytest.raises(client_mod.SegmindError, match="rate limit"):
        client(retries=1).run("sdxl1.0-txt2img", [{"prompt": "x"}])
    assert len(fake.requests) == 2


def test_read_timeout_fires_and_is_not_resent(fake):
    fake.latency = 1.0
    with pytest.raises(client_mod.SegmindError, match="did not answer"):
        client(read_timeout=0.2).run("sdxl1.0-txt2img", [{"prompt": "x"}])
    assert len(fake.requests) == 1


def test_connection_refused_is_bounded(fake, monkeypatch):
    fake.stop()
    with pytest.raises(client_mod.SegmindError, match="Could not"):
        client(retries=1, connect_timeout=0.5).run("sdxl1.0-txt2img", [{"prompt": "x"}])


@pytest.mark.parametrize("body,ctype", [({"status": "Success"}, "application/json"),
                                        ("not an image", "image/jpeg"), ("oops", "text/plain")])
def test_200_without_an_image(fake, body, ctype):
    fake.fail_next(200, body=body, ctype=ctype)
    with pytest.raises(client_mod.SegmindError, match="answered 200"):
        client().run("sdxl1.0-txt2img", [{"prompt": "x"}])


def test_one_failure_fails_the_batch_naming_its_index(fake):
    fake.rule = lambda slug, body: 403 if body.get("seed") == 2 else None
    jobs = [{"prompt": "p", "seed": s, "width": 512, "height": 512} for s in range(4)]
    with pytest.raises(client_mod.SegmindError, match="request 3 of 4"):
        client().run("sdxl1.0-txt2img", jobs)


def test_key_never_in_errors_or_logs(fake, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    fake.fail_next(401, body={"error": f"Unauthorized key {KEY}"})
    with pytest.raises(client_mod.SegmindError) as err:
        client().run("sdxl1.0-txt2img", [{"prompt": "x"}])
    fake.fail_next(503, body={"error": f"upstream said {KEY}"})
    client(retries=1).run("sdxl1.0-txt2img", [{"prompt": "x", "width": 512, "height": 512}])
    assert KEY not in str(err.value) and KEY not in repr(err.value.args)
    assert caplog.records and all(KEY not in r.getMessage() for r in caplog.records)


# -- cancel ------------------------------------------------------------------
def _cancel_when(fake, n):
    def watch():
        while len(fake.requests) < n:
            threading.Event().wait(0.01)
        cancel.request_cancel()
    threading.Thread(target=watch, daemon=True).start()


@pytest.mark.timeout(20)
def test_cancel_during_request_returns_without_waiting(fake):
    fake.gate = threading.Event()  # the server never answers until released
    _cancel_when(fake, 2)
    with pytest.raises(cancel.Cancelled):
        client().run("sdxl1.0-txt2img", [{"prompt": "p", "seed": s} for s in range(2)])


@pytest.mark.timeout(20)
def test_cancel_during_backoff(fake):
    fake.fail_next(503, times=10)
    _cancel_when(fake, 1)
    with pytest.raises(cancel.Cancelled):
        client(backoff=60, max_backoff=60).run("sdxl1.0-txt2img", [{"prompt": "x"}])


def test_a_broken_endpoint_file_or_key_file_is_named_with_what_to_do(tmp_path, monkeypatch, no_key):
    """A malformed SEGMIND_ENDPOINTS_FILE names the file and the variable (the price route says so
    without the path); a key file that is there but unreadable is not 'no key set'."""
    endpoints = pf("segmind.endpoints")
    routes = pf("nodes.routes")
    bad = tmp_path / "endpoints.json"
    for text, reason in (("{not json", "not valid JSON"), ('["a list"]', "must be a JSON object"),
                         ('{"codeformer": {"params": {"scale": 3}}}', "must be a JSON object")):
        bad.write_text(text)
        monkeypatch.setenv("SEGMIND_ENDPOINTS_FILE", str(bad))
        with pytest.raises(endpoints.EndpointsFileError, match=f"{bad} \\(named by SEGMIND_ENDPOINTS_FILE\\).*{reason}"):
            endpoints.table()
        answer = routes.prices()
        assert reason in answer["error"] and str(tmp_path) not in str(answer)
    monkeypatch.delenv("SEGMIND_ENDPOINTS_FILE")
    key = pf("segmind.key")
    folder = tmp_path / "a-folder-not-a-file"
    folder.mkdir()
    monkeypatch.setenv(key.FILE_ENV, str(folder))
    assert key.api_key() is None and "cannot be read (IsADirectoryError" in key.missing_message()
    with pytest.raises(pf("engines.backend").BackendUnavailable, match="cannot be read"):
        pf("engines.backend").choose("segmind", [])
    monkeypatch.setenv(key.FILE_ENV, str(tmp_path / "absent"))
    assert key.missing_message().startswith("No Segmind API key is set.")
