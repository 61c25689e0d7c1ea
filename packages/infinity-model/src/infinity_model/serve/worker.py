"""The sampler worker of ``infinity serve``: one thread runs the pipeline, requests wait in a bounded queue.

Queued requests whose schedules and sampler settings are equal are merged into one sampler call (up to
``ServeLimits.batch_size`` images): the sampler already draws a batch of prompts, each with its own seed, and
an image does not depend on the batch it was drawn in. Requests are served oldest first; a request with more
images than a batch holds is drawn over several calls. Events (previews, images, errors) go back to the
request's asyncio loop through :class:`Job`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from bsq_tokenizer import BSQVAE, ScaleSchedule
from PIL import Image

from ..errors import InfinityModelError
from ..sampler import EditSource, SamplerConfig, SampleResult, ScaleStep, codes_to_uint8
from .schema import ImageRequest, ServeLimits, generate_command

__all__ = ["Batcher", "BatcherStats", "Job", "QueueFullError", "SamplerPipeline", "mosaic", "png_base64"]

logger = logging.getLogger(__name__)


class SamplerPipeline(Protocol):
    """What the worker needs of :class:`~infinity_model.pipeline.InfinityPipeline`."""

    vae: BSQVAE

    def generate(
        self,
        prompts: Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        schedule: ScaleSchedule,
        sampler: SamplerConfig,
        seed: int | Sequence[int] | None = 0,
        callback: Callable[[ScaleStep], None] | None = None,
        edit: EditSource | None = None,
    ) -> SampleResult: ...

    def edit_source(
        self,
        image: Image.Image,
        mask: Any,
        schedule: ScaleSchedule,
        batch: int = 1,
        *,
        dilate: int = 0,
        keep_scales: int | None = None,
    ) -> EditSource: ...

    def reconstruct(self, edit: EditSource, schedule: ScaleSchedule) -> Any: ...


class QueueFullError(InfinityModelError, RuntimeError):
    """The queue holds ``max_queue`` requests; ``retry_after`` is the server's guess in whole seconds."""

    def __init__(self, queued: int, retry_after: int) -> None:
        super().__init__(f"the queue is full ({queued} requests waiting); retry in {retry_after} s")
        self.retry_after = retry_after


class _Aborted(Exception):
    """Raised from the sampler's callback when every request of the running batch was cancelled."""


def png_base64(pixels: np.ndarray, compress_level: int = 6) -> str:
    """uint8 RGB ``(H, W, 3)`` as a base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=compress_level)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def mosaic(tiles: np.ndarray, gap: int = 2) -> np.ndarray:
    """Candidates ``(n, H, W, 3)`` side by side in ``floor(sqrt(n))`` rows (one tile: itself), white gaps."""
    n, h, w, _ = tiles.shape
    if n == 1:
        return tiles[0]
    rows = math.isqrt(n)
    cols = math.ceil(n / rows)
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tiles[i]
    return out


class Job:
    """One request on its way through the queue; its events reach the asyncio loop that submitted it.

    Events are dicts with a ``type``: ``started``, ``preview`` (index, scale, scales, png), ``image`` (index,
    png, settings), ``done``, ``cancelled`` or ``error`` (message). ``done``, ``cancelled`` and ``error`` end it.
    """

    def __init__(self, request: ImageRequest, loop: asyncio.AbstractEventLoop, *, previews: bool) -> None:
        self.request = request
        self.previews = previews
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._loop = loop
        self._cancelled = threading.Event()
        self.taken = 0  # images handed to the sampler (worker thread only)
        self.finished = 0  # images delivered (worker thread only)
        # an edit's batch-1 source, encoded by its first sampler call for the later ones (worker thread only)
        self.edit_source: EditSource | None = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def emit(self, event: dict[str, Any]) -> None:
        """Hand an event to the request's loop (thread-safe); dropped if that loop has closed."""
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:
            logger.debug("event %s dropped: the request's event loop is closed", event.get("type"))


