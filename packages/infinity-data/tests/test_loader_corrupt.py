"""BucketLoader on damaged data: order and resume stay exact with workers, skips are counted and bounded,
and only data errors are skipped (a bug in the loader raises)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from infinity_data import BucketLoader, LoaderConfig, ShardIndex, ShardWriter, read_shard
from infinity_data.loader import CorruptDataLimitError
from infinity_data.shards import ShardSample

# 3 samples per shard and shuffle_window=1 with batch_size=3: every batch is exactly one shard's samples,
# so a damaged shard empties a whole batch
CONFIG = LoaderConfig(batch_size=3, num_workers=2, shuffle_window=1, seed=4, prefetch_factor=2)


def _write_dataset(root: Path, image_bytes) -> None:
    with ShardWriter(root, max_samples_per_shard=3) as writer:
        for i in range(24):
            meta = {"template": 1.0, "caption": f"caption {i}.", "width": 32, "height": 32}
            writer.write(ShardSample(f"k{i:02d}", image_bytes(32, 32, seed=i), "jpg", meta))
    ShardIndex.scan(root).save()


def _shard_of(root: Path, key: str) -> Path:
    for shard in ShardIndex.load(root).shards:
        if key in {k for k, _ in read_shard(root / shard.path, exts=())}:
            return root / shard.path
    raise AssertionError(f"{key} is in no shard")


@pytest.fixture
def damaged(tmp_path: Path, image_bytes) -> Path:
    """24 samples in 8 shards; the shards of batches 0 and 3 are unreadable or gone, one more sample is a
    truncated JPEG: 7 unreadable samples in all."""
    root = tmp_path / "shards"
    _write_dataset(root, image_bytes)
    clean = [list(b["keys"]) for b in BucketLoader(root, replace(CONFIG, num_workers=0))]
    assert all(len(keys) == 3 for keys in clean)
    bad_tar, gone, shard = (_shard_of(root, clean[i][0]) for i in (0, 3, 5))
    bad_tar.write_bytes(b"not a tar at all" * 100)  # batch 0: unreadable tar
    gone.unlink()  # batch 3: shard missing
    # batch 5: one member truncated in place (same size on disk, so the index still matches)
    data = bytearray(shard.read_bytes())
    jpeg = image_bytes(32, 32, seed=int(clean[5][1][1:]))
    at = bytes(data).index(jpeg)
    data[at + 40 : at + len(jpeg)] = bytes(len(jpeg) - 40)
    shard.write_bytes(bytes(data))
    return root


def _run(loader: BucketLoader, stop_after: int | None = None) -> list[tuple[int, list[str]]]:
    out = []
    for batch in loader:
        out.append((int(batch["index"]), list(batch["keys"])))
        if stop_after is not None and len(out) == stop_after:
            break
    return out


def test_skipped_batches_keep_the_order_of_the_single_process_reference_with_two_workers(
    damaged: Path,
) -> None:
    reference = BucketLoader(damaged, replace(CONFIG, num_workers=0))
    expected = _run(reference)
    assert [i for i, _ in expected] == [1, 2, 4, 5, 6, 7]  # batches 0 and 3 had nothing readable
    loader = BucketLoader(damaged, CONFIG)
    assert _run(loader) == expected
    assert len(expected[3][1]) == 2 and reference.skipped_samples == 7
    assert loader.skipped_samples == 7 and loader.state_dict()["skipped_samples"] == 7
    assert loader.epoch == 1  # the epoch ended normally


@pytest.mark.parametrize("stop_after", [1, 2, 3])
def test_resume_after_skipped_batches_with_two_workers_is_exact(damaged: Path, stop_after: int) -> None:
    expected = _run(BucketLoader(damaged, replace(CONFIG, num_workers=0)))
    first = BucketLoader(damaged, CONFIG)
    head = _run(first, stop_after)
    state = json.loads(json.dumps(first.state_dict()))
    assert state["next_batch"] == head[-1][0] + 1
    resumed = BucketLoader(damaged, CONFIG)
    resumed.load_state_dict(state)
    assert head + _run(resumed) == expected
    assert resumed.skipped_samples == 7  # counted once over the two runs


def test_too_many_unreadable_samples_stop_with_an_error_naming_the_limit(damaged: Path) -> None:
    loader = BucketLoader(damaged, replace(CONFIG, max_skipped_samples=3))
    with pytest.raises(CorruptDataLimitError, match=r"6 unreadable samples .* max_skipped_samples=3"):
        _run(loader)
    assert len(_run(BucketLoader(damaged, replace(CONFIG, max_skipped_samples=7)))) == 6  # at the limit: fine
    unlimited = BucketLoader(damaged, replace(CONFIG, max_skipped_samples=None))
    unlimited.load_state_dict({**unlimited.state_dict(), "skipped_samples": 10_000})
    assert len(_run(unlimited)) == 6


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_bug_while_building_a_batch_raises_instead_of_being_skipped_as_corrupt_data(
    tmp_path: Path, image_bytes, monkeypatch: pytest.MonkeyPatch, num_workers: int
) -> None:
    import infinity_data.loader as loader_module

    _write_dataset(tmp_path, image_bytes)

    def broken_resize(*args: object, **kwargs: object) -> None:
        raise ValueError("bug in the resize code")

    monkeypatch.setattr(loader_module, "resize_crop_for_template", broken_resize)
    with pytest.raises(ValueError, match="bug in the resize code"):
        _run(BucketLoader(tmp_path, replace(CONFIG, num_workers=num_workers)))

    def wrong_decoder(data: bytes) -> None:
        raise TypeError("decoder called wrongly")

    monkeypatch.setattr(loader_module, "decode_rgb", wrong_decoder)
    with pytest.raises(TypeError, match="decoder called wrongly"):
        _run(BucketLoader(tmp_path, replace(CONFIG, num_workers=num_workers)))
