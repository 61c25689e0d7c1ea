"""Worker pools for the converter and the verifier: fork-server workers that die with the process using them.

A ``ProcessPoolExecutor`` worker waits on its task queue, whose write end every worker also holds, so it
never sees the parent go away: after a SIGKILL of the parent, idle workers would live (and hold their
memory) forever. Each worker therefore asks the kernel for SIGKILL when its parent exits (Linux
``prctl(PR_SET_PDEATHSIG)``; with a fork server the parent is the server, which exits with the process that
started it) and runs a watchdog thread that exits when that process or its own parent is gone.
:func:`shutdown_pool` shuts a pool down without waiting forever on one that broke.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

from .images import worker_context

__all__ = ["die_with_parent", "shutdown_pool", "worker_pool"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_WATCHDOG_S = 1.0  # how often a worker checks that the process it works for is still there
_SHUTDOWN_POLL_S = 0.5  # how often a pool being shut down is checked for a break (see shutdown_pool)


def worker_pool(max_workers: int) -> ProcessPoolExecutor:
    """A process pool of ``max_workers`` fork-server (or spawned) workers that die with this process."""
    return ProcessPoolExecutor(
        max_workers=max_workers,
        mp_context=worker_context(),
        initializer=_start_worker,
        initargs=(os.getpid(), dict(os.environ)),
    )


def shutdown_pool(pool: Executor, cancel: bool) -> None:
    """Shut ``pool`` down and wait for it, killing the workers of a process pool that broke.

    CPython before 3.14 can spawn a worker on demand while a pool is breaking and then wait forever for it
    (``terminate_broken`` signals only the workers it saw, then joins them all), so the wait is made in short
    joins of the pool's manager thread, and whenever the pool is broken its remaining workers are killed.
    """
    manager = getattr(pool, "_executor_manager_thread", None)  # shutdown() drops these references
    workers = getattr(pool, "_processes", None) or {}
    if not isinstance(manager, threading.Thread):  # another executor (Ray), or one that never started
        pool.shutdown(wait=True, cancel_futures=cancel)
        return
    pool.shutdown(wait=False, cancel_futures=cancel)
    while manager.is_alive():
        if getattr(pool, "_broken", False):
            for process in list(workers.values()):
                process.kill()
        manager.join(_SHUTDOWN_POLL_S)


def _start_worker(owner_pid: int, environ: dict[str, str]) -> None:
    """Pool initializer: take the pool creator's current environment (the fork server keeps the one of
    the moment it started, so store settings such as ``AWS_ENDPOINT_URL`` set later would not reach the
    worker), then watch the owner (:func:`die_with_parent`)."""
    os.environ.clear()
    os.environ.update(environ)
    die_with_parent(owner_pid)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, counts as gone). POSIX only."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        return stat.rpartition(")")[2].split()[:1] != ["Z"]
    return True


def _watch(owner_pid: int, ppid: int) -> None:
    while _alive(owner_pid) and os.getppid() == ppid:
        time.sleep(_WATCHDOG_S)
    os._exit(1)


def die_with_parent(owner_pid: int) -> None:
    """Pool initializer: end this worker when process ``owner_pid`` (the one that made the pool) or this
    worker's parent exits, however it exits (see the module docstring)."""
    if os.name != "posix":
        return  # Windows: no watchdog (os.kill(pid, 0) would terminate the process there)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            logger.warning(
                "prctl(PR_SET_PDEATHSIG) failed (errno %d); the watchdog remains", ctypes.get_errno()
            )
    ppid = os.getppid()
    if not _alive(owner_pid):
        os._exit(1)  # the owner died while this worker was starting
    threading.Thread(target=_watch, args=(owner_pid, ppid), name="owner-watchdog", daemon=True).start()
