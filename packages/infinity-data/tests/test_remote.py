"""Shards in object storage: a real S3-compatible server (moto, server mode) and an HTTP server, both on a
free loopback port, both stopped in ``finally``; fault hooks fail a share of their GET requests."""

from __future__ import annotations

import http.server
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from infinity_data import (
    BucketLoader,
    ConvertConfig,
    LoaderConfig,
    ShardIndex,
    convert_folder,
    convert_img2dataset,
    convert_jsonl,
    stats,
    verify,
)
from infinity_data.cli import main
from infinity_data.remote import staging_folder
from infinity_data.shards import read_member_table
from infinity_data.storage import (
    ShardCache,
    StorageError,
    Store,
    UnsupportedLocationError,
    check_location,
    redact,
)

BUCKET = "infinity-test"


@dataclass
class Faults:
    """Fail GET requests whose path contains ``match``: every ``every``-th one (0 = none), or all."""

    every: int = 0
    match: str = ".tar"
    always: bool = False
    seen: int = 0
    failed: int = 0
    put_delay_s: float = 0.0  # slows each shard upload (to kill a conversion mid-run)
    answered_503: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, method: str, path: str) -> bool:
        if method != "GET" or self.match not in path:
            return False
        with self.lock:
            self.seen += 1
            fail = self.always or (self.every > 0 and self.seen % self.every == 0)
            self.failed += fail
            return fail


