"""BucketLoader: bucket-pure batches in spec format, disjoint rank x worker coverage, exact resume."""

from __future__ import annotations

import io
import json
import logging
import math
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from bsq_tokenizer import resize_crop_for_template
from bsq_tokenizer.schedules import target_pixel_size
from infinity_data import (
    BucketLoader,
    ConvertConfig,
    LoaderConfig,
    ShardIndex,
    ShardWriter,
    convert_folder,
    read_shard,
)
from infinity_data.images import decode_rgb
from infinity_data.shards import ShardSample

SIZES8 = [(48, 48), (64, 48), (48, 64), (64, 32), (32, 64), (40, 50), (50, 40), (30, 90)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, image_bytes) -> Path:
    """48 samples, 6 in each of 8 buckets, 2 per shard (so batches mix shards)."""
    root = tmp_path_factory.mktemp("loader")
    src = root / "src"
    src.mkdir()
    for i in range(48):
        w, h = SIZES8[i % 8]
        (src / f"{i:03d}.jpg").write_bytes(image_bytes(w, h, seed=i))
        (src / f"{i:03d}.txt").write_text(f"caption {i}. Second sentence. Third one here.")
    convert_folder(src, root / "shards", ConvertConfig(max_samples_per_shard=2))
    return root / "shards"


def _key_buckets(root: Path) -> dict[str, str]:
    return {
        key: s.bucket for s in ShardIndex.load(root).shards for key, _ in read_shard(root / s.path, exts=())
    }


def _epoch_keys(loader: BucketLoader) -> list[list[str]]:
    return [list(batch["keys"]) for batch in loader]


def test_batches_are_bucket_pure_sized_for_their_template_and_in_minus_one_one(dataset: Path) -> None:
    buckets = _key_buckets(dataset)
    loader = BucketLoader(dataset, LoaderConfig(batch_size=4, num_workers=0, pn="0.06M"))
    seen = 0
    for batch in loader:
        template = batch["template"]
        assert {buckets[k] for k in batch["keys"]} == {f"{template:.3f}"}
        h, w = target_pixel_size(template, "0.06M")
        assert batch["images"].shape == (len(batch["keys"]), 3, h, w)
        assert batch["images"].dtype == torch.float32
        assert batch["images"].min() >= -1.0 and batch["images"].max() <= 1.0
        assert len(batch["captions"]) == len(batch["keys"])
        seen += len(batch["keys"])
    assert seen == 48
    # one image, recomputed by hand: decode, spec resize-crop, x / 255, 2x - 1
    key, files = next(iter(read_shard(dataset / ShardIndex.load(dataset).shards[0].path)))
    meta = json.loads(files["json"])
    crop = resize_crop_for_template(decode_rgb(files["jpg"]), meta["template"], "0.06M")
    expected = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0
    for batch in BucketLoader(dataset, LoaderConfig(batch_size=4, num_workers=0)):
        if key in batch["keys"]:
            assert torch.equal(batch["images"][batch["keys"].index(key)], expected)
            break
    else:
        pytest.fail("sample not yielded")


def test_one_epoch_covers_every_sample_once_with_batches_per_bucket_following_bucket_sizes(
    dataset: Path,
) -> None:
    loader = BucketLoader(dataset, LoaderConfig(batch_size=4, num_workers=0))
    batches = list(loader)
    keys = [k for b in batches for k in b["keys"]]
    assert len(keys) == len(set(keys)) == 48
    per_template = Counter(b["template"] for b in batches)
    assert set(per_template.values()) == {2}  # ceil(6 / 4) batches for each of the 8 buckets
    assert len(loader) == 16 and loader.epoch == 1  # the state moved on to the next epoch


def test_two_ranks_times_two_workers_see_disjoint_samples_covering_the_dataset_once_per_epoch(
    dataset: Path,
) -> None:
    config = LoaderConfig(batch_size=3, num_workers=2, seed=7)
    loaders = [BucketLoader(dataset, config, rank=r, world_size=2) for r in range(2)]
    assert [len(lo) for lo in loaders] == [8, 8]  # 16 global batches of 3
    orders = []
    for _epoch in range(2):
        per_rank = [[k for keys in _epoch_keys(lo) for k in keys] for lo in loaders]
        assert not set(per_rank[0]) & set(per_rank[1])
        everything = per_rank[0] + per_rank[1]
        assert len(everything) == len(set(everything)) == 48
        orders.append(per_rank)
    assert orders[0] != orders[1]  # a new shuffle each epoch


