"""Image inputs in object storage: a real S3-compatible server (moto's server mode) and an HTTP server, both on
a free 127.0.0.1 port and stopped in `finally`, give exactly the results of the same files on local disk."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from infinity_eval.cli import _input, main
from infinity_eval.fid import FeatureStatistics
from infinity_eval.fid import api as fid_api
from infinity_eval.geneval import PrecomputedDetector
from infinity_eval.geneval.shapes import SHAPES_PALETTE
from infinity_eval.io import ImageRecord, read_geneval_folder, write_manifest
from infinity_eval.remote import RemoteInputError, local_images, redact
from infinity_eval.runs import run_header
from PIL import Image, ImageDraw

SHAPES = "infinity_eval.geneval.shapes"
# three prompts of the shapes world; sample 0 of each is right, sample 1 wrong
PROMPTS = [
    {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"},
    {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}], "prompt": "a red square"},
    {
        "tag": "counting",
        "include": [{"class": "triangle", "count": 2}],
        "exclude": [{"class": "triangle", "count": 3}],
        "prompt": "two triangles",
    },
]


def _draw(index: int, right: bool) -> Image.Image:
    image = Image.new("RGB", (96, 80), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    if index == 0:
        shape = draw.ellipse if right else draw.rectangle
        shape((20, 20, 59, 59), fill=SHAPES_PALETTE["green"])
    elif index == 1:
        draw.rectangle((20, 20, 49, 49), fill=SHAPES_PALETTE["red" if right else "blue"])
    else:
        for x in (5, 50) if right else (5,):
            draw.polygon([(x + 20, 10), (x, 50), (x + 40, 50)], fill=SHAPES_PALETTE["yellow"])
    return image


def _geneval_folder(root: Path) -> Path:
    for index, meta in enumerate(PROMPTS):
        folder = root / f"{index:05d}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
        _draw(index, True).save(folder / "samples" / "0000.png")
        _draw(index, False).save(folder / "samples" / "0001.jpg", quality=95)
    (root / "notes.txt").write_text("not an image: never copied")
    return root


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """``(s3://bucket, filesystem)``: a fresh bucket on moto's S3 server on a free loopback port. Objects are
    uploaded public-read, so the server also answers plain GETs of ``$AWS_ENDPOINT_URL/bucket/key``: the
    tests' http:// store."""
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
        fs = s3fs.S3FileSystem(skip_instance_cache=True, s3_additional_kwargs={"ACL": "public-read"})
        bucket = f"eval-{uuid.uuid4().hex[:12]}"  # moto's backend outlives one server: a fresh bucket
        fs.mkdir(bucket)
        yield f"s3://{bucket}", fs
    finally:
        server.stop()


def _upload(fs: Any, local: Path, url: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{url.removeprefix('s3://')}/{path.relative_to(local).as_posix()}")


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Temporary copies go to a folder the test can inspect (it must be empty after every command)."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _geneval(source: str, out: Path) -> tuple[dict[str, Any], dict[tuple[str, str], Any]]:
    args = ["geneval", source, "-o", str(out), "--no-progress", "--detector", f"{SHAPES}:ShapesDetector"]
    assert main([*args, "--color-classifier", f"{SHAPES}:PaletteColorClassifier"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    verdicts = {(r["prompt_id"], r["sample_index"]): (r["correct"], r["reason"], r["details"]) for r in rows}
    return summary, verdicts


def _comparable(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "header"}


def test_geneval_of_a_folder_in_s3_or_a_manifest_over_http_equals_the_local_folder(
    tmp_path: Path, s3: tuple[str, Any], private_tmp: Path
) -> None:
    local = _geneval_folder(tmp_path / "images")
    summary, verdicts = _geneval(str(local), tmp_path / "local")
    assert summary["tags"] == {"single_object": 0.5, "colors": 0.5, "counting": 0.5}  # not a vacuous run
    assert len(verdicts) == 6

    bucket, fs = s3
    _upload(fs, local, f"{bucket}/runs/geneval")
    remote_summary, remote_verdicts = _geneval(f"{bucket}/runs/geneval/", tmp_path / "s3")
    assert _comparable(remote_summary) == _comparable(summary) and remote_verdicts == verdicts
    rows = [json.loads(x) for x in (tmp_path / "s3/results.jsonl").read_text().splitlines()]
    assert sorted(r["image"] for r in rows) == sorted(
        f"{bucket}/runs/geneval/{i:05d}/samples/{n}" for i in range(3) for n in ("0000.png", "0001.jpg")
    )
    assert list(private_tmp.iterdir()) == []  # the temporary copy is gone

    # a rerun resumes by URL: nothing is scored twice, although the copy lands in a new temporary folder
    _geneval(f"{bucket}/runs/geneval", tmp_path / "s3")
    assert len((tmp_path / "s3/results.jsonl").read_text().splitlines()) == 6

    # http(s) folders cannot be listed; a manifest names the images relative to it
    write_manifest(read_geneval_folder(local), local / "manifest.jsonl")
    _upload(fs, local, f"{bucket}/runs/geneval")
    url = f"{os.environ['AWS_ENDPOINT_URL']}/{bucket.removeprefix('s3://')}/runs/geneval"
    http_summary, http_verdicts = _geneval(f"{url}/manifest.jsonl", tmp_path / "http")
    assert _comparable(http_summary) == _comparable(summary) and http_verdicts == verdicts
    assert list(private_tmp.iterdir()) == []


@pytest.mark.slow
def test_fid_of_an_s3_folder_against_s3_statistics_equals_the_local_fid(
    tmp_path: Path,
    s3: tuple[str, Any],
    random_fid_weights: Path,
    fast_sqrtm: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(0)
    local = tmp_path / "a"
    local.mkdir()
    for i, size in enumerate([(48, 40), (56, 40)]):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(local / f"{i}.png")
    reference = FeatureStatistics.from_features(rng.normal(size=(6, 2048)))
    reference.meta = {"protocol": "pytorch-fid", "backbone": "pytorch-fid"}
    reference.save(local / "ref.npz")  # not an image: the folder's listing skips it
    bucket, fs = s3
    _upload(fs, local, f"{bucket}/a")
    common = ["--weights", str(random_fid_weights), "--no-progress"]

    assert main(["fid", str(local), str(local / "ref.npz"), "-o", str(tmp_path / "local"), *common]) == 0
    assert main(["fid", f"{bucket}/a", f"{bucket}/a/ref.npz", "-o", str(tmp_path / "s3"), *common]) == 0
    here, there = (json.loads((tmp_path / f"{r}/summary.json").read_text()) for r in ("local", "s3"))
    assert there["fid"] == here["fid"] and there["n_a"] == here["n_a"] == 2
    assert (there["a"], there["b"]) == (f"{bucket}/a", f"{bucket}/a/ref.npz")

    # statistics of a folder in a store are cached by URL and content: the second run extracts nothing
    calls: list[int] = []
    real = fid_api.extract_features
    monkeypatch.setattr(
        fid_api, "extract_features", lambda p, *a, **k: calls.append(len(p)) or real(p, *a, **k)
    )
    for name in ("s1.npz", "s2.npz"):
        args = [
            "fid",
            f"{bucket}/a",
            "--save-stats",
            str(tmp_path / name),
            "--cache-dir",
            str(tmp_path / "c"),
        ]
        assert main([*args, *common]) == 0
    assert calls == [2]
    s1, s2 = (FeatureStatistics.load(tmp_path / n) for n in ("s1.npz", "s2.npz"))
    assert s1.meta["source"] == f"{bucket}/a" and np.array_equal(s1.mu, s2.mu)


def test_a_url_is_never_a_local_path_and_unknown_schemes_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _input("s3://bucket/images") == "s3://bucket/images" and _input("images") == Path("images")
    with local_images(f"file://{tmp_path}") as local:  # a local path spelt as a URL is read in place
        assert local.path == tmp_path and local.url is None
    assert main(["geneval", "ftp://user:hunter2@host/images", "-o", "run", "--detector", "x:y"]) == 2
    err = capsys.readouterr().err
    assert "URL scheme 'ftp' is not supported" in err and "s3://" in err and "hunter2" not in err
    assert main(["fid", "webdav://host/a", "webdav://host/b"]) == 2
    assert "URL scheme 'webdav' is not supported" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no 'ftp:' or 'run' folder was made


def _refusal(location: str) -> str:
    """The message of the RemoteInputError that opening ``location`` raises."""
    with pytest.raises(RemoteInputError) as info, local_images(location):
        pass
    return str(info.value)


def test_a_missing_extra_is_refused_with_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # import fails, find_spec says "not installed"
    message = _refusal("gs://bucket/images")
    assert "gs:// needs the gcsfs package" in message and "pip install 'infinity-eval[gcs]'" in message
    monkeypatch.setitem(sys.modules, "s3fs", None)
    assert main(["fid", "s3://bucket/a", "s3://bucket/b.npz"]) == 2
    assert "pip install 'infinity-eval[s3]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "fsspec", None)  # fsspec comes with every remote extra
    message = _refusal("https://host/m.jsonl")
    assert "needs the fsspec package" in message and "infinity-eval[http]" in message


def test_http_folders_cannot_be_listed_and_unsafe_names_are_refused(
    tmp_path: Path, s3: tuple[str, Any], private_tmp: Path
) -> None:
    bucket, fs = s3
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "../secret.png"}) + "\n")
    fs.put_file(str(tmp_path / "m.jsonl"), f"{bucket.removeprefix('s3://')}/m.jsonl")
    url = f"{os.environ['AWS_ENDPOINT_URL']}/{bucket.removeprefix('s3://')}"
    assert "http(s) folders cannot be listed; give the URL of a JSONL" in _refusal(f"{url}/images")
    assert "m.jsonl:1: '../secret.png' is not a plain relative path" in _refusal(f"{url}/m.jsonl")
    assert _refusal(f"{url}/missing.jsonl").startswith(
        f"{url}/missing.jsonl: cannot read it (FileNotFoundError"
    )
    assert list(private_tmp.iterdir()) == []  # nothing left behind by the refused inputs


def test_a_missing_folder_in_a_bucket_is_named(s3: tuple[str, Any]) -> None:
    bucket, _ = s3
    assert _refusal(f"{bucket}/nothing") == f"{bucket}/nothing: no such folder (or it holds no objects)"


def test_redact_removes_user_info_and_signed_queries_from_every_url_in_a_text() -> None:
    text = "GET https://user:secret@host:9000/a/b.png?X-Amz-Signature=abc failed; s3://key:pw@bucket/x ok"
    assert redact(text) == "GET https://host:9000/a/b.png failed; s3://bucket/x ok"
    assert redact("/local/path with spaces.png") == "/local/path with spaces.png"


def test_the_recorded_command_line_carries_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        sys, "argv", ["infinity-eval", "fid", "https://u:secret@host/m.jsonl?sig=abc", "b.npz"]
    )
    header = run_header("fid", "p", {})
    assert header["command_line"] == ["infinity-eval", "fid", "https://host/m.jsonl", "b.npz"]


def test_precomputed_detections_may_name_images_by_url(tmp_path: Path) -> None:
    row = {
        "image": "s3://key:secret@bucket/g/00000/samples/0000.png",
        "detections": {"circle": [[1, 2, 3, 4, 0.9]]},
    }
    (tmp_path / "dets.jsonl").write_text(json.dumps(row) + "\n")
    copy = ImageRecord(tmp_path / "copy.png", url="s3://bucket/g/00000/samples/0000.png")
    (found,) = PrecomputedDetector(tmp_path / "dets.jsonl").detect(Image.new("RGB", (8, 8)), copy)["circle"]
    assert found.box == (1, 2, 3, 4) and found.score == pytest.approx(0.9)


class _RedScorer:
    """Stands in for the ImageReward/HPS networks (their own tests cover them): the score is pixel (0, 0)'s red."""

    def __init__(self, folder: Path) -> None:
        self.weights_file, self.vocab_file = folder / "w.pt", folder / "vocab.txt"
        self.weights_file.write_bytes(b"w")
        self.vocab_file.write_bytes(b"v")
        self.images = 0

    def score(self, prompts: list[str], images: list[Image.Image]) -> list[float]:
        self.images += len(images)
        return [image.getpixel((0, 0))[0] / 255.0 for image in images]

    def options(self) -> dict[str, Any]:
        return {"stub": True}


def test_imagereward_and_hps_of_folders_in_s3_equal_the_local_folders(
    tmp_path: Path, s3: tuple[str, Any], monkeypatch: pytest.MonkeyPatch, private_tmp: Path
) -> None:
    from infinity_eval import hps, imagereward

    scorer = _RedScorer(tmp_path)
    for cls in (imagereward.ImageRewardScorer, hps.HPSv21Scorer):
        monkeypatch.setattr(cls, "from_pretrained", classmethod(lambda cls, *a, **k: scorer))
    rng = np.random.default_rng(1)
    ir, styles, prompts = tmp_path / "ir", tmp_path / "hps", tmp_path / "prompts"
    for folder in (ir, prompts):
        folder.mkdir()
    ir_prompts = [{"id": "p1", "prompt": "a cat"}, {"id": "p2", "prompt": "a dog"}]
    (tmp_path / "ir.json").write_text(json.dumps(ir_prompts))
    for pid in ("p1", "p2"):
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(ir / f"{pid}_{i}.png")
    for style in ("anime", "concept-art", "paintings", "photo"):  # the four benchmark styles
        (prompts / f"{style}.json").write_text(json.dumps([f"{style} {i}" for i in range(3)]))
        (styles / style).mkdir(parents=True)
        for i in range(2):  # image 2 of each style is missing; upper-case extensions count, as locally
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
                styles / style / f"{i:05d}.JPG"
            )
    bucket, fs = s3
    _upload(fs, tmp_path, f"{bucket}/eval")
    commands = {
        "imagereward": (["--prompts", str(tmp_path / "ir.json")], "ir"),
        "hps": (["--prompts-dir", str(prompts)], "hps"),
    }
    for command, (flags, folder) in commands.items():
        summaries = []
        for where, source in (("local", str(tmp_path / folder)), ("s3", f"{bucket}/eval/{folder}")):
            out = tmp_path / "runs" / command / where
            assert main([command, source, *flags, "-o", str(out), "--no-progress"]) == 0
            summaries.append(_comparable(json.loads((out / "summary.json").read_text())))
            images = [json.loads(line)["image"] for line in (out / "results.jsonl").read_text().splitlines()]
            assert len(images) == (6 if command == "imagereward" else 8)
            assert all(i.startswith(f"{bucket}/eval/{folder}/") == (where == "s3") for i in images)
        assert summaries[0] == summaries[1]
    assert scorer.images == 2 * (6 + 8) and list(private_tmp.iterdir()) == []
