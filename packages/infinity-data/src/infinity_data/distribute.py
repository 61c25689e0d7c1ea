"""Where conversion work runs: this machine's process pool (default) or a Ray cluster (``--distributor ray``).

The converter cuts its input into deterministic work units (consecutive chunks of records, in input order)
and consumes their results in that order, so the output shards are byte-identical whatever the distributor
and the number of workers or machines: only the decoding is distributed, the writing stays in the driver
(a worker lost mid-unit never leaves a partial shard). On Ray a unit whose worker dies is retried by Ray
(``max_retries``); one that keeps killing its worker is reported like a broken process pool, so the
converter isolates the record at fault and rejects it as ``worker_crash``, as it does with processes.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .processes import worker_pool

__all__ = ["DISTRIBUTORS", "RayExecutor", "check_distributor", "make_executor"]

DISTRIBUTORS = ("multiprocessing", "ray")


def check_distributor(name: str) -> str:
    """Refuse unknown names and Ray without its extra (naming the fix)."""
    if name not in DISTRIBUTORS:
        raise ValueError(f"distributor must be one of {DISTRIBUTORS}, got {name!r}")
    if name == "ray" and importlib.util.find_spec("ray") is None:
        raise ValueError("--distributor ray needs Ray: `pip install 'infinity-data[ray]'`")
    return name


class RayExecutor(Executor):
    """``submit`` runs a function as a Ray task; joins the cluster named by ``RAY_ADDRESS`` (or starts a
    local one with ``workers`` CPUs) unless Ray is already initialised, and leaves others' Ray running."""

    def __init__(self, workers: int, max_retries: int = 3) -> None:
        import ray

        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            address = os.environ.get("RAY_ADDRESS") or None
            ray.init(
                address=address,
                num_cpus=None if address else max(1, workers),
                include_dashboard=False,
                log_to_driver=False,
            )
        self._max_retries = max_retries
        self._remotes: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        remote = self._remotes.get(fn)
        if remote is None:
            remote = self._remotes[fn] = self._ray.remote(max_retries=self._max_retries)(fn)
        inner = remote.remote(*args, **kwargs).future()
        outer: Future[Any] = Future()

        def relay(done: Future[Any]) -> None:
            exc = done.exception()
            if exc is None:
                outer.set_result(done.result())
            elif isinstance(exc, self._ray.exceptions.WorkerCrashedError):
                outer.set_exception(BrokenProcessPool(f"a Ray worker died running a conversion unit: {exc}"))
            else:
                outer.set_exception(exc)

        inner.add_done_callback(relay)
        return outer

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(distributor: str, workers: int) -> Executor:
    """The executor of conversion units for ``distributor`` with ``workers`` parallel units."""
    if check_distributor(distributor) == "ray":
        return RayExecutor(workers)
    return worker_pool(workers)  # fork-server workers that die with the converter
