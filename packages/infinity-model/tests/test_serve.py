"""`infinity serve`: the real server (uvicorn on a free 127.0.0.1 port) with the shipped default model.

A gated pipeline holds the sampler inside its first scale until the test opens the gate, so what is queued,
merged, refused or cancelled is decided by the test, not by timing.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="needs the serve extra: infinity-model[serve]")
pytest.importorskip("uvicorn", reason="needs the serve extra: infinity-model[serve]")

from infinity_model.cli import load_pipeline, main, resolve_model
from infinity_model.pipeline import InfinityPipeline
from infinity_model.sampler import ScaleStep
from infinity_model.serve.background import serve_in_thread
from infinity_model.serve.cli import build_app
from infinity_model.serve.schema import ServeLimits

FAST = {"candidates": 1}  # one draw per image keeps the tests quick
# the default model folder's generation settings (GET /v1/model), which differ from the pipeline's keyword defaults
MODEL_SETTINGS: dict[str, Any] = {"pn": "0.016M", "cfg": 2.0, "tau": 0.5, "top_k": 0, "top_p": 0.0}
# Waits are on events; this bound only stops a hung test (a defect) and is never a timing: far above any
# duration on a busy machine.
HANG_GUARD_S = 600


def _args() -> argparse.Namespace:
    return argparse.Namespace(
        command="serve", model=None, vae=None, text_encoder=None, device="cpu", dtype="auto",
        model_preset=None, vae_preset=None, allow_download=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def loaded() -> tuple[InfinityPipeline, dict[str, Any]]:
    args = _args()
    settings = resolve_model(args)
    return load_pipeline(args), settings


class GatedPipe:
    """The real pipeline, but every sampler call waits inside its first scale until ``gate`` is set."""

    def __init__(self, pipe: InfinityPipeline) -> None:
        self._pipe = pipe
        self.gate = threading.Event()
        self.inside = threading.Event()
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def generate(
        self, prompts: Any, negative_prompt: Any = None, *, callback: Any = None, **kwargs: Any
    ) -> Any:
        self.calls.append(len(prompts))

        def held(step: ScaleStep) -> None:
            if step.k == 0:
                self.inside.set()
                assert self.gate.wait(HANG_GUARD_S), "the test never opened the gate"
            if callback is not None:
                callback(step)

        return self._pipe.generate(prompts, negative_prompt, callback=held, **kwargs)


def _server(loaded: tuple[Any, dict[str, Any]], pipe: Any = None, **limits: Any) -> Any:
    base_pipe, settings = loaded
    app = build_app(pipe or base_pipe, settings, ServeLimits(**limits), [], "default model")
    return serve_in_thread(app)


def _request(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            raw, status, headers = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as err:
        raw, status, headers = err.read(), err.code, dict(err.headers)
    ctype = headers.get("content-type", "")
    return status, json.loads(raw) if ctype.startswith("application/json") else raw, headers


def _health(base: str) -> dict[str, Any]:
    return _request(base, "GET", "/health")[1]


def _events(base: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The Server-Sent Events of POST /v1/images/stream, decoded."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    try:
        conn.request("POST", "/v1/images/stream", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("content-type", "").startswith("text/event-stream")
        for line in response:
            if line.startswith(b"data: "):
                yield json.loads(line[6:])
    finally:
        conn.close()


def _open_request(base: str, path: str, body: dict[str, Any]) -> http.client.HTTPConnection:
    """Send a request and leave its connection open (closing it later is the client going away)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    return conn