def test_uneven_batch_counts_are_padded_so_every_rank_runs_the_same_number_of_steps(dataset: Path) -> None:
    config = LoaderConfig(batch_size=4, num_workers=0)  # 16 global batches over 3 ranks -> 6 each, 2 repeated
    loaders = [BucketLoader(dataset, config, rank=r, world_size=3) for r in range(3)]
    batches = [_epoch_keys(lo) for lo in loaders]
    assert [len(b) for b in batches] == [6, 6, 6]
    keys = [k for rank in batches for keys in rank for k in keys]
    assert set(keys) == set(_key_buckets(dataset))
    drop = LoaderConfig(batch_size=4, num_workers=0, drop_last=True)  # 6 per bucket -> 1 full batch each
    assert [len(BucketLoader(dataset, drop, rank=r, world_size=3)) for r in range(3)] == [2, 2, 2]


@pytest.mark.parametrize(("stop_after", "workers_after"), [(3, 2), (5, 0), (8, 1)])
def test_restored_state_continues_with_exactly_the_samples_that_would_have_followed(
    dataset: Path, stop_after: int, workers_after: int
) -> None:
    config = LoaderConfig(batch_size=3, num_workers=2, prefetch_factor=2, seed=3)
    reference = BucketLoader(dataset, config, rank=1, world_size=2)
    expected = _epoch_keys(reference) + _epoch_keys(reference)  # epochs 0 and 1

    first = BucketLoader(dataset, config, rank=1, world_size=2)
    consumed = []
    for batch in first:  # workers have prefetched beyond this point when we stop
        consumed.append(list(batch["keys"]))
        if len(consumed) == stop_after:
            break
    state = json.loads(json.dumps(first.state_dict()))  # what a trainer checkpoint would hold
    assert (state["epoch"], state["next_batch"]) == (0, stop_after)

    resumed = BucketLoader(dataset, replace(config, num_workers=workers_after), rank=1, world_size=2)
    resumed.load_state_dict(state)
    rest = _epoch_keys(resumed) + _epoch_keys(resumed)
    assert consumed + rest[: len(expected) - len(consumed)] == expected


def test_state_from_another_setup_is_refused_with_the_mismatch_named(dataset: Path) -> None:
    state = BucketLoader(dataset, LoaderConfig(batch_size=3, num_workers=0)).state_dict()
    other = BucketLoader(dataset, LoaderConfig(batch_size=3, num_workers=0), rank=0, world_size=2)
    with pytest.raises(ValueError, match="world_size=1"):
        other.load_state_dict(state)


def test_same_seed_same_order_and_different_seed_different_order(dataset: Path) -> None:
    def order(seed: int) -> list[list[str]]:
        return _epoch_keys(BucketLoader(dataset, LoaderConfig(batch_size=3, num_workers=0, seed=seed)))

    assert order(11) == order(11)
    assert order(11) != order(12)


def test_resampled_mode_is_bucket_pure_deterministic_resumable_and_proportional(dataset: Path) -> None:
    config = LoaderConfig(batch_size=3, num_workers=0, mode="resampled", seed=5)
    buckets = _key_buckets(dataset)
    a = _epoch_keys(BucketLoader(dataset, config, rank=0, world_size=2))
    b = _epoch_keys(BucketLoader(dataset, config, rank=1, world_size=2))
    assert a != b and len(a) == 8
    for keys in a + b:
        assert len({buckets[k] for k in keys}) == 1 and len(set(keys)) == 3
    loader = BucketLoader(dataset, config, rank=0, world_size=2)
    head = []
    for batch in loader:
        head.append(list(batch["keys"]))
        if len(head) == 3:
            break
    resumed = BucketLoader(dataset, config, rank=0, world_size=2)
    resumed.load_state_dict(loader.state_dict())
    assert head + _epoch_keys(resumed) == a
    # bucket frequencies over many batches follow bucket sizes (all 8 buckets hold 6 samples: uniform)
    plan = loader._plan
    counts = Counter(plan.batch_members(0, i, {})[0] for i in range(4000))
    assert max(abs(c / 4000 - 1 / 8) for c in counts.values()) < 0.02


