"""Run the app with uvicorn in a background thread of this process (tests, benchmarks, notebooks)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

__all__ = ["serve_in_thread"]


@contextlib.contextmanager
def serve_in_thread(
    app: Starlette, host: str = "127.0.0.1", port: int = 0, start_timeout: float = 60.0
) -> Iterator[str]:
    """Serve ``app`` on ``host:port`` (0: a free port) in a thread; yields the base URL, stops the server on exit.

    The socket is bound here, before uvicorn starts, so the port is known and no other process can take it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        for _ in range(int(start_timeout / 0.02)):
            if server.started or not thread.is_alive():
                break
            time.sleep(0.02)
        if not server.started:
            raise RuntimeError(f"uvicorn did not start on {host}:{sock.getsockname()[1]}")
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