def _wait_for(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` a bounded number of times (the server's state changes on its own threads)."""
    for _ in range(2400):
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"the server never reached: {what}")


def _png(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


# ------------------------------------------------------------------------------------------ the API
def test_model_and_health_describe_the_loaded_default_model(loaded: Any) -> None:
    with _server(loaded) as base:
        status, model, _ = _request(base, "GET", "/v1/model")
        assert status == 200
        assert model["model"]["source"] == "default model"
        assert model["model"]["depth"] == 6 and model["vae"]["codebook_dim"] == 16
        assert model["pixel_budgets"][0] == "0.016M" and model["scales"]["0.016M"] == 5
        assert model["sizes"]["0.016M"]["1.0"] == [128, 128]
        assert model["defaults"] == {
            "pn": "0.016M", "ratio": 1.0, "cfg": 2.0, "tau": 0.5, "top_k": 0, "top_p": 0.0, "candidates": 8
        }  # fmt: skip
        assert model["limits"]["max_images"] == 16
        health = _health(base)
        assert health["status"] == "ok" and health["queued"] == 0 and health["batches"] == 0


def test_images_answer_pngs_whose_command_redraws_them(loaded: Any, tmp_path: Path) -> None:
    with _server(loaded) as base:
        status, body, _ = _request(
            base, "POST", "/v1/images", {"prompt": "a red circle", "seed": 7, "num_images": 2, **FAST}
        )
    assert status == 200, body
    images = body["images"]
    assert [image["seed"] for image in images] == [7, 8]
    assert [image["index"] for image in images] == [0, 1]
    for image in images:
        assert _png(image["png"]).shape == (128, 128, 3)
        settings = image["settings"]
        assert (
            settings["prompt"] == "a red circle"
            and settings["pn"] == "0.016M"
            and settings["candidates"] == 1
        )
        assert (settings["width"], settings["height"]) == (128, 128)
    # the reported command draws the second image again, pixel for pixel
    argv = shlex.split(images[1]["settings"]["command"])
    assert argv[:3] == ["infinity", "generate", "a red circle"] and "--seed" in argv
    out = tmp_path / "again.png"
    argv[argv.index("-o") + 1] = str(out)
    assert main([*argv[1:], "--device", "cpu"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out).convert("RGB")), _png(images[1]["png"]))


def test_stream_sends_a_preview_after_every_scale_then_the_image(loaded: Any) -> None:
    with _server(loaded) as base:
        events = list(_events(base, {"prompt": "a blue square", "seed": 1, "candidates": 2}))
    kinds = [e["type"] for e in events]
    assert kinds == [
        "queued",
        "started",
        "preview",
        "preview",
        "preview",
        "preview",
        "preview",
        "image",
        "done",
    ]
    previews = [e for e in events if e["type"] == "preview"]
    assert [(e["scale"], e["scales"]) for e in previews] == [(k, 5) for k in range(1, 6)]
    # two candidates side by side (2 px gap) while drawing; the kept one at the end
    assert all(_png(e["png"]).shape == (128, 258, 3) for e in previews)
    final = events[-2]
    assert _png(final["png"]).shape == (128, 128, 3) and final["seed"] == 1
    assert final["settings"]["command"].startswith("infinity generate 'a blue square'")
    # coarse to fine: the first preview is flatter than the last
    assert _png(previews[0]["png"]).std() < _png(previews[-1]["png"]).std()


BAD_REQUESTS: list[tuple[Any, int, str | None]] = [
    ({"prompt": "a cat", "pn": "2M"}, 422, "pn"),
    ({"prompt": "a cat", "ratio": 0}, 422, "ratio"),
    ({"prompt": "a cat", "ratio": -1.5}, 422, "ratio"),
    ({"prompt": "a cat", "ratio": 10**400}, 422, "ratio"),  # no float holds it
    ({"prompt": "a cat", "cfg": -1}, 422, "cfg"),
    ({"prompt": "a cat", "cfg": 1000}, 422, "cfg"),
    ({"prompt": "a cat", "cfg": [1, 2]}, 422, "cfg"),
    ({"prompt": "a cat", "cfg": 10**400}, 422, "cfg"),
    ({"prompt": "a cat", "tau": 0}, 422, "tau"),
    ({"prompt": "a cat", "top_p": 1.5}, 422, "top_p"),
    ({"prompt": "a cat", "top_k": -1}, 422, "top_k"),
    ({"prompt": ""}, 422, "prompt"),
    ({"prompt": "   "}, 422, "prompt"),
    ({"prompt": []}, 422, "prompt"),
    ({"prompt": "x" * 1001}, 422, "prompt"),
    ({"prompt": 5}, 422, "prompt"),
    ({"negative_prompt": "blur"}, 422, "prompt"),
    ({"prompt": "a cat", "num_images": 17}, 422, "num_images"),
    ({"prompt": ["a", "b", "c"], "num_images": 6}, 422, "num_images"),
    ({"prompt": "a cat", "candidates": 0}, 422, "candidates"),
    ({"prompt": "a cat", "seed": -1}, 422, "seed"),
    ({"prompt": "a cat", "seed": "zero"}, 422, "seed"),
    ({"prompt": "a cat", "model": "/etc/passwd"}, 422, "model"),
    ({"prompt": "a cat", "vae": "../../weights.pth"}, 422, "vae"),
    (b"{not json", 400, None),
    (b'{"prompt": "a cat", "cfg": NaN}', 400, None),
    (b"[1, 2]", 400, None),
    (b'{"prompt": "' + b"x" * 70000 + b'"}', 413, None),
]


def test_bad_requests_get_a_4xx_naming_the_field_and_the_server_keeps_serving(loaded: Any) -> None:
    with _server(loaded) as base:
        for body, status, field in BAD_REQUESTS:
            for path in ("/v1/images", "/v1/images/stream"):
                got, answer, _ = _request(base, "POST", path, body)
                assert (got, answer["error"]["field"]) == (status, field), (body, answer)
                assert answer["error"]["message"]
        assert _request(base, "GET", "/v1/images")[0] == 405
        assert _request(base, "GET", "/nowhere")[0] == 404
        assert _health(base)["batches"] == 0  # nothing reached the sampler
        status, body, _ = _request(base, "POST", "/v1/images", {"prompt": "a cat", **FAST})
        assert status == 200 and len(body["images"]) == 1


def test_page_and_its_files_are_served_and_no_path_leaves_the_static_folder(loaded: Any) -> None:
    with _server(loaded) as base:
        status, page, headers = _request(base, "GET", "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b'id="prompt"' in page and b"/static/app.js" in page
        for name in ("app.js", "style.css"):
            assert _request(base, "GET", f"/static/{name}")[0] == 200
        assert _request(base, "GET", "/static/../app.py")[0] == 404
        assert _request(base, "GET", "/static/%2e%2e/app.py")[0] == 404


# ---------------------------------------------------------------------------------- concurrency
def test_queued_requests_with_equal_settings_share_one_sampler_call(loaded: Any) -> None:
    gated = GatedPipe(loaded[0])
    with _server(loaded, gated) as base, ThreadPoolExecutor(5) as pool:
        first = pool.submit(_request, base, "POST", "/v1/images", {"prompt": "a red circle", **FAST})
        assert gated.inside.wait(HANG_GUARD_S)
        same = [
            pool.submit(_request, base, "POST", "/v1/images", {"prompt": p, "seed": s, **FAST})
            for p, s in (("a blue square", 1), ("a green triangle", 2), ("two red circles", 3))
        ]
        _wait_for(lambda: _health(base)["queued"] == 3, "three requests queued")
        other = pool.submit(_request, base, "POST", "/v1/images", {"prompt": "a cat", "cfg": 3.0, **FAST})
        _wait_for(lambda: _health(base)["queued"] == 4, "four requests queued")
        gated.gate.set()
        answers = [f.result() for f in [first, *same, other]]
    assert [status for status, _, _ in answers] == [200] * 5
    assert gated.calls == [1, 3, 1]  # the three equal requests in one call; other settings alone
    for (_, body, _), seed in zip(answers[1:4], (1, 2, 3), strict=True):
        assert [image["seed"] for image in body["images"]] == [seed]
    solo = loaded[0].generate(
        ["a green triangle"], schedule=loaded[0].schedule(1.0, "0.016M"), sampler=_sampler(), seed=2
    )
    np.testing.assert_array_equal(_png(answers[2][1]["images"][0]["png"]), solo.images[0].numpy())


def _sampler() -> Any:
    from infinity_model.sampler import SamplerConfig

    return SamplerConfig(cfg=2.0, tau=0.5, top_k=0, top_p=0.0, candidates=1)


def test_batch_size_one_turns_micro_batching_off(loaded: Any) -> None:
    gated = GatedPipe(loaded[0])
    with _server(loaded, gated, batch_size=1) as base, ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(_request, base, "POST", "/v1/images", {"prompt": "a cat", **FAST})]
        assert gated.inside.wait(HANG_GUARD_S)
        futures += [
            pool.submit(_request, base, "POST", "/v1/images", {"prompt": "a dog", **FAST}) for _ in range(2)
        ]
        _wait_for(lambda: _health(base)["queued"] == 2, "two requests queued")
        gated.gate.set()
        assert [f.result()[0] for f in futures] == [200] * 3
    assert gated.calls == [1, 1, 1]


def test_a_full_queue_answers_503_with_retry_after(loaded: Any) -> None:
    gated = GatedPipe(loaded[0])
    with _server(loaded, gated, max_queue=1) as base, ThreadPoolExecutor(2) as pool:
        running = pool.submit(_request, base, "POST", "/v1/images", {"prompt": "a cat", **FAST})
        assert gated.inside.wait(HANG_GUARD_S)
        waiting = pool.submit(_request, base, "POST", "/v1/images", {"prompt": "a dog", **FAST})
        _wait_for(lambda: _health(base)["queued"] == 1, "one request queued")
        for path in ("/v1/images", "/v1/images/stream"):
            status, body, headers = _request(base, "POST", path, {"prompt": "a bird", **FAST})
            assert status == 503 and "queue is full" in body["error"]["message"]
            assert int(headers["retry-after"]) >= 1
        gated.gate.set()
        assert running.result()[0] == 200 and waiting.result()[0] == 200
        assert _request(base, "POST", "/v1/images", {"prompt": "a bird", **FAST})[0] == 200


def test_a_client_that_goes_away_while_queued_is_dropped_from_the_queue(loaded: Any) -> None:
    gated = GatedPipe(loaded[0])
    with _server(loaded, gated) as base:
        holder = _open_request(base, "/v1/images/stream", {"prompt": "a cat", **FAST})
        assert gated.inside.wait(HANG_GUARD_S)
        leaving = _open_request(base, "/v1/images", {"prompt": "a dog", "cfg": 3.0, **FAST})
        _wait_for(lambda: _health(base)["queued"] == 1, "one request queued")
        leaving.close()
        _wait_for(lambda: _health(base)["queued"] == 0, "the queued request dropped")
        _wait_for(lambda: _health(base)["open_requests"] == 1, "its handler returned")
        assert _health(base)["cancelled_requests"] == 1
        gated.gate.set()
        response = holder.getresponse()
        assert b'"type": "done"' in response.read()
        holder.close()
        assert gated.calls == [1]  # the dropped request never reached the sampler
        assert _health(base)["images"] == 1


@pytest.mark.parametrize("path", ["/v1/images", "/v1/images/stream"])
def test_a_client_that_goes_away_stops_its_running_batch(loaded: Any, path: str) -> None:
    gated = GatedPipe(loaded[0])
    with _server(loaded, gated) as base:
        leaving = _open_request(base, path, {"prompt": "a cat", "num_images": 4, **FAST})
        assert gated.inside.wait(HANG_GUARD_S)
        leaving.close()
        _wait_for(lambda: _health(base)["cancelled_requests"] == 1, "the request cancelled")
        _wait_for(lambda: _health(base)["open_requests"] == 0, "its handler returned")
        gated.gate.set()
        _wait_for(lambda: _health(base)["aborted_batches"] == 1, "the batch aborted")
        # the sampler thread counts the abort, then leaves the batch (running -> 0) a moment later
        _wait_for(lambda: _health(base)["running"] == 0, "the sampler thread left the batch")
        health = _health(base)
        assert health["images"] == 0 and health["aborted_batches"] == 1 and health["open_requests"] == 0
        status, body, _ = _request(base, "POST", "/v1/images", {"prompt": "a dog", **FAST})
        assert status == 200 and len(body["images"]) == 1


# ------------------------------------------------------------------------------------------ the CLI
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_infinity_serve_command_serves_the_default_model(tmp_path: Path) -> None:
    port = _free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "infinity_model.cli", "serve", "--port", str(port), "--device", "cpu"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return _health(base)["status"] == "ok"
            except OSError:
                return False

        _wait_for(up, "infinity serve answering /health")
        status, body, _ = _request(base, "POST", "/v1/images", {"prompt": "a red circle", "seed": 0, **FAST})
        assert status == 200 and _png(body["images"][0]["png"]).shape == (128, 128, 3)
        assert "--model" not in body["images"][0]["settings"]["command"]  # the default model needs no paths
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        log.close()


# ------------------------------------------------------------------------------------------ editing
def _source_image() -> Image.Image:
    """A 160 x 120 real-looking source: a red disc left, a blue square right, on white."""
    from PIL import ImageDraw

    image = Image.new("RGB", (160, 120), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((15, 30, 75, 90), fill=(220, 30, 30))
    draw.rectangle((95, 35, 145, 85), fill=(30, 60, 220))
    return image


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _mask(size: tuple[int, int], box: tuple[int, int, int, int] | None) -> Image.Image:
    """White (regenerate) inside ``box``; None: all white."""
    mask = Image.new("L", size, 0 if box is not None else 255)
    if box is not None:
        mask.paste(255, box)
    return mask


def test_edit_with_an_empty_mask_answers_the_reconstruction_and_a_full_mask_plain_generation(
    loaded: Any,
) -> None:
    pipe = loaded[0]
    source = _source_image()
    empty = _mask(source.size, (0, 0, 0, 0))
    with _server(loaded) as base:
        body = {"prompt": "a red circle", "image": _b64(source), "mask": _b64(empty), "seed": 4, **FAST}
        status, answer, _ = _request(base, "POST", "/v1/images/edits", body)
        assert status == 200, answer
        assert any("reconstruction" in notice for notice in answer["notices"])
        expected = pipe.edit(source, empty, "a red circle", **MODEL_SETTINGS, seed=4, **FAST)[0]
        np.testing.assert_array_equal(_png(answer["images"][0]["png"]), np.asarray(expected))
        # the source is 4:3 landscape: its own ratio picks the 3:4 (h:w) template, not the model's 1:1
        settings = answer["images"][0]["settings"]
        assert (settings["width"], settings["height"]) != (128, 128)
        assert settings["edit"] == {"mode": "inpaint", "keep_scales": None, "dilate": 0}
        argv = shlex.split(settings["command"])
        assert argv[:4] == ["infinity", "edit", "source.png", "a red circle"] and "--mask" in argv

        full = {**body, "mask": _b64(_mask(source.size, None)), "seed": 9}
        status, edited, _ = _request(base, "POST", "/v1/images/edits", full)
        assert status == 200, edited
        plain = {"prompt": "a red circle", "ratio": settings["ratio"], "seed": 9, **FAST}
        status, drawn, _ = _request(base, "POST", "/v1/images", plain)
        assert status == 200, drawn
        np.testing.assert_array_equal(_png(edited["images"][0]["png"]), _png(drawn["images"][0]["png"]))


def test_edit_stream_previews_every_scale_and_matches_the_pipeline_for_all_three_modes(loaded: Any) -> None:
    pipe = loaded[0]
    source = _source_image()
    # a mask of another size is resized to the source, with a notice
    small_mask = _mask((80, 60), (45, 15, 75, 45))
    cases = [
        (
            {"mask": _b64(small_mask), "dilate": 1},
            dict(mask=small_mask, dilate=1),
            "inpaint",
        ),
        ({"outpaint": 0.5}, None, "outpaint"),
        ({"keep_scales": 2}, dict(mask=None, keep_scales=2), "variation"),
    ]
    with _server(loaded) as base:
        for fields, edit_args, mode in cases:
            body = {"prompt": "a green triangle", "image": _b64(source), "seed": 2, **FAST, **fields}
            events = list(_edit_events(base, body))
            kinds = [e["type"] for e in events]
            assert kinds == ["queued", "started"] + ["preview"] * 5 + ["image", "done"], (mode, kinds)
            assert events[0]["settings"]["edit"]["mode"] == mode
            if mode == "inpaint":
                assert any("resized" in notice for notice in events[0]["notices"])
            got = _png(events[-2]["png"])
            if edit_args is None:
                expected = pipe.outpaint(
                    source, "a green triangle", ratio=0.5, **MODEL_SETTINGS, seed=2, **FAST
                )[0]
                assert got.shape[0] < got.shape[1]  # a 1:2 (h:w) canvas
            else:
                expected = pipe.edit(
                    source, prompts="a green triangle", **MODEL_SETTINGS, seed=2, **edit_args, **FAST
                )[0]
            np.testing.assert_array_equal(got, np.asarray(expected), err_msg=mode)


def _edit_events(base: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    try:
        conn.request(
            "POST", "/v1/images/edits/stream", json.dumps(body), {"Content-Type": "application/json"}
        )
        response = conn.getresponse()
        assert response.status == 200, response.read()
        for line in response:
            if line.startswith(b"data: "):
                yield json.loads(line[6:])
    finally:
        conn.close()


def test_bad_edit_requests_get_a_4xx_naming_the_field(loaded: Any) -> None:
    source = _b64(_source_image())
    mask = _b64(_mask((160, 120), (10, 10, 50, 50)))
    huge = _b64(Image.new("RGB", (300, 300)))
    bad: list[tuple[Any, int, str | None]] = [
        ({"prompt": "a cat", "mask": mask}, 422, "image"),
        ({"prompt": "a cat", "image": "not base64!", "mask": mask}, 422, "image"),
        ({"prompt": "a cat", "image": base64.b64encode(b"plain text").decode(), "mask": mask}, 422, "image"),
        ({"prompt": "a cat", "image": source, "mask": "@@"}, 422, "mask"),
        ({"prompt": "a cat", "image": source}, 422, "mask"),  # nothing to do
        ({"prompt": "a cat", "image": source, "mask": mask, "outpaint": 2.0}, 422, "outpaint"),
        ({"prompt": "a cat", "image": source, "outpaint": 2.0, "ratio": 1.0}, 422, "ratio"),
        ({"prompt": "a cat", "image": source, "outpaint": 2.0, "keep_scales": 1}, 422, "keep_scales"),
        ({"prompt": "a cat", "image": source, "outpaint": -1}, 422, "outpaint"),
        ({"prompt": "a cat", "image": source, "keep_scales": 6}, 422, "keep_scales"),
        ({"prompt": "a cat", "image": source, "mask": mask, "dilate": -1}, 422, "dilate"),
        ({"prompt": "a cat", "image": source, "mask": mask, "cfg": -1}, 422, "cfg"),
        ({"prompt": "a cat", "image": source, "mask": mask, "colour": "red"}, 422, "colour"),
        ({"prompt": "a cat", "image": huge, "mask": mask}, 413, "image"),
        (b'{"prompt": "a cat", "image": "' + b"A" * 70000 + b'"}', 413, None),
    ]
    with _server(loaded, max_source_pixels=200 * 200, max_edit_body_bytes=65536) as base:
        for body, status, field in bad:
            for path in ("/v1/images/edits", "/v1/images/edits/stream"):
                got, answer, _ = _request(base, "POST", path, body)
                assert (got, answer["error"]["field"]) == (status, field), (
                    body if len(str(body)) < 200 else "",
                    answer,
                )
                assert answer["error"]["message"]
        assert _health(base)["batches"] == 0  # nothing reached the sampler
        data_url = "data:image/png;base64," + source
        body = {"prompt": "a cat", "image": data_url, "keep_scales": 5, **FAST}
        status, answer, _ = _request(base, "POST", "/v1/images/edits", body)
        assert status == 200 and len(answer["images"]) == 1


# ------------------------------------------------------------------------------------- the page
CHROMIUM = shutil.which("chromium")  # Debian's package puts it on PATH


class HeldAfterPreview(GatedPipe):
    """Holds every sampler call right after the preview of scale ``k = 1`` went out, until ``gate`` is set."""

    def generate(
        self, prompts: Any, negative_prompt: Any = None, *, callback: Any = None, **kwargs: Any
    ) -> Any:
        self.calls.append(len(prompts))

        def held(step: ScaleStep) -> None:
            if callback is not None:
                callback(step)
            if step.k == 1:
                self.inside.set()
                assert self.gate.wait(HANG_GUARD_S), "the test never opened the gate"

        return self._pipe.generate(prompts, negative_prompt, callback=held, **kwargs)


@pytest.mark.browser
@pytest.mark.slow
def test_page_in_chromium_shows_previews_then_the_final_images_and_cancels(
    loaded: Any, tmp_path: Path
) -> None:
    """Debian's chromium driven by Playwright: type, Generate, previews, final PNGs, settings, Cancel.

    ``INFINITY_SERVE_SCREENSHOT=packages/infinity-model/docs/serve.png`` also writes the README's screenshot.
    """
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (root dev group)")
    held = HeldAfterPreview(loaded[0])
    with _server(loaded, held) as base, sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(HANG_GUARD_S * 1000)  # Playwright's own default is 30 s
            page.goto(base)
            page.wait_for_selector("#pn option[value='0.016M']", state="attached")
            assert page.input_value("#candidates") == "8" and page.input_value("#cfg") == "2"
            page.fill("#prompt", "a photo of a red circle above a blue square")
            page.fill("#seed", "3")
            page.fill("#num_images", "4")
            page.click("#generate")
            # the sampler is held after scale 2: every card shows a preview and none is final yet
            assert held.inside.wait(HANG_GUARD_S)
            page.wait_for_function(
                'document.querySelectorAll(\'.card[data-state="preview"][data-previews="2"]\').length === 4'
            )
            assert page.locator(".card[data-state='final']").count() == 0
            assert page.get_attribute(".card .frame img", "src").startswith("data:image/png;base64,")
            assert page.is_enabled("#cancel") and not page.is_enabled("#generate")
            page.screenshot(path=str(tmp_path / "preview.png"))
            held.gate.set()
            page.wait_for_function("document.querySelectorAll('.card[data-state=\"final\"]').length === 4")
            cards = page.locator(".card")
            for i in range(4):
                card = cards.nth(i)
                assert card.get_attribute("data-previews") == "5"
                assert card.locator(".strip img").count() == 5
                assert card.locator(".download").get_attribute("download") == f"infinity-{3 + i}.png"
                assert card.locator(".download").get_attribute("href").startswith("data:image/png;base64,")
                command = card.locator(".command code").text_content()
                assert command.startswith("infinity generate 'a photo of a red circle above a blue square'")
                assert f"--seed {3 + i}" in command
            assert page.text_content("#message").startswith("Done: 4 images")
            cards.nth(0).locator("summary").click()
            screenshot = os.environ.get("INFINITY_SERVE_SCREENSHOT")
            if screenshot:
                page.screenshot(path=screenshot)

            # a bad field is marked and explained; nothing reaches the sampler
            calls = len(held.calls)
            page.fill("#cfg", "-2")
            page.click("#generate")
            page.wait_for_selector("#cfg.invalid")
            assert "cfg must be in" in page.text_content("#message")
            assert len(held.calls) == calls
            page.fill("#cfg", "2")

            # Cancel: the fetch is aborted, the server drops the batch
            held.gate.clear()
            held.inside.clear()
            page.fill("#num_images", "2")
            page.click("#generate")
            assert held.inside.wait(HANG_GUARD_S)
            page.click("#cancel")
            page.wait_for_function(
                "document.querySelectorAll('.card[data-state=\"cancelled\"]').length === 2"
            )
            _wait_for(lambda: _health(base)["cancelled_requests"] == 1, "the server saw the cancel")
            held.gate.set()
            _wait_for(lambda: _health(base)["aborted_batches"] == 1, "the batch aborted")
            assert page.text_content("#message") == "Cancelled."
            assert page.is_enabled("#generate")
        finally:
            held.gate.set()
            browser.close()


@pytest.mark.browser
@pytest.mark.slow
def test_edit_tab_in_chromium_uploads_an_image_paints_a_mask_and_shows_the_edit(
    loaded: Any, tmp_path: Path
) -> None:
    """The Edit tab: choose a file, paint one stroke on the mask canvas, Edit; the request carries the image
    and a white-on-black mask of the source's size white only along the stroke; previews, then the edit.

    ``INFINITY_SERVE_EDIT_SCREENSHOT=packages/infinity-model/docs/serve-edit.png`` writes the README's picture.
    """
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (root dev group)")
    source_path = tmp_path / "source.png"
    _source_image().resize((320, 240), Image.Resampling.LANCZOS).save(source_path)
    sent: list[dict[str, Any]] = []
    with _server(loaded) as base, sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(HANG_GUARD_S * 1000)
            page.on(
                "request",
                lambda r: (
                    sent.append(json.loads(r.post_data or "{}")) if "/v1/images/edits" in r.url else None
                ),
            )
            page.goto(base)
            page.wait_for_selector("#pn option[value='0.016M']", state="attached")
            assert not page.is_visible("#edit-panel")
            page.click("#tab-edit")
            assert page.is_visible("#edit-panel") and not page.is_visible("#ratio")
            assert page.text_content("#generate") == "Edit"
            # Edit with no source is refused on the page, nothing is sent
            page.click("#generate")
            page.wait_for_selector("#source.invalid")
            assert sent == []
            page.set_input_files("#source", str(source_path))
            page.wait_for_selector("#canvas-wrap[data-loaded='1']")
            assert page.evaluate("[$('mask-canvas').width, $('mask-canvas').height]") == [320, 240]
            assert "192 × 144" in page.text_content("#size")  # the 3:4 template nearest to the 4:3 source
            # one horizontal stroke across the disc on the left, in screen coordinates
            box = page.locator("#mask-canvas").bounding_box()
            assert box is not None
            y = box["y"] + box["height"] * 0.5
            page.mouse.move(box["x"] + box["width"] * 0.15, y)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.3, y, steps=8)
            page.mouse.move(box["x"] + box["width"] * 0.4, y, steps=4)
            page.mouse.up()
            page.fill("#prompt", "a green triangle and a blue square")
            page.fill("#seed", "5")
            page.fill("#num_images", "2")
            page.fill("#candidates", "1")
            page.click("#generate")
            page.wait_for_function("document.querySelectorAll('.card[data-state=\"final\"]').length === 2")
            assert page.text_content("#message").startswith("Done: 2 images")
            cards = page.locator(".card")
            for i in range(2):
                assert cards.nth(i).get_attribute("data-previews") == "5"
                command = cards.nth(i).locator(".command code").text_content() or ""
                assert command.startswith("infinity edit source.png 'a green triangle and a blue square'")
                assert "--mask mask.png" in command and f"--seed {5 + i}" in command
            image = _png(cards.nth(0).locator(".frame img").get_attribute("src").split(",", 1)[1])
            assert image.shape == (144, 192, 3)
            screenshot = os.environ.get("INFINITY_SERVE_EDIT_SCREENSHOT")
            if screenshot:
                page.screenshot(path=screenshot, full_page=True)
        finally:
            browser.close()
    assert len(sent) == 1
    body = sent[0]
    assert body["image"].startswith("data:image/png;base64,") and "ratio" not in body
    mask = _png(body["mask"].split(",", 1)[1])
    assert mask.shape == (240, 320, 3)
    painted = mask[..., 0] == 255
    assert set(np.unique(mask).tolist()) == {0, 255}
    rows, cols = np.nonzero(painted)
    # white only around the stroke: the middle rows, from about 15% to 40% of the width (plus the brush)
    assert 0 < painted.mean() < 0.25
    assert abs(rows.mean() - 120) < 5 and cols.min() > 0.15 * 320 - 40 and cols.max() < 0.4 * 320 + 40