def _write_custom_shards(root: Path, samples: list[tuple[str, bytes, float, np.ndarray | None]]) -> None:
    with ShardWriter(root, max_samples_per_shard=3) as writer:
        for key, image, template, t5 in samples:
            meta = {
                "template": template,
                "caption": f"caption of {key}. Second. Third.",
                "short_caption": "short",
                "caption_type": "vlm",
                "width": 32,
                "height": 32,
            }
            writer.write(ShardSample(key, image, "jpg", meta, t5=t5))
    ShardIndex.scan(root).save()


def test_unequal_buckets_get_batches_in_proportion_to_their_sizes(tmp_path: Path, image_bytes) -> None:
    samples = [(f"a{i}", image_bytes(32, 32, seed=i), 1.0, None) for i in range(8)]
    samples += [(f"b{i}", image_bytes(32, 64, seed=i), 2.0, None) for i in range(24)]
    _write_custom_shards(tmp_path, samples)
    epoch = list(BucketLoader(tmp_path, LoaderConfig(batch_size=4, num_workers=0)))
    assert Counter(b["template"] for b in epoch) == {1.0: 2, 2.0: 6}
    resampled = BucketLoader(tmp_path, LoaderConfig(batch_size=4, num_workers=0, mode="resampled"))
    counts = Counter(resampled._plan.batch_members(0, i, {})[0] for i in range(4000))
    names = [b.name for b in resampled._plan.buckets]
    assert abs(counts[names.index("1.000")] / 4000 - 0.25) < 0.03


def test_precomputed_t5_features_are_read_from_the_shards(tmp_path: Path, image_bytes) -> None:
    rng = np.random.default_rng(0)
    feats = {f"k{i}": rng.standard_normal((3 + i, 8)).astype(np.float16) for i in range(5)}
    _write_custom_shards(
        tmp_path, [(k, image_bytes(32, 32, seed=i), 1.0, f) for i, (k, f) in enumerate(feats.items())]
    )
    got = {}
    for batch in BucketLoader(tmp_path, LoaderConfig(batch_size=2, num_workers=0)):
        for key, tensor in zip(batch["keys"], batch["t5_features"], strict=True):
            got[key] = tensor
    assert set(got) == set(feats)
    for key, tensor in got.items():
        assert tensor.dtype == torch.float16 and np.array_equal(tensor.numpy(), feats[key])
    no_t5 = next(iter(BucketLoader(tmp_path, LoaderConfig(batch_size=2, num_workers=0, load_t5=False))))
    assert "t5_features" not in no_t5
    # features encode the stored caption, so the caption policy does not swap in another text
    reference = LoaderConfig.preset("reference", batch_size=5, num_workers=0)
    [batch] = list(BucketLoader(tmp_path, reference))
    assert batch["captions"] == [f"caption of {k}. Second. Third." for k in batch["keys"]]
    without = LoaderConfig.preset("reference", batch_size=5, num_workers=0, load_t5=False)
    [batch] = list(BucketLoader(tmp_path, without))
    assert "short" in batch["captions"] or any(
        c.count(".") == 2 for c in batch["captions"]
    )  # the policy acts


def test_a_corrupt_sample_is_skipped_with_a_warning_and_the_run_goes_on(
    tmp_path: Path, image_bytes, caplog: pytest.LogCaptureFixture
) -> None:
    good = image_bytes(32, 32, seed=1)
    _write_custom_shards(
        tmp_path, [("ok1", good, 1.0, None), ("bad", good[:40], 1.0, None), ("ok2", good, 1.0, None)]
    )
    with caplog.at_level(logging.WARNING, logger="infinity_data.loader"):
        batches = list(BucketLoader(tmp_path, LoaderConfig(batch_size=3, num_workers=0)))
    assert [sorted(b["keys"]) for b in batches] == [["ok1", "ok2"]]
    assert batches[0]["images"].shape[0] == 2
    assert any(
        "skipping corrupt sample" in r.getMessage() and "shard-000000.tar" in r.getMessage()
        for r in caplog.records
    )


