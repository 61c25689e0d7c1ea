"""The `infinity-eval` CLI end to end on small folders: prompts, fid, geneval (with a plugged detector, resume)."""

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from infinity_eval.cli import main
from infinity_eval.fid import api as fid_api
from infinity_eval.fid import compute_fid, load_fid_inception
from infinity_eval.generate import generate_benchmark
from infinity_eval.io import read_geneval_folder, read_manifest
from infinity_eval.prompts import PromptItem, benchmark_prompts, geneval_metadata
from PIL import Image


def test_the_old_out_flag_still_works_and_warns_that_it_is_deprecated(tmp_path, capsys):
    assert main(["prompts", "imagereward", "--out", str(tmp_path / "ir.jsonl")]) == 0
    assert len((tmp_path / "ir.jsonl").read_text().splitlines()) == 100
    assert "--out is deprecated and will be removed; use -o/--output" in capsys.readouterr().err


def test_a_missing_output_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prompts", "geneval"])
    assert exit_info.value.code == 2
    assert "-o/--output" in capsys.readouterr().err


def test_every_subcommand_has_a_function_in_the_commands_table():
    import argparse

    from infinity_eval.cli import COMMANDS, build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(COMMANDS)


def test_weight_errors_share_the_package_base_error_and_keep_their_builtin_bases():
    from infinity_eval import InfinityEvalError
    from infinity_eval.weights import WeightsChecksumError, WeightsNotFoundError

    assert issubclass(WeightsNotFoundError, InfinityEvalError) and issubclass(
        WeightsNotFoundError, FileNotFoundError
    )
    assert issubclass(WeightsChecksumError, InfinityEvalError) and issubclass(
        WeightsChecksumError, ValueError
    )


