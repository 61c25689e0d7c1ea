"""``--distributor ray``: a local Ray instance (``ray.init(num_cpus=2)``, shut down in ``finally``) converts
into shards byte-identical to the process pool's, and a unit whose worker dies surfaces like a broken pool."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from infinity_data import ConvertConfig, convert_folder, verify
from infinity_data.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    # under `uv run`, Ray would start its workers through `uv run` too (a second environment); use ours
    previous = os.environ.get("RAY_ENABLE_UV_RUN_RUNTIME_ENV")
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield ray
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("RAY_ENABLE_UV_RUN_RUNTIME_ENV", None)
        else:
            os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = previous


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "_convert" not in p.parts
    }


def test_ray_conversion_is_byte_identical_to_the_process_pool_whatever_the_workers(
    tmp_path: Path, make_folder: Callable[..., Path], ray_local: Any
) -> None:
    src = make_folder(tmp_path / "src", 30)
    (src / "broken.jpg").write_bytes(b"not an image")  # rejects travel the same way
    (src / "broken.txt").write_text("a caption", encoding="utf-8")
    base = ConvertConfig(max_samples_per_shard=3)
    pool = convert_folder(src, tmp_path / "pool", ConvertConfig(**{**base.__dict__, "workers": 2}))
    for workers in (1, 2):
        cfg = ConvertConfig(**{**base.__dict__, "workers": workers, "distributor": "ray"})
        out = tmp_path / f"ray{workers}"
        result = convert_folder(src, out, cfg)
        assert result.num_accepted == pool.num_accepted == 30 and result.rejected_by_reason == {
            "not_an_image": 1
        }
        assert _files(out) == _files(tmp_path / "pool")
    # the CLI flag, into the same folder as a finished run: resume finds everything done
    assert main(["convert", str(src), str(tmp_path / "ray2"), "--distributor", "ray", "--workers", "2",
                 "--shard-size", "3"]) == 0  # fmt: skip
    assert _files(tmp_path / "ray2") == _files(tmp_path / "pool")
    assert verify(tmp_path / "ray2").ok


def _die(*_: Any) -> None:
    os._exit(11)


_die.__module__ = "__main__"  # the test module is not importable on Ray's workers: ship the function by value


def test_a_ray_unit_whose_worker_keeps_dying_is_reported_as_a_broken_pool(ray_local: Any) -> None:
    from infinity_data.distribute import RayExecutor

    executor = RayExecutor(workers=1, max_retries=1)
    future = executor.submit(_die, [])
    with pytest.raises(BrokenProcessPool, match="Ray worker died"):
        future.result(timeout=300)
    executor.shutdown()
    assert ray_local.is_initialized()  # an instance the executor did not start is left running


def test_unknown_distributor_is_refused() -> None:
    with pytest.raises(ValueError, match="distributor must be one of"):
        ConvertConfig(distributor="dask")
