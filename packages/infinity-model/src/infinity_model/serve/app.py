"""The ASGI application of ``infinity serve`` (Starlette): the page, the JSON API and the preview stream.

Routes: ``GET /`` the page; ``GET /static/...`` its script and style; ``GET /health``; ``GET /v1/model``;
``POST /v1/images`` (JSON in, base64 PNGs out); ``POST /v1/images/stream`` (the same request, answered with
Server-Sent Events: ``started``, ``preview`` after every scale, ``image``, then ``done``);
``POST /v1/images/edits`` and ``/v1/images/edits/stream``, the same for editing a real image
(:mod:`infinity_model.serve.edits` lists the fields). A client that goes away cancels its request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..generation import GenerationConfig
from .edits import parse_edit_request
from .schema import ImageRequest, RequestError, ServeLimits, parse_request
from .worker import Batcher, Job, QueueFullError, SamplerPipeline

__all__ = ["STATIC_DIR", "create_app"]

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
_TERMINAL = ("done", "cancelled", "error")


def _error(
    status: int, field: str | None, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status, headers=headers)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


async def _read_json(request: Request, limit: int) -> Any:
    """The body as JSON; at most ``limit`` bytes are read (413 beyond), malformed JSON is a 400."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(None, f"the body has {declared} bytes; at most {limit} are accepted", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(None, f"the body is over {limit} bytes", status=413)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(None, f"the body is not valid JSON: {err}", status=400) from err


async def _watch_disconnect(request: Request, on_disconnect: Any) -> None:
    """Wait for the client to go away (the body was read already), then call ``on_disconnect``."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
            return


class _Server:
    """The routes' shared state: the pipeline's worker, the defaults, the limits and what is loaded."""

    def __init__(
        self,
        batcher: Batcher,
        defaults: GenerationConfig,
        limits: ServeLimits,
        pixel_budgets: Sequence[str],
        model_info: Mapping[str, Any],
    ) -> None:
        self.batcher = batcher
        self.defaults = defaults
        self.limits = limits
        self.pixel_budgets = tuple(pixel_budgets)
        self.model_info = dict(model_info)
        self.open_requests = 0  # submitted requests whose handler has not returned (event-loop thread only)

    async def _submit(self, request: Request, *, previews: bool, edit: bool) -> tuple[Job, ImageRequest]:
        if edit:
            body = await _read_json(request, self.limits.max_edit_body_bytes)
            # decoding and fitting the source is CPU work: keep it off the event loop
            parsed = await asyncio.to_thread(
                parse_edit_request, body, self.defaults, self.limits, self.pixel_budgets
            )
        else:
            body = await _read_json(request, self.limits.max_body_bytes)
            parsed = parse_request(body, self.defaults, self.limits, self.pixel_budgets)
        job = Job(parsed, asyncio.get_running_loop(), previews=previews)
        self.batcher.submit(job)
        self.open_requests += 1
        return job, parsed

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "queued": self.batcher.queued,
                "running": self.batcher.running,
                "open_requests": self.open_requests,
                **self.batcher.stats.to_dict(),
            }
        )

    async def model(self, request: Request) -> Response:
        return JSONResponse(
            {
                **self.model_info,
                "pixel_budgets": list(self.pixel_budgets),
                "defaults": self.defaults.to_dict(),
                "limits": self.limits.to_dict(),
            }
        )

    async def images(self, request: Request, *, edit: bool = False) -> Response:
        """Answer when every image is drawn: ``{"images": [{"index", "seed", "png", "settings"}, ...]}``;
        ``edit``: the body is an edit request (:mod:`infinity_model.serve.edits`)."""
        try:
            job, parsed = await self._submit(request, previews=False, edit=edit)
        except RequestError as err:
            return JSONResponse(err.to_dict(), status_code=err.status)
        except QueueFullError as err:
            return _error(503, None, str(err), {"Retry-After": str(err.retry_after)})
        watcher = asyncio.create_task(_watch_disconnect(request, lambda: self.batcher.cancel(job)))
        images: list[dict[str, Any]] = []
        event: dict[str, Any] = {"type": "queued"}
        try:
            while True:
                event = await job.events.get()
                if event["type"] == "image":
                    images.append({k: v for k, v in event.items() if k != "type"})
                elif event["type"] in _TERMINAL:
                    break
        finally:
            watcher.cancel()
            self.open_requests -= 1
            if event["type"] != "done":
                self.batcher.cancel(job)
        if event["type"] == "error":
            return _error(500, None, event["message"])
        if event["type"] == "cancelled":
            return _error(499, None, "the request was cancelled")
        images.sort(key=lambda image: image["index"])
        return JSONResponse({"images": images, "num_images": parsed.num_images, "notices": _notices(parsed)})

    async def stream(self, request: Request, *, edit: bool = False) -> Response:
        """The same request answered as Server-Sent Events (one JSON object per ``data:`` line)."""
        try:
            job, parsed = await self._submit(request, previews=True, edit=edit)
        except RequestError as err:
            return JSONResponse(err.to_dict(), status_code=err.status)
        except QueueFullError as err:
            return _error(503, None, str(err), {"Retry-After": str(err.retry_after)})

        async def events() -> AsyncIterator[str]:
            watcher = asyncio.create_task(_watch_disconnect(request, lambda: self.batcher.cancel(job)))
            finished = False
            try:
                first = {
                    "type": "queued",
                    "num_images": parsed.num_images,
                    "settings": parsed.settings(0),
                    "notices": _notices(parsed),
                }
                yield f"event: queued\ndata: {json.dumps(first)}\n\n"
                while True:
                    event = await job.events.get()
                    yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                    if event["type"] in _TERMINAL:
                        finished = event["type"] == "done"
                        return
            finally:
                watcher.cancel()
                self.open_requests -= 1
                if not finished:
                    self.batcher.cancel(job)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _notices(parsed: ImageRequest) -> list[str]:
    """What the server changed about the request's input (e.g. a resized mask); empty for most requests."""
    return [] if parsed.edit is None else list(parsed.edit.notices)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, None, str(exc.detail), exc.headers)


def create_app(
    pipe: SamplerPipeline,
    *,
    defaults: GenerationConfig,
    limits: ServeLimits,
    pixel_budgets: Sequence[str],
    model_info: Mapping[str, Any],
    model_args: Sequence[str] = (),
) -> Starlette:
    """The Starlette app around a loaded pipeline; its sampler thread runs while the app's lifespan does.

    ``model_args`` are the ``--model/--vae/--text-encoder`` options each image's ``infinity generate``
    command repeats (empty for the default model).
    """
    batcher = Batcher(pipe, limits, model_args)
    server = _Server(batcher, defaults, limits, pixel_budgets, model_info)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()

    routes = [
        Route("/", server.page, methods=["GET"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/v1/model", server.model, methods=["GET"]),
        Route("/v1/images", server.images, methods=["POST"]),
        Route("/v1/images/stream", server.stream, methods=["POST"]),
        Route("/v1/images/edits", functools.partial(server.images, edit=True), methods=["POST"]),
        Route("/v1/images/edits/stream", functools.partial(server.stream, edit=True), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.batcher = batcher
    return app