@dataclass
class S3Server:
    url: str
    faults: Faults


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """moto's S3 app behind a WSGI hook that can answer 503 (as ThreadedMotoServer does, plus the hook)."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    faults = Faults()
    app = DomainDispatcherApplication(create_backend_app)

    def hooked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ["REQUEST_METHOD"] == "PUT" and ".tar" in environ.get("PATH_INFO", ""):
            time.sleep(faults.put_delay_s)
        if faults.hit(environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")):
            start_response("503 Service Unavailable", [("Content-Length", "0")])
            return [b""]
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, hooked, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}"
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        bucket = f"{BUCKET}-{uuid.uuid4().hex[:12]}"  # moto's backend outlives a server: a fresh bucket
        Store(f"s3://{bucket}").fs.mkdir(bucket)
        yield S3Server(f"s3://{bucket}", faults)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _Handler(http.server.SimpleHTTPRequestHandler):
    faults: Faults

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.faults.hit("GET", self.path):
            if self.faults.failed % 2:
                self.faults.answered_503 += 1
                self.send_error(503, "injected fault")
            else:  # a reset connection: no answer at all
                self.close_connection = True
            return
        super().do_GET()


@dataclass
class HttpServer:
    url: str
    faults: Faults


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[Callable[[Path], HttpServer]]:
    """``serve(folder)`` -> an HTTP server of ``folder`` on a free loopback port, stopped after the test."""
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def serve(folder: Path) -> HttpServer:
        faults = Faults()
        handler = type("Handler", (_Handler,), {"faults": faults})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return HttpServer(f"http://127.0.0.1:{server.server_port}", faults)

    try:
        yield serve
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def _upload(local: Path, url: str) -> None:
    store = Store(url, write=True)
    for path in sorted(local.rglob("*")):
        if path.is_file() and "_convert" not in path.parts:
            store.put_file(path, path.relative_to(local).as_posix())


def _epoch(loader: BucketLoader) -> list[tuple[str, list[str], torch.Tensor]]:
    return [(f"{b['template']:.3f}", b["keys"], b["images"]) for b in loader]


def _same_batches(a: list[tuple[str, list[str], torch.Tensor]], b: list[Any]) -> None:
    assert [(t, k) for t, k, _ in a] == [(t, k) for t, k, _ in b]
    for (_, _, x), (_, _, y) in zip(a, b, strict=True):
        assert torch.equal(x, y)


# ---- the URL layer ------------------------------------------------------------------------------------


def test_urls_are_never_local_paths_and_unknown_or_uninstalled_schemes_are_refused() -> None:
    assert check_location("shards/x") == Path("shards/x")
    assert check_location("file:///tmp/ds") == Path("/tmp/ds")
    assert check_location("s3://bucket/ds/") == "s3://bucket/ds"
    with pytest.raises(UnsupportedLocationError, match=r"'ftp' is not supported.*s3://"):
        check_location("ftp://host/ds")
    with pytest.raises(UnsupportedLocationError, match=r"infinity-data\[gcs\]"):  # gcsfs is not installed
        check_location("gs://bucket/ds")
    with pytest.raises(UnsupportedLocationError, match="read-only"):
        check_location("https://example.invalid/ds", write=True)


def test_missing_extra_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "s3fs" else real(name, *a)
    )
    with pytest.raises(UnsupportedLocationError, match=r"pip install 'infinity-data\[s3\]'"):
        check_location("s3://bucket/ds")


def test_cli_refuses_url_verbs_without_creating_local_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for argv in (
        ["verify", "foo://b/ds"],
        ["stats", "gs://b/ds"],
        ["index", "ftp://b/ds"],
        ["stream", "gs://b"],
    ):
        assert main(argv) == 2
        assert "infinity-data" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_redact_removes_credentials_and_signed_queries() -> None:
    assert redact("https://user:secret@host:9/a/b.tar?X-Amz-Signature=abc") == "https://host:9/a/b.tar"
    assert redact("s3://bucket/ds") == "s3://bucket/ds"


# ---- verbs and loader on S3 ---------------------------------------------------------------------------


@pytest.mark.slow
def test_verify_stats_and_index_read_a_dataset_in_s3(converted: Path, s3: S3Server) -> None:
    url = f"{s3.url}/ds"
    _upload(converted, url)
    report = verify(url, workers=0)
    assert report.ok, report.errors
    assert report.num_samples == 45
    local, remote = stats(converted), stats(url)
    assert remote.bucket_sizes == local.bucket_sizes
    np.testing.assert_array_equal(remote.ratios, local.ratios)
    store = Store(url, write=True)
    store.fs.rm_file(f"{url}/index.json")
    assert main(["index", url]) == 0
    assert ShardIndex.load(url).shards == ShardIndex.load(converted).shards
    # a shard missing from the store is an error naming it; a stray one is found by listing
    first = ShardIndex.load(url).shards[0].path
    store.fs.rm_file(f"{url}/{first}")
    errors = verify(url, workers=0).errors
    assert any(first in e and "missing" in e for e in errors), errors


@pytest.mark.slow
def test_loader_on_s3_gives_the_batches_of_local_shards_and_resumes_exactly(
    converted: Path, s3: S3Server, tmp_path: Path
) -> None:
    url = f"{s3.url}/ds"
    _upload(converted, url)
    cfg = LoaderConfig(batch_size=4, num_workers=0, seed=3, load_t5=False, shuffle_window=2)
    local = _epoch(BucketLoader(converted, cfg))
    remote_loader = BucketLoader(url, cfg)
    _same_batches(local, _epoch(remote_loader))
    num_shards = len(ShardIndex.load(converted).shards)
    # a big enough cache: each shard is downloaded once, in one GET
    assert remote_loader.io_stats["fetches"] == num_shards
    assert remote_loader.io_stats["failed_shards"] == 0
    # resume mid-epoch from a loader on local disk, continue from the bucket with 2 workers and a cache dir
    first = BucketLoader(converted, cfg)
    it = iter(first)
    head = [next(it) for _ in range(3)]
    state = first.state_dict()
    resumed = BucketLoader(
        url, LoaderConfig(**{**cfg.__dict__, "num_workers": 2, "cache_dir": str(tmp_path / "c")})
    )
    resumed.load_state_dict(state)
    tail = _epoch(resumed)
    assert [b["keys"] for b in head] + [k for _, k, _ in tail] == [k for _, k, _ in local]


@pytest.mark.slow
def test_s3_faults_every_sample_delivered_exactly_once(converted: Path, s3: S3Server) -> None:
    url = f"{s3.url}/ds"
    _upload(converted, url)
    s3.faults.every = 3  # one GET of a shard in three answers 503
    cfg = LoaderConfig(batch_size=4, num_workers=2, load_t5=False, prefetch_shard_batches=2)
    loader = BucketLoader(url, cfg)  # readers and prefetch threads share one cache folder
    keys = [k for _, ks, _ in _epoch(loader) for k in ks]
    assert s3.faults.failed > 0
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 45
    assert loader.io_stats["failed_shards"] == 0
    # neither s3fs nor botocore retries behind our back: every failed GET is one counted retry
    assert loader.io_stats["retries"] == s3.faults.failed


# ---- http(s): read-only ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_http_verbs_and_loader_match_local(converted: Path, http_root: Callable[[Path], HttpServer]) -> None:
    server = http_root(converted.parent)
    url = f"{server.url}/{converted.name}"
    assert verify(url, workers=2).ok
    assert stats(url).bucket_sizes == stats(converted).bucket_sizes
    cfg = LoaderConfig(batch_size=4, num_workers=2, seed=1, load_t5=False, mode="resampled")
    local = BucketLoader(converted, cfg)
    remote = BucketLoader(url, LoaderConfig(**{**cfg.__dict__, "prefetch_shard_batches": 2}))
    _same_batches(_epoch(local), _epoch(remote))


@pytest.mark.slow
def test_http_faults_are_retried_counted_and_every_sample_arrives_once(
    converted: Path, http_root: Callable[[Path], HttpServer], tmp_path: Path
) -> None:
    server = http_root(converted.parent)
    server.faults.every = 3  # 503s and dropped connections, alternately
    url = f"{server.url}/{converted.name}"
    cache = tmp_path / "cache"
    loader = BucketLoader(url, LoaderConfig(batch_size=4, num_workers=0, load_t5=False, cache_dir=str(cache)))
    keys = [k for _, ks, _ in _epoch(loader) for k in ks]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 45
    assert server.faults.failed > 0
    # every 503 surfaces and is retried by us; aiohttp itself retries some dropped connections
    assert server.faults.answered_503 <= loader.io_stats["retries"] <= server.faults.failed
    assert loader.io_stats["failed_shards"] == 0


@pytest.mark.slow
def test_a_shard_that_keeps_failing_is_reported_by_url_and_skipped(
    converted: Path, http_root: Callable[[Path], HttpServer], caplog: pytest.LogCaptureFixture
) -> None:
    bad = ShardIndex.load(converted).shards[0]
    server = http_root(converted.parent)
    server.faults.always, server.faults.match = True, bad.path
    url = f"{server.url}/{converted.name}"
    loader = BucketLoader(url, LoaderConfig(batch_size=4, num_workers=0, load_t5=False))
    with caplog.at_level(logging.WARNING):
        keys = [k for _, ks, _ in _epoch(loader) for k in ks]
    assert len(keys) == 45 - bad.num_samples
    assert loader.io_stats["failed_shards"] == 1
    assert any(
        f"{url}/{bad.path}" in r.getMessage() and "unavailable" in r.getMessage() for r in caplog.records
    )


def test_unreachable_store_is_a_clear_error_naming_the_url_without_credentials() -> None:
    import socket

    with socket.socket() as sock:  # a free port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://user:hunter2@127.0.0.1:{port}/ds"
    with pytest.raises(StorageError) as info:
        BucketLoader(url, LoaderConfig(num_workers=0))
    message = str(info.value)
    assert f"http://127.0.0.1:{port}/ds/index.json" in message and "hunter2" not in message


def test_shard_cache_stays_within_its_byte_bound(converted: Path, tmp_path: Path, s3: S3Server) -> None:
    url = f"{s3.url}/ds"
    _upload(converted, url)
    shards = ShardIndex.load(converted).shards
    bound = 3 * max(s.num_bytes for s in shards)
    cache = ShardCache(Store(url), tmp_path / "cache", bound)
    for info in (*shards, *shards[:2]):
        path = cache.local(info.path)
        assert path.read_bytes() == (converted / info.path).read_bytes()
        assert sum(p.stat().st_size for p in (tmp_path / "cache").iterdir()) <= bound
    assert cache.store.stats.fetches == len(shards) + 2  # the first two were evicted long ago: fetched again
    assert cache.local(shards[-1].path).is_file() and cache.store.stats.cache_hits == 1


# ---- converting into a bucket -------------------------------------------------------------------------


def _objects(url: str) -> dict[str, bytes]:
    store = Store(url)
    prefix = store.fs._strip_protocol(url) + "/"
    return {p[len(prefix) :]: store.fs.cat_file(p) for p in store.fs.find(url)}


@pytest.mark.slow
def test_convert_into_s3_writes_the_objects_of_a_local_conversion(
    tmp_path: Path, make_folder: Callable[..., Path], s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    src = make_folder(tmp_path / "src", 20)
    config = ConvertConfig(max_samples_per_shard=2)
    local = convert_folder(src, tmp_path / "local", config)
    url = f"{s3.url}/ds"
    remote = convert_folder(src, url, config)
    assert remote.index.root == url and remote.index.shards == local.index.shards
    objects = _objects(url)
    for info in local.index.shards:
        assert objects[info.path] == (tmp_path / "local" / info.path).read_bytes()
    assert objects["index.json"] == (tmp_path / "local" / "index.json").read_bytes()
    assert "report.json" in objects
    assert verify(url, workers=0).ok
    # the staging folder keeps only the journal and the index/report, not the uploaded tars
    assert not list(staging_folder(url).rglob("*.tar"))


def test_convert_refuses_url_outputs_it_cannot_write_without_creating_local_folders(
    tmp_path: Path,
    make_folder: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = make_folder(tmp_path / "src", 2)
    monkeypatch.chdir(tmp_path)
    for out, message in (
        ("foo://bucket/ds", "not supported"),
        ("gs://bucket/ds", "infinity-data[gcs]"),
        ("https://example.invalid/ds", "read-only"),
    ):
        assert main(["convert", str(src), out, "--workers", "0"]) == 2
        assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    assert main(["convert", "ftp://bucket/in", "-o", "out", "--num-workers", "0"]) == 2
    assert "'ftp' is not supported" in capsys.readouterr().err
    with pytest.raises(UnsupportedLocationError, match="JSONL or parquet"):  # images in a bucket: as a list
        convert_folder("s3://bucket/images", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


@pytest.mark.slow
def test_convert_into_s3_killed_and_resumed_gives_the_objects_of_an_uninterrupted_run(
    tmp_path: Path, make_folder: Callable[..., Path], s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    src = make_folder(tmp_path / "src", 30)
    reference = f"{s3.url}/reference"
    convert_folder(src, reference, ConvertConfig(max_samples_per_shard=1))
    url = f"{s3.url}/killed"
    argv = ["convert", str(src), url, "--workers", "0", "--shard-size", "1"]
    journal = staging_folder(url) / "_convert" / "shards.jsonl"
    s3.faults.put_delay_s = 0.1
    proc = subprocess.Popen(
        [sys.executable, "-m", "infinity_data.cli", *argv],
        env=dict(os.environ),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while proc.poll() is None and (not journal.is_file() or len(journal.read_text().splitlines()) < 4):
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the conversion finished before it could be killed"
    s3.faults.put_delay_s = 0.0
    killed = _objects(url)
    assert "index.json" not in killed and killed  # stopped mid-run, some shards already uploaded
    for name, data in killed.items():  # no partial object under a final shard name
        partial_path = tmp_path / "check.tar"
        partial_path.write_bytes(data)
        assert len(read_member_table(partial_path).keys) == 1, name
    assert main(argv) == 0
    resumed, expected = _objects(url), _objects(reference)
    assert sorted(resumed) == sorted(expected)
    for name in expected:
        assert resumed[name] == expected[name], name


# ---- remote inputs --------------------------------------------------------------------------------------


def _tars(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.glob("*/*.tar"))}


def _img2dataset_folder(root: Path, image_bytes: Callable[..., bytes]) -> Path:
    """img2dataset's output layout: ``NNNNN.tar`` (jpg/txt/json per key) with a metadata parquet beside."""
    root.mkdir(parents=True)
    for shard, keys in enumerate((["000000000", "000000001", "000000002"], ["000010000", "000010001"])):
        with tarfile.open(root / f"{shard:05d}.tar", "w") as tar:
            for i, key in enumerate(keys):
                meta = {"key": key, "caption": f"caption {key}", "status": "success"}
                for ext, payload in (
                    ("jpg", image_bytes(40 + 8 * i, 48, seed=shard * 10 + i)),
                    ("txt", f"caption {key}".encode()),
                    ("json", json.dumps(meta).encode()),
                ):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        pq.write_table(
            pa.table({"key": keys, "status": ["success"] * len(keys)}), root / f"{shard:05d}.parquet"
        )
    return root