def test_prompts_command_writes_the_shipped_lists(tmp_path):
    assert main(["prompts", "geneval", "-o", str(tmp_path / "g.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert len(rows) == 553 and rows[0]["images"] == 4 and rows[0]["geneval"]["tag"] == "single_object"
    assert main(["prompts", "geneval", "--format", "txt", "--output", str(tmp_path / "g.txt")]) == 0
    shipped = Path(__file__).parents[1] / "src/infinity_eval/data/geneval/generation_prompts.txt"
    assert (tmp_path / "g.txt").read_text().splitlines() == shipped.read_text().splitlines()
    assert main(["prompts", "imagereward", "--out", str(tmp_path / "ir.jsonl")]) == 0
    assert len((tmp_path / "ir.jsonl").read_text().splitlines()) == 100
    assert (
        main(["prompts", "hps", "--out", str(tmp_path / "h.jsonl")]) == 2
    )  # prompts not shipped: clear error


def _run_module_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m infinity_eval.cli ARGS` in its own process group, killed as a group whatever happens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "infinity_eval.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=600)  # a hang guard, not a timing
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_python_dash_m_cli_exits_zero_on_success_and_two_on_a_usage_error(tmp_path):
    done = _run_module_cli(["prompts", "geneval", "--out", str(tmp_path / "g.jsonl")], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote 553 geneval prompts" in done.stdout
    assert len((tmp_path / "g.jsonl").read_text().splitlines()) == 553
    failed = _run_module_cli(["prompts", "hps", "--out", str(tmp_path / "h.jsonl")], tmp_path)
    assert failed.returncode == 2 and "infinity-eval prompts: error:" in failed.stderr


def _write_images(folder: Path, seed: int, n: int = 2) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")


@pytest.mark.slow
def test_fid_cli_scores_one_folder_against_another_and_caches_the_reference(
    tmp_path, random_fid_weights, capsys, monkeypatch, fast_sqrtm
):
    # CPU Inception forwards at 299x299 are slow on a busy machine: 2 + 2 images, each extracted once; the
    # 2048x2048 sqrtm is replaced by its exact low-rank equivalent (verified in test_fid_frechet).
    _write_images(tmp_path / "a", 0)
    _write_images(tmp_path / "b", 1)
    args = [
        "fid",
        str(tmp_path / "a"),
        str(tmp_path / "b"),
        "--weights",
        str(random_fid_weights),
        "--no-progress",
    ]
    assert main([*args, "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]) == 0
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["fid"] > 0 and summary["n_a"] == summary["n_b"] == 2
    assert summary["header"]["options"]["protocol"] == "pytorch-fid"
    assert summary["header"]["weights"][0]["file"] == "pt_inception-2015-12-05-6726825d.pth"
    assert len(summary["header"]["weights"][0]["sha256"]) == 64
    assert any("rank-deficient" in w for w in summary["warnings"])
    assert len(list((tmp_path / "cache").glob("fid-stats-*.npz"))) == 1
    assert "FID" in capsys.readouterr().out

    # FID(b, b): b's fresh features against b's cached statistics -> 0, and the cache skips extraction
    backbone = load_fid_inception(random_fid_weights)
    calls = []
    real = fid_api.extract_features
    monkeypatch.setattr(
        fid_api, "extract_features", lambda paths, *a, **k: calls.append(len(paths)) or real(paths, *a, **k)
    )
    same = compute_fid(tmp_path / "b", tmp_path / "b", cache_dir=tmp_path / "cache", backbone=backbone)
    assert calls == [2]
    stats = np.load(next((tmp_path / "cache").glob("fid-stats-*.npz")))
    assert abs(same.fid) < 1e-6 * float(np.trace(stats["sigma"]))


def _geneval_folder(root: Path, indices=(0, 161)) -> None:
    """Two shipped prompts (0: single_object bench, 161+: a colors prompt), 2 samples each, with sidecar detections."""
    meta = geneval_metadata()
    for idx in indices:
        m = meta[idx]
        folder = root / f"{idx:05d}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(m) + "\n")
        cls = m["include"][0]["class"]
        color = m["include"][0].get("color")
        for s in range(2):
            img = Image.new("RGB", (64, 64), (0, 0, 255))
            if color is not None:
                img.paste((255, 0, 0) if color == "red" and s == 0 else (0, 255, 0), (0, 0, 32, 32))
            img.save(folder / "samples" / f"{s:04d}.png")
            dets = {cls: [[0, 0, 32, 32, 0.95 if s == 0 else 0.2]]}
            (folder / "samples" / f"{s:04d}.png.dets.json").write_text(json.dumps(dets))


def test_geneval_cli_runs_end_to_end_with_an_import_path_detector_and_resumes(
    tmp_path, plugins_on_path, capsys
):
    meta = geneval_metadata()
    color_idx = next(
        i for i, m in enumerate(meta) if m["tag"] == "colors" and m["include"][0]["color"] == "red"
    )
    _geneval_folder(tmp_path / "imgs", (0, color_idx))
    args = [
        "geneval", str(tmp_path / "imgs"), "--out", str(tmp_path / "run"), "--no-progress",
        "--detector", "fake_plugins:OracleDetector", "--color-classifier", "fake_plugins:DominantChannelColors",
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    # sample 0 of each prompt is right (score 0.95, red crop), sample 1 is wrong (score 0.2 < 0.3)
    assert summary["tags"] == {"colors": 0.5, "single_object": 0.5}
    assert summary["overall"] == 0.5 and summary["images"] == 4 and summary["prompts"] == 2
    assert summary["correct_prompts_pct"] == 100.0 and summary["metadata_differs_from_shipped"] == []
    per_tag = list(csv.DictReader((tmp_path / "run/per_tag.csv").read_text().splitlines()))
    assert [(r["tag"], r["correct"], r["images"]) for r in per_tag] == [
        ("single_object", "1", "2"),
        ("colors", "1", "2"),
    ]
    printed = capsys.readouterr().out
    assert "single_object    = 50.00% (1 / 2)\ncolors           = 50.00% (1 / 2)\n" in printed
    assert printed.endswith("Overall score (avg. over tasks): 0.50000\n")
    assert len(list(csv.DictReader((tmp_path / "run/per_prompt.csv").read_text().splitlines()))) == 2
    assert len(plugins_on_path.CALLS) == 4

    # simulated crash: the last row was half written; the rerun redoes only that image
    results = tmp_path / "run/results.jsonl"
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])
    plugins_on_path.CALLS.clear()
    assert main(args) == 0
    assert len(plugins_on_path.CALLS) == 1
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert len(rows) == 4 and len({r["image"] for r in rows}) == 4
    assert json.loads((tmp_path / "run/summary.json").read_text())["overall"] == 0.5


def test_geneval_cli_accepts_precomputed_detections_and_shards(tmp_path):
    _geneval_folder(tmp_path / "imgs", (0, 1))
    records = read_geneval_folder(tmp_path / "imgs")
    with open(tmp_path / "dets.jsonl", "w") as f:
        for r in records:
            dets = json.loads(Path(str(r.image) + ".dets.json").read_text())
            f.write(json.dumps({"image": str(r.image), "detections": dets}) + "\n")
    base = [
        "geneval",
        str(tmp_path / "imgs"),
        "--out",
        str(tmp_path / "run"),
        "--detections",
        str(tmp_path / "dets.jsonl"),
        "--no-progress",
    ]
    assert main([*base, "--shard", "0/2"]) == 0
    assert main([*base, "--shard", "1/2"]) == 0
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["images"] == 4 and summary["tags"] == {"single_object": 0.5}
    assert sorted(p.name for p in (tmp_path / "run").glob("results*.jsonl")) == [
        "results.shard-0-of-2.jsonl",
        "results.shard-1-of-2.jsonl",
    ]


def test_geneval_cli_without_a_detector_or_colour_classifier_fails_clearly(tmp_path, capsys, plugins_on_path):
    _geneval_folder(tmp_path / "imgs", (0,))
    assert main(["geneval", str(tmp_path / "imgs"), "--out", str(tmp_path / "run")]) == 2
    assert "exactly one of --detector" in capsys.readouterr().err


def test_generate_writes_the_official_layout_and_a_manifest_and_resumes(tmp_path, plugins_on_path):
    gen = plugins_on_path.solid_generator()
    items = benchmark_prompts("geneval", images_per_prompt=2)[:3]
    manifest = generate_benchmark(gen, items, tmp_path / "out", benchmark="geneval", batch_size=4)
    records = read_geneval_folder(tmp_path / "out")
    assert len(records) == 6 and records[0].meta == items[0].meta
    assert len(read_manifest(manifest)) == 6
    first = (tmp_path / "out/00000/samples/0000.png").stat().st_mtime_ns
    generate_benchmark(gen, items, tmp_path / "out", benchmark="geneval")
    assert (tmp_path / "out/00000/samples/0000.png").stat().st_mtime_ns == first
    ir = generate_benchmark(
        gen,
        benchmark_prompts("imagereward", 2)[:2],
        tmp_path / "ir",
        benchmark="imagereward",
        image_format="jpg",
    )
    assert all(r.image.suffix == ".jpg" and r.image.parent.name == r.prompt_id for r in read_manifest(ir))


def test_generate_gives_repeated_prompts_their_own_seeds_when_items_set_them(tmp_path):
    seen: list[tuple[str, int]] = []

    def gen(prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        seen.extend(zip(prompts, seeds, strict=True))
        return [Image.new("RGB", (8, 8)) for _ in prompts]

    repeated = [PromptItem(f"{k:05d}", "a red circle", 2, "single_object", seed=100 * k) for k in range(3)]
    shared = [PromptItem("00003", "a red circle", 2, "single_object")]
    generate_benchmark(gen, [*repeated, *shared], tmp_path / "out", benchmark="geneval", batch_size=3, seed=7)
    assert [s for _, s in seen] == [0, 1, 100, 101, 200, 201, 7, 8]


def test_fid_shard_statistics_merge_by_summation(tmp_path):
    from infinity_eval.fid import FeatureStatistics

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2048))
    FeatureStatistics.from_features(x[:10]).save(tmp_path / "s0.npz")
    FeatureStatistics.from_features(x[10:]).save(tmp_path / "s1.npz")
    args = ["fid", "--merge-stats", str(tmp_path / "s0.npz"), str(tmp_path / "s1.npz")]
    assert main([*args, "--save-stats", str(tmp_path / "all.npz")]) == 0
    merged = FeatureStatistics.load(tmp_path / "all.npz")
    assert merged.n == 30
    np.testing.assert_allclose(merged.sigma, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    assert main(args) == 2  # --save-stats is required


@pytest.fixture
def weight_loading_raises(monkeypatch):
    """Any attempt to resolve or load FID Inception weights fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("FID Inception weights were loaded")

    import torch
    from infinity_eval import fid
    from infinity_eval.fid import checkpoint

    for module in (fid, fid_api, checkpoint):
        monkeypatch.setattr(module, "load_fid_inception", refuse)
    monkeypatch.setattr(checkpoint, "resolve_fid_weights", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch.jit, "load", refuse)


def _statistics_files(tmp_path: Path, meta: dict | None) -> tuple[Path, Path]:
    from infinity_eval.fid import FeatureStatistics

    rng = np.random.default_rng(3)
    paths = []
    for name, shift in (("a", 0.0), ("b", 0.5)):
        stats = FeatureStatistics.from_features(
            rng.normal(size=(100, 64)) + shift
        )  # small stand-in for pool3
        path = tmp_path / f"{name}.npz"
        if meta is None:  # pytorch-fid's own format: mu and sigma only
            np.savez(path, mu=stats.mu, sigma=stats.sigma)
        else:
            stats.meta = dict(meta)
            stats.save(path)
        paths.append(path)
    return paths[0], paths[1]


def test_fid_of_two_statistics_files_needs_no_inception_weights(tmp_path, weight_loading_raises, capsys):
    from infinity_eval.fid import FeatureStatistics, frechet_distance

    a, b = _statistics_files(
        tmp_path, {"protocol": "pytorch-fid", "backbone": "pytorch-fid", "weights_sha256": "ab" * 32}
    )
    assert main(["fid", str(a), str(b), "--out", str(tmp_path / "run")]) == 0
    sa, sb = FeatureStatistics.load(a), FeatureStatistics.load(b)
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["fid"] == pytest.approx(frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma), rel=1e-12)
    assert summary["header"]["weights"] == []
    assert summary["header"]["options"]["backbone"] == "pytorch-fid (precomputed statistics)"
    assert "backbone pytorch-fid (precomputed statistics)" in capsys.readouterr().out
    # the API too, and one .npz input copied with --save-stats
    assert compute_fid(a, b).fid == pytest.approx(summary["fid"], rel=1e-12)
    assert main(["fid", str(a), "--save-stats", str(tmp_path / "copy.npz")]) == 0
    np.testing.assert_array_equal(FeatureStatistics.load(tmp_path / "copy.npz").sigma, sa.sigma)


def test_statistics_without_a_recorded_protocol_are_refused_under_another_protocol(
    tmp_path, weight_loading_raises, capsys
):
    a, b = _statistics_files(tmp_path, None)
    assert main(["fid", str(a), str(b), "--protocol", "clean"]) == 2
    err = capsys.readouterr().err
    assert (
        f"{a} records no FID protocol" in err and "taken to be 'pytorch-fid' statistics, not 'clean'" in err
    )
    assert "--protocol pytorch-fid" in err and "--stats-protocol clean" in err
    # declared by the user: accepted, and the assumption is recorded
    assert (
        main(
            [
                "fid",
                str(a),
                str(b),
                "--protocol",
                "clean",
                "--stats-protocol",
                "clean",
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "c/summary.json").read_text())
    assert summary["protocol_assumed"] == {"a": "clean", "b": "clean"}
    # pytorch-fid's files under pytorch-fid (the default): accepted, assumption recorded
    assert main(["fid", str(a), str(b), "--out", str(tmp_path / "p")]) == 0
    summary = json.loads((tmp_path / "p/summary.json").read_text())
    assert summary["protocol_assumed"] == {"a": "pytorch-fid", "b": "pytorch-fid"}
    assert summary["header"]["options"]["backbone"] == "unrecorded (precomputed statistics)"
    # a recorded protocol must equal --protocol; the message says which one to pass
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    ca, cb = _statistics_files(recorded, {"protocol": "clean"})
    capsys.readouterr()
    assert main(["fid", str(ca), str(cb)]) == 2
    assert (
        "computed with protocol 'clean', not 'pytorch-fid': run with --protocol clean"
        in capsys.readouterr().err
    )
    assert main(["fid", str(ca), str(cb), "--protocol", "clean", "--stats-protocol", "pytorch-fid"]) == 0
