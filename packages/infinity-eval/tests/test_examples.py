"""The repository's examples/evaluate_folder.py scores a GenEval-layout folder as a script, offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from infinity_eval.geneval.shapes import SHAPES_PALETTE
from PIL import Image, ImageDraw

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"

# (metadata, drawing of a matching image) per prompt
PROMPTS = [
    (
        {"tag": "single_object", "include": [{"class": "square", "count": 1}], "prompt": "a photo of a square"},
        lambda d: d.rectangle((20, 20, 59, 59), fill=SHAPES_PALETTE["green"]),
    ),
    (
        {"tag": "counting", "include": [{"class": "circle", "count": 2}], "prompt": "a photo of two circles"},
        lambda d: (d.ellipse((5, 30, 40, 65), fill=SHAPES_PALETTE["red"]), d.ellipse((70, 30, 105, 65), fill=SHAPES_PALETTE["red"])),
    ),
    (
        {"tag": "colors", "include": [{"class": "triangle", "count": 1, "color": "blue"}], "prompt": "a photo of a blue triangle"},
        lambda d: d.polygon([(60, 10), (20, 80), (100, 80)], fill=SHAPES_PALETTE["blue"]),
    ),
]  # fmt: skip


def write_geneval_folder(root: Path) -> Path:
    """Per prompt: sample 0000 matches it, sample 0001 is an empty canvas (wrong for every prompt)."""
    for index, (meta, draw) in enumerate(PROMPTS):
        samples = root / f"{index:05d}" / "samples"
        samples.mkdir(parents=True)
        (root / f"{index:05d}" / "metadata.jsonl").write_text(json.dumps(meta) + "\n")
        good = Image.new("RGB", (112, 96), (255, 255, 255))
        draw(ImageDraw.Draw(good))
        good.save(samples / "0000.png")
        Image.new("RGB", (112, 96), (255, 255, 255)).save(samples / "0001.png")
    return root


def test_evaluate_folder_example_scores_matching_images_correct_and_empty_ones_wrong(tmp_path: Path) -> None:
    folder = write_geneval_folder(tmp_path / "images")
    out = tmp_path / "results"
    cmd = [sys.executable, str(EXAMPLES / "evaluate_folder.py"), str(folder), "-o", str(out)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "GenEval overall 0.5000 on 6 images" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tags"] == {"single_object": 0.5, "counting": 0.5, "colors": 0.5}
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    verdicts = {
        (Path(r["filename"]).parent.parent.name, Path(r["filename"]).name): r["correct"] for r in rows
    }
    assert verdicts == {(f"{i:05d}", f"000{s}.png"): s == 0 for i in range(3) for s in range(2)}