@pytest.mark.slow
def test_img2dataset_output_in_s3_or_over_http_converts_to_the_shards_of_local_disk(
    tmp_path: Path,
    image_bytes: Callable[..., bytes],
    s3: S3Server,
    http_root: Callable[[Path], HttpServer],
) -> None:
    src = _img2dataset_folder(tmp_path / "i2d", image_bytes)
    local = convert_img2dataset(src, tmp_path / "local", ConvertConfig(max_samples_per_shard=2))
    assert local.num_accepted == 5
    url = f"{s3.url}/i2d"
    _upload(src, url)
    s3.faults.every = 2  # one GET of a tar in two answers 503: retried, nothing lost
    out = tmp_path / "from_s3"
    argv = ["convert", url, "-o", str(out), "--num-workers", "0", "--shard-size", "2"]
    assert main(argv) == 0  # kind detected by listing the bucket folder
    assert s3.faults.failed > 0
    assert _tars(out) == _tars(tmp_path / "local") and _tars(out)
    assert json.loads((out / "index.json").read_text())["info"]["input"]["input"] == url
    # one tar over https-style http (a folder there cannot be listed: the file is named)
    server = http_root(tmp_path)
    one_local = convert_img2dataset(src / "00001.tar", tmp_path / "one_local", ConvertConfig(workers=0))
    one_http = convert_img2dataset(
        f"{server.url}/i2d/00001.tar", tmp_path / "one_http", ConvertConfig(workers=0)
    )
    assert one_http.num_accepted == one_local.num_accepted == 2
    assert _tars(tmp_path / "one_http") == _tars(tmp_path / "one_local")
    with pytest.raises(UnsupportedLocationError, match="cannot be listed"):
        convert_img2dataset(f"{server.url}/i2d", tmp_path / "folder_http")


