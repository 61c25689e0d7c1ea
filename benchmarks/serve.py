"""Load test of `infinity serve` on loopback: 16 concurrent clients against the shipped default model.

Starts `infinity serve` twice in a subprocess on a free 127.0.0.1 port, micro-batching on (--batch-size 16)
and off (--batch-size 1). Each of 16 client threads sends its requests one after another (one image each, its
own prompt and seed) over a kept-alive connection; the table gives requests/s, p50/p95 latency, and checks that
every request got its image. It also compares one request at a time through the server with the same sampler
call made in this process (the server's own cost: HTTP, queue, PNG and base64).

    uv run python benchmarks/serve.py            # about 2 minutes on 2 CPU cores
    uv run python benchmarks/serve.py --requests 2 --single 5
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROMPTS = (
    "a photo of a red circle above a blue square",
    "a photo of two green triangles",
    "a photo of a yellow square left of a red circle",
    "a photo of three blue circles",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(conn: http.client.HTTPConnection, body: dict) -> tuple[int, dict]:
    conn.request("POST", "/v1/images", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


class Server:
    """`infinity serve` in its own process group on a free loopback port; killed with its group on exit."""

    def __init__(self, batch_size: int, log: Path) -> None:
        self.port = _free_port()
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infinity_model.cli", "serve", "--port", str(self.port), "--device", "cpu",
             "--batch-size", str(batch_size)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def __enter__(self) -> Server:
        for _ in range(1200):
            if self.process.poll() is not None:
                raise RuntimeError(f"infinity serve exited; see {self.log.name}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("infinity serve did not answer /health")

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self.log.close()


def load(port: int, clients: int, requests: int, candidates: int) -> dict[str, float]:
    """``clients`` threads, each sending ``requests`` requests in turn; throughput and latency percentiles."""
    latencies: list[float] = []
    answered: list[int] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        for r in range(requests):
            body = {"prompt": PROMPTS[(c + r) % len(PROMPTS)], "seed": 1000 * c + r, "candidates": candidates}
            start = time.perf_counter()
            status, answer = _post(conn, body)
            took = time.perf_counter() - start
            with lock:
                latencies.append(took)
                if (
                    status == 200
                    and len(answer["images"]) == 1
                    and answer["images"][0]["seed"] == body["seed"]
                ):
                    answered.append(1)
        conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "sent": clients * requests,
        "answered": len(answered),
        "rps": clients * requests / wall,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
    }


def single(port: int, repeats: int, candidates: int) -> float:
    """Median seconds of one request at a time through the server."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    times = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        status, _ = _post(conn, {"prompt": PROMPTS[0], "seed": r, "candidates": candidates})
        assert status == 200
        times.append(time.perf_counter() - start)
    conn.close()
    return statistics.median(times[1:])  # the first call warms the server up


def in_process(repeats: int, counts: tuple[int, ...]) -> dict[int, float]:
    """Median seconds of the same sampler call made directly on a pipeline in this process, per candidates."""
    from dataclasses import replace

    from infinity_model import InfinityPipeline, SamplerConfig
    from infinity_model.default_model import default_model_dir

    pipe = InfinityPipeline.from_pretrained(default_model_dir(), device="cpu")
    g = pipe.generation
    schedule = pipe.schedule(g.ratio, g.pn)
    medians = {}
    for n in counts:
        sampler = SamplerConfig(**replace(g, candidates=n).sampler_options())
        times = []
        for r in range(repeats + 1):
            start = time.perf_counter()
            pipe.generate([PROMPTS[0]], schedule=schedule, sampler=sampler, seed=r)
            times.append(time.perf_counter() - start)
        medians[n] = statistics.median(times[1:])  # the first call warms up
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4, help="requests per client with 1 candidate")
    parser.add_argument("--requests-8", type=int, default=2, help="requests per client with 8 candidates")
    parser.add_argument("--single", type=int, default=10, help="one-at-a-time requests for the overhead row")
    parser.add_argument("-o", "--output", type=Path, default=Path(tempfile.gettempdir()) / "infinity-serve-bench",
                        help="folder for the servers' logs (default: the system temporary folder)")  # fmt: skip
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)

    local = in_process(args.single, (1, 8))
    rows: dict[tuple[str, int], dict[str, float]] = {}
    served: dict[int, float] = {}
    for name, batch in (("on", 16), ("off", 1)):
        with Server(batch, args.output / f"serve-batch{batch}.log") as server:
            if name == "on":
                served = {n: single(server.port, args.single, n) for n in (1, 8)}
            for n, requests in ((1, args.requests), (8, args.requests_8)):
                rows[(name, n)] = load(server.port, args.clients, requests, n)

    print(f"\n{args.clients} concurrent clients, default model (0.016M, cfg 2, tau 0.5), CPU, loopback\n")
    print(
        "| candidates | micro-batching | requests | answered | requests/s | p50 latency | p95 latency | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in (1, 8):
        off = rows[("off", n)]["rps"]
        for name in ("on", "off"):
            r = rows[(name, n)]
            print(
                f"| {n} | {name} | {r['sent']:.0f} | {r['answered']:.0f} | {r['rps']:.2f} | {r['p50']:.3f} s "
                f"| {r['p95']:.3f} s | {r['rps'] / off:.2f}x |"
            )
    print("\n| candidates | in-process sampler call | one request through the server | server overhead |")
    print("|---|---|---|---|")
    for n in (1, 8):
        print(f"| {n} | {local[n]:.3f} s | {served[n]:.3f} s | {100 * (served[n] / local[n] - 1):+.1f}% |")
    lost = sum(r["sent"] - r["answered"] for r in rows.values())
    print(f"\nrequests lost or wrong: {lost:.0f}")


if __name__ == "__main__":
    main()