@dataclass
class BatcherStats:
    """Counters shown by ``GET /health``; ``recent_batches`` holds the image count of the last 64 calls."""

    batches: int = 0
    images: int = 0
    cancelled_requests: int = 0
    aborted_batches: int = 0
    failed_batches: int = 0
    recent_batches: deque[int] = field(default_factory=lambda: deque(maxlen=64))

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "images": self.images,
            "cancelled_requests": self.cancelled_requests,
            "aborted_batches": self.aborted_batches,
            "failed_batches": self.failed_batches,
            "recent_batches": list(self.recent_batches),
        }


class Batcher:
    """A bounded FIFO of :class:`Job` served by one sampler thread that merges compatible requests."""

    def __init__(self, pipe: SamplerPipeline, limits: ServeLimits, model_args: Sequence[str] = ()) -> None:
        self.pipe = pipe
        self.limits = limits
        self.model_args = tuple(model_args)
        self.stats = BatcherStats()
        self._jobs: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._running: list[Job] = []
        self._seconds_per_batch = 1.0
        self._last_shared = False  # the last call drew more than one request (requests arrive together)

    # ------------------------------------------------------------------------------- event-loop side
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("Batcher.start() was called twice")
        self._thread = threading.Thread(target=self._serve, name="infinity-serve-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Let the running batch finish, answer the waiting requests with an error, end the thread."""
        with self._cond:
            self._stopping = True
            waiting = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
        for job in waiting:
            job.emit({"type": "error", "message": "the server is shutting down"})
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def queued(self) -> int:
        """Requests waiting (a request drawn over several calls counts until its last images start)."""
        with self._cond:
            return len(self._jobs)

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running)

    def submit(self, job: Job) -> None:
        """Queue ``job``; raises :class:`QueueFullError` when ``max_queue`` requests already wait."""
        with self._cond:
            if self._stopping:
                raise RuntimeError("the server is shutting down")
            if len(self._jobs) >= self.limits.max_queue:
                batches = math.ceil((len(self._jobs) + 1) / self.limits.batch_size)
                raise QueueFullError(len(self._jobs), max(1, math.ceil(batches * self._seconds_per_batch)))
            self._jobs.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """Cancel ``job``: dropped from the queue, or its images discarded (the batch stops if all are gone).

        The job gets its final ``cancelled`` event at once, so whoever waits on it is released.
        """
        with self._cond:
            if job.cancelled:
                return
            job.cancel()
            self.stats.cancelled_requests += 1
            if job in self._jobs:
                self._jobs.remove(job)
        job.emit({"type": "cancelled"})

    # ------------------------------------------------------------------------------- sampler thread
    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._jobs:
                    self._cond.wait()
                if self._stopping:
                    return
                if self._last_shared:
                    self._gather()
                work = self._take()
                self._last_shared = len({id(job) for job, _ in work}) > 1
                self._running = list(dict.fromkeys(job for job, _ in work))
            try:
                self._run(work)
            finally:
                with self._cond:
                    self._running = []

    def _room(self, head: Job) -> int:
        """Images the next call may hold: ``batch_size``, and ``batch_rows`` rows of candidates."""
        return max(1, min(self.limits.batch_size, self.limits.batch_rows // head.request.sampler.candidates))

    def _waiting_images(self) -> int:
        key = self._jobs[0].request.batch_key
        return sum(j.request.num_images - j.taken for j in self._jobs if j.request.batch_key == key)

    def _gather(self) -> None:
        """Under load (the last call was shared) wait up to ``batch_wait`` for the next call to fill up:
        the clients just answered are sending their next requests. A lone client never waits."""
        deadline = time.monotonic() + self.limits.batch_wait
        while self._jobs and not self._stopping and self._waiting_images() < self._room(self._jobs[0]):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _take(self) -> list[tuple[Job, int]]:
        """(job, image index) pairs of the next call: the oldest request and those that match its settings."""
        key = self._jobs[0].request.batch_key
        room = self._room(self._jobs[0])
        work: list[tuple[Job, int]] = []
        for job in list(self._jobs):
            if job.request.batch_key != key:
                continue
            count = min(room, job.request.num_images - job.taken)
            work += [(job, i) for i in range(job.taken, job.taken + count)]
            job.taken += count
            if job.taken == job.request.num_images:
                self._jobs.remove(job)
            room -= count
            if room == 0:
                break
        return work

    def _run(self, work: list[tuple[Job, int]]) -> None:
        first = work[0][0].request
        jobs = list(dict.fromkeys(job for job, _ in work))
        for job in jobs:
            job.emit({"type": "started", "images": [i for j, i in work if j is job], "batch": len(work)})
        n = first.sampler.candidates

        def on_scale(step: ScaleStep) -> None:
            if all(job.cancelled for job in jobs):
                raise _Aborted
            for row, (job, index) in enumerate(work):
                if job.previews and not job.cancelled:
                    tiles = codes_to_uint8(self.pipe.vae, step.codes[row * n : (row + 1) * n])
                    png = png_base64(mosaic(tiles.cpu().numpy()), compress_level=1)
                    job.emit(
                        {
                            "type": "preview",
                            "index": index,
                            "scale": step.k + 1,
                            "scales": step.num_scales,
                            "png": png,
                        }
                    )

        negative = None
        if first.negative_prompt is not None:
            negative = [str(job.request.negative_prompt) for job, _ in work]
        start = time.perf_counter()
        try:
            extra: dict[str, Any] = {}
            if first.edit is not None:  # an edit is alone in its call (its batch key holds its source)
                edit = self._edit_source(jobs[0])
                if edit.holds_everything:  # nothing to draw: the reconstruction, as pipe.edit gives it
                    pixels = self.pipe.reconstruct(edit, first.schedule).cpu().numpy()
                    self._deliver(work, np.repeat(pixels, len(work), axis=0), None)
                    return
                extra["edit"] = edit.repeat_interleave(len(work))
            result = self.pipe.generate(
                [job.request.prompts[i] for job, i in work],
                negative,
                schedule=first.schedule,
                sampler=first.sampler,
                seed=[job.request.seeds[i] for job, i in work],
                callback=on_scale,
                **extra,
            )
        except _Aborted:
            self.stats.aborted_batches += 1
            for job in jobs:
                job.emit({"type": "cancelled"})
            return
        except Exception as err:  # a failed call must not stop the server; its requests get the error
            logger.exception("sampler call for %d images failed", len(work))
            self.stats.failed_batches += 1
            for job in jobs:
                job.cancel()
                job.emit({"type": "error", "message": f"sampling failed: {type(err).__name__}: {err}"})
            return
        seconds = time.perf_counter() - start
        self._seconds_per_batch = 0.8 * self._seconds_per_batch + 0.2 * seconds
        self.stats.batches += 1
        self.stats.images += len(work)
        self.stats.recent_batches.append(len(work))
        assert result.images is not None  # the pipeline always decodes
        log_prob = None if result.log_prob is None else result.log_prob.tolist()
        self._deliver(work, result.images.cpu().numpy(), log_prob)

    def _edit_source(self, job: Job) -> EditSource:
        """The edit's batch-1 source: encoded (VAE and keep masks) once per request, not once per sampler
        call; kept on the job only while it has images left to draw."""
        request, edit = job.request, job.edit_source
        if edit is None:
            spec = request.edit
            assert spec is not None
            edit = self.pipe.edit_source(
                spec.source, spec.mask, request.schedule, dilate=spec.dilate, keep_scales=spec.keep_scales
            )
        job.edit_source = edit if job.taken < request.num_images else None
        return edit

    def _deliver(self, work: list[tuple[Job, int]], pixels: np.ndarray, log_prob: list[float] | None) -> None:
        """Send each image of the call (uint8 ``(B, H, W, 3)``) to its request; ``done`` after its last."""
        for row, (job, index) in enumerate(work):
            if job.cancelled:
                continue
            settings = job.request.settings(index)
            settings["command"] = generate_command(settings, self.model_args)
            event: dict[str, Any] = {
                "type": "image",
                "index": index,
                "seed": settings["seed"],
                "png": png_base64(pixels[row]),
                "settings": settings,
            }
            if log_prob is not None:
                event["log_prob"] = float(log_prob[row])
            job.emit(event)
            job.finished += 1
            if job.finished == job.request.num_images:
                job.emit({"type": "done"})