@pytest.mark.slow
def test_jsonl_and_parquet_lists_in_s3_read_images_from_the_store_like_local_lists(
    tmp_path: Path, make_folder: Callable[..., Path], s3: S3Server
) -> None:
    data = tmp_path / "data"
    make_folder(data / "imgs", 6)
    names = [f"img{i:04d}.jpg" for i in range(6)] + ["missing.jpg"]
    url = f"{s3.url}/data"
    # relative image paths: resolved against the list's folder in the bucket, read from the bucket
    lines = [json.dumps({"image_path": f"imgs/{n}", "long_caption": f"photo {n}"}) for n in names]
    (data / "list.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    keys = [f"k{i}" for i in range(len(names))]
    table = pa.table({"key": keys, "image_path": [f"imgs/{n}" for n in names], "caption": names})
    pq.write_table(table, data / "list.parquet")
    # image URLs inside a list: the same list gives the same shards wherever the list itself lives
    urls = [json.dumps({"image_path": f"{url}/imgs/{n}", "long_caption": f"photo {n}"}) for n in names]
    (data / "lists").mkdir()
    (data / "lists" / "urls.jsonl").write_text("\n".join(urls) + "\n", encoding="utf-8")
    _upload(data, url)
    config = ConvertConfig(workers=2, max_samples_per_shard=2)
    relative = convert_jsonl(f"{url}/list.jsonl", tmp_path / "rel", config)
    assert relative.num_accepted == 6 and relative.rejected_by_reason == {"unreadable_file": 1}
    report = json.loads(relative.report_path.read_text(encoding="utf-8"))
    assert f"{url}/imgs/missing.jpg" in report["rejected"][0]["reason"]
    stored = {m["meta"]["source"]: m["image"] for m in _samples(tmp_path / "rel")}
    assert stored["list.jsonl:1"] == (data / "imgs" / names[0]).read_bytes()
    for where, out in ((data / "lists", "urls_local"), (f"{url}/lists", "urls_s3")):
        result = convert_jsonl(where, tmp_path / out, config)  # a folder of *.jsonl, listed in the bucket
        assert result.num_accepted == 6
    assert _tars(tmp_path / "urls_s3") == _tars(tmp_path / "urls_local")
    # a parquet list with img2dataset's key column: byte-identical to the local list
    from_s3 = convert_img2dataset(f"{url}/list.parquet", tmp_path / "pq_s3", config)
    from_disk = convert_img2dataset(data / "list.parquet", tmp_path / "pq_local", config)
    assert from_s3.num_accepted == from_disk.num_accepted == 6
    assert _tars(tmp_path / "pq_s3") == _tars(tmp_path / "pq_local")


def _samples(out: Path) -> list[dict[str, Any]]:
    """Every sample of a converted folder: its metadata and its stored image bytes."""
    samples = []
    for tar_path in sorted(out.glob("*/*.tar")):
        with tarfile.open(tar_path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
        for name, payload in members.items():
            if name.endswith(".json"):
                stem = name[: -len(".json")]
                image = next(v for k, v in members.items() if k.startswith(stem + ".") and k != name)
                samples.append({"meta": json.loads(payload), "image": image})
    return samples