def test_reference_caption_policy_is_deterministic_per_seed_and_epoch(tmp_path: Path, image_bytes) -> None:
    with ShardWriter(tmp_path) as writer:
        for i in range(40):
            meta = {
                "template": 1.0,
                "caption": f"Caption {i}. Second sentence. Third one here.",
                "caption_type": "vlm",
            }
            writer.write(ShardSample(f"k{i}", image_bytes(16, 16, seed=i), "jpg", meta))
    ShardIndex.scan(tmp_path).save()
    config = LoaderConfig.preset("reference", batch_size=8, num_workers=0)

    def captions(loader: BucketLoader) -> dict[str, str]:
        return {k: c for b in loader for k, c in zip(b["keys"], b["captions"], strict=True)}

    loader = BucketLoader(tmp_path, config)
    epoch0, epoch1 = captions(loader), captions(loader)
    assert epoch0 == captions(BucketLoader(tmp_path, config))  # same seed and epoch -> same choices
    assert epoch0 != epoch1  # drawn again each epoch
    # 3 sentences, n_short = 2 (first sentence < 15 words): the 2-sentence short form or all 3 sentences
    assert {c.count(".") for c in epoch0.values()} == {2, 3}
    plain = captions(BucketLoader(tmp_path, LoaderConfig(batch_size=8, num_workers=0)))
    assert all(c.endswith("Third one here.") for c in plain.values())


def test_bucket_restriction_and_helpful_errors(dataset: Path, tmp_path: Path) -> None:
    only = BucketLoader(dataset, LoaderConfig(batch_size=2, num_workers=0, buckets=("1.000",)))
    assert {b["template"] for b in only} == {1.0}
    assert len(only) == math.ceil(6 / 2)
    with pytest.raises(ValueError, match=r"buckets \['9.000'\] are not in"):
        BucketLoader(dataset, LoaderConfig(buckets=("9.000",)))
    with pytest.raises(FileNotFoundError, match=r"index\.json"):
        BucketLoader(tmp_path)
    with pytest.raises(ValueError, match="pixel budget"):
        LoaderConfig(pn="2M")


def test_loader_reads_shards_written_by_plain_tarfile_in_streaming_order(dataset: Path) -> None:
    """WebDataset readers stream members in order and group them by key; our shards keep members of a
    sample consecutive with names <key>.<ext>, so a streaming tar reader sees whole samples."""
    import tarfile

    shard = dataset / ShardIndex.load(dataset).shards[0].path
    with tarfile.open(shard, "r|") as stream:
        names = [m.name for m in stream]
    keys = [n.split(".", 1)[0] for n in names]
    assert [n.split(".", 1)[1] for n in names] == ["json", "jpg"] * 2
    assert keys[0] == keys[1] != keys[2] == keys[3]
    decoded = decode_rgb(io.BytesIO(next(iter(read_shard(shard)))[1]["jpg"]).getvalue())
    assert decoded.mode == "RGB"


def test_shards_read_with_the_webdataset_library(dataset: Path) -> None:
    """Runs where `webdataset` is installed (it is not a dependency of this package)."""
    wds = pytest.importorskip("webdataset")
    urls = [str(dataset / s.path) for s in ShardIndex.load(dataset).shards]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert len(samples) == 48
    assert all(s["jpg"].mode == "RGB" and s["json"]["caption"].startswith("caption") for s in samples)
    assert {s["__key__"] for s in samples} == set(_key_buckets(dataset))


def test_samples_are_shuffled_within_and_across_shards(dataset: Path) -> None:
    shard_of = {
        key: s.path
        for s in ShardIndex.load(dataset).shards
        for key, _ in read_shard(dataset / s.path, exts=())
    }
    batches = _epoch_keys(BucketLoader(dataset, LoaderConfig(batch_size=3, num_workers=0, seed=1)))
    assert any(len({shard_of[k] for k in keys}) > 1 for keys in batches)  # one batch mixes shards
    stored_order = list(shard_of)
    yielded = [k for keys in batches for k in keys]
    assert yielded != stored_order and sorted(yielded) == sorted(stored_order)
    # a window of one shard keeps each batch's samples within few shards but still permutes them
    narrow = _epoch_keys(
        BucketLoader(dataset, LoaderConfig(batch_size=2, num_workers=0, seed=1, shuffle_window=1))
    )
    assert all(len({shard_of[k] for k in keys}) == 1 for keys in narrow)  # 2-sample shards, window 1
