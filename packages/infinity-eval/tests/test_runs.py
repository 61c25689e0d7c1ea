"""Append-only results: resume, crash tolerance, no duplicates, shards."""

import json

import pytest
from infinity_eval.runs import ResultStore, Shard, read_all_results


def row(i, protocol="p1"):
    return {
        "metric": "m",
        "protocol": protocol,
        "weights": "w",
        "image": f"img{i}.png",
        "prompt_id": str(i),
        "sample_index": "0",
        "score": float(i),
    }


def test_rerun_skips_existing_keys_and_never_duplicates(tmp_path):
    store = ResultStore(tmp_path / "results.jsonl")
    assert store.append([row(0), row(1)]) == 2
    again = ResultStore(tmp_path / "results.jsonl")
    assert again.append([row(1), row(2)]) == 1
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["prompt_id"] for x in lines] == ["0", "1", "2"]


def test_half_written_last_line_after_a_crash_is_dropped_and_redone(tmp_path):
    path = tmp_path / "results.jsonl"
    ResultStore(path).append([row(0), row(1)])
    with open(path, "a") as f:
        f.write(json.dumps(row(2))[:25])  # crash mid-write
    store = ResultStore(path)
    assert len(store.rows) == 2
    assert store.append([row(2)]) == 1
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["prompt_id"] for r in rows] == ["0", "1", "2"]


def test_complete_last_row_missing_only_its_newline_is_kept(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(row(0)) + "\n" + json.dumps(row(1)))
    store = ResultStore(path)
    assert len(store.rows) == 2
    store.append([row(2)])
    assert len(path.read_text().splitlines()) == 3


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(row(0)) + "\n{oops\n" + json.dumps(row(1)) + "\n")
    with pytest.raises(ValueError, match=r"results\.jsonl:2"):
        ResultStore(path)


def test_shards_partition_the_sorted_work_and_summaries_merge_them(tmp_path):
    items = [f"img{i}" for i in range(10)]
    parts = [Shard.parse(f"{i}/3").select(items, key=str) for i in range(3)]
    flat = [x for part in parts for x in part]
    assert sorted(flat) == sorted(items) and len(set(flat)) == 10
    for i in range(3):
        ResultStore(tmp_path / f"results{Shard(i, 3).suffix}.jsonl").append([row(j) for j in range(i, 10, 3)])
    ResultStore(tmp_path / "results.jsonl").append(
        [row(0), row(1, protocol="p2")]
    )  # a duplicate + another protocol
    rows, other = read_all_results(tmp_path, "m", "p1")
    assert len(rows) == 10 and other == {"p2": 1}
    with pytest.raises(ValueError, match="i/n"):
        Shard.parse("3/3")
