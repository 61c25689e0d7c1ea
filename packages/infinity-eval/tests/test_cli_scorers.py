"""`imagereward` and `hps` subcommands: layouts, resume and official aggregation, with stub scorers in place of
EVAL-B's networks (whose own tests cover the models)."""

import json
from pathlib import Path

import pytest
from infinity_eval import hps, imagereward
from infinity_eval.cli import main
from infinity_eval.prompts import imagereward_prompts
from PIL import Image


class StubScorer:
    calls = 0

    def __init__(self, tmp: Path):
        self.weights_file = tmp / "w.pt"
        self.vocab_file = tmp / "vocab.txt"
        self.weights_file.write_bytes(b"w")
        self.vocab_file.write_bytes(b"v")

    def score(self, prompts, images):
        StubScorer.calls += len(images)
        return [img.getpixel((0, 0))[0] / 255.0 for img in images]

    def options(self):
        return {"hps_version": "v2.1", "hps_antialias": True}


@pytest.fixture
def stub(monkeypatch, tmp_path):
    StubScorer.calls = 0
    scorer = StubScorer(tmp_path)
    monkeypatch.setattr(
        imagereward.ImageRewardScorer, "from_pretrained", classmethod(lambda cls, *a, **k: scorer)
    )
    monkeypatch.setattr(hps.HPSv21Scorer, "from_pretrained", classmethod(lambda cls, *a, **k: scorer))
    return scorer


def test_imagereward_cli_scores_the_infinity_layout_with_the_mean_of_prompt_means(tmp_path, stub):
    prompts = imagereward_prompts()[:2]
    root = tmp_path / "ir"
    for p, values in zip(prompts, ([255, 0, 0], [51]), strict=True):
        (root / p["id"]).mkdir(parents=True)
        for i, v in enumerate(values):
            Image.new("RGB", (8, 8), (v, 0, 0)).save(root / p["id"] / f"{p['id']}_{i}.jpg", quality=100)
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    args = [
        "imagereward",
        str(root),
        "--prompts",
        str(tmp_path / "prompts.json"),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    assert main(args) == 0
    s = json.loads((tmp_path / "run/summary.json").read_text())
    assert s["prompts"] == 2 and s["images"] == 4
    assert s["imagereward"] == pytest.approx((1 / 3 + 0.2) / 2, abs=0.01)  # mean of per-prompt means
    assert s["imagereward_image_mean"] == pytest.approx((1 + 0.2) / 4, abs=0.01)
    assert [w["file"] for w in s["header"]["weights"]] == ["w.pt", "vocab.txt"]
    assert StubScorer.calls == 4
    assert main(args) == 0 and StubScorer.calls == 4  # resumed: nothing rescored


def test_hps_cli_reads_style_folders_with_user_prompts_and_reports_missing_images(tmp_path, stub):
    root, prompts_dir = tmp_path / "hps", tmp_path / "prompts"
    prompts_dir.mkdir()
    for style in ("anime", "concept-art", "paintings", "photo"):
        (prompts_dir / f"{style}.json").write_text(json.dumps([f"{style} {i}" for i in range(3)]))
        (root / style).mkdir(parents=True)
        for i in range(2 if style == "photo" else 3):
            Image.new("RGB", (8, 8), (255 if i == 0 else 0, 0, 0)).save(
                root / style / f"{i:05d}.jpg", quality=100
            )
    args = [
        "hps",
        str(root),
        "--prompts-dir",
        str(prompts_dir),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    assert main(args) == 0
    s = json.loads((tmp_path / "run/summary.json").read_text())
    assert s["styles"]["anime"]["images"] == 3 and s["styles"]["photo"]["images"] == 2
    assert s["styles"]["anime"]["hps"] == pytest.approx(100 / 3, abs=1)
    assert s["missing_images"] == ["photo/00002: image missing"]
    assert s["header"]["options"]["hps_version"] == "v2.1"
    assert main(["hps", str(root), "--out", str(tmp_path / "run2")]) == 2  # folder without --prompts-dir
