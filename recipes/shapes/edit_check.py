"""The shapes edit check: inpaint one object of a real two-object render and score the result exactly.

For each of N held-out renders with two coloured objects (new seed, rendered and resized exactly as training
images), the box of one object is masked (white = regenerate) and the prompt asks for another shape in another
colour at its place, naming the kept object too, in the world's caption form ("a photo of a red circle and a
blue square", reading order). The shapes detector then checks

  (a) kept: the unmasked object is still there, same shape and colour, its box overlapping the original (IoU >= 0.5);
  (b) edited: a detection of the asked shape and colour whose centre lies inside the masked box;

plus the GenEval verdict of the whole new caption, and the PSNR of the pixels outside the mask against the
tokenizer's reconstruction of the source (what the edit holds). Writes a JSON report and a before/after grid.

    uv run --no-sync python recipes/shapes/edit_check.py --edits 120 --out recipes/shapes/work/edit_check.json \\
        --grid recipes/shapes/edit-grid.png
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from bsq_tokenizer import image_to_tensor, resize_crop_for_template
from bsq_tokenizer.image import psnr
from infinity_data.shapes import COLORS, SHAPES, image_size, random_spec, render
from infinity_eval.geneval.rules import evaluate_detections
from infinity_eval.geneval.shapes import SHAPES_PALETTE, PaletteColorClassifier, ShapesDetector
from infinity_model import InfinityPipeline
from infinity_model.default_model import default_model_dir
from PIL import Image, ImageDraw

log = logging.getLogger("edit_check")

EDIT_CHECK_SEED = 6  # a draw of the world no other step uses
LONG_SIDE = 192  # rendered like the training images, then resize-cropped to the 0.016M template (128x128)
PN = "0.016M"


def _phrase(shape: str, color: str) -> str:
    return f"a {color} {shape}"


def make_cases(count: int, seed: int) -> list[dict]:
    """Two-object renders (1:1, 128x128), which object to regenerate, and the new caption and its spec."""
    rng = random.Random(seed)
    height, width = image_size(1.0, LONG_SIDE)
    cases = []
    for i in range(count):
        spec = random_spec(rng, "color_attr")
        image, objects = render(spec, height, width, rng)
        source = resize_crop_for_template(image, 1.0, PN)
        scale = source.width / image.width
        boxes = [tuple(round(v * scale) for v in o.box) for o in objects]
        masked = i % 2  # alternate: regenerate the first-named object, then the second
        old, kept = objects[masked], objects[1 - masked]
        new_shape = next(s for s in SHAPES if s not in (old.shape, kept.shape))  # two-object captions differ
        new_color = rng.choice([c for c in COLORS if c != old.color])
        named = [(kept.shape, kept.color), (new_shape, new_color)]
        if masked == 0:
            named.reverse()  # the caption names the objects in reading order, as the training captions do
        prompt = "a photo of " + " and ".join(_phrase(s, c) for s, c in named)
        new_spec = {
            "tag": "color_attr",
            "include": [{"class": s, "count": 1, "color": c} for s, c in named],
            "prompt": prompt,
        }
        cases.append({
            "source": source, "prompt": prompt, "spec": new_spec, "mask_box": boxes[masked],
            "kept": {"shape": kept.shape, "color": kept.color, "box": boxes[1 - masked]},
            "new": {"shape": new_shape, "color": new_color}, "old": {"shape": old.shape, "color": old.color},
        })  # fmt: skip
    return cases


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def detections_with_colour(image: Image.Image, detector: ShapesDetector) -> list[tuple[str, str, tuple]]:
    """(shape, palette colour, box) of every blob the shapes detector finds; colour = nearest to the blob's mean."""
    rgb = np.asarray(image.convert("RGB")).astype(np.float32)
    names = list(SHAPES_PALETTE)
    palette = np.asarray([SHAPES_PALETTE[n] for n in names], dtype=np.float32)
    found = []
    for shape, dets in detector.detect(image).items():
        for det in dets:
            mean = rgb[det.mask].mean(axis=0)
            colour = names[int(np.linalg.norm(palette - mean, axis=1).argmin())]
            found.append((shape, colour, tuple(det.box)))
    return found


def score_case(
    image: Image.Image, case: dict, detector: ShapesDetector, colours: PaletteColorClassifier
) -> dict:
    found = detections_with_colour(image, detector)
    kept = case["kept"]
    kept_ok = any(
        s == kept["shape"] and c == kept["color"] and _iou(box, kept["box"]) >= 0.5 for s, c, box in found
    )
    x1, y1, x2, y2 = case["mask_box"]
    edited_ok = any(
        s == case["new"]["shape"]
        and c == case["new"]["color"]
        and x1 <= (box[0] + box[2]) / 2 <= x2
        and y1 <= (box[1] + box[3]) / 2 <= y2
        for s, c, box in found
    )
    verdict = evaluate_detections(detector.detect(image), case["spec"], image=image, classify_colors=colours)
    return {"kept": kept_ok, "edited": edited_ok, "geneval": bool(verdict.correct)}


def _pixel_mask(box: tuple[int, ...], size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return mask


def run(args: argparse.Namespace) -> dict:
    pipe = InfinityPipeline.from_pretrained(default_model_dir(args.model_dir), device="cpu")
    g = pipe.generation
    schedule = pipe.schedule(1.0, PN)
    sampling = {
        **g.sampler_options(),
        "cfg": g.cfg if args.cfg is None else args.cfg,
        "candidates": g.candidates if args.candidates is None else args.candidates,
    }
    cases = make_cases(args.edits, args.seed)
    detector, colours = ShapesDetector(), PaletteColorClassifier()
    rows, psnrs, outputs = [], [], []
    squared, values = 0.0, 0
    t0 = time.time()
    for i, case in enumerate(cases):
        mask = _pixel_mask(case["mask_box"], case["source"].size)
        edited = pipe.edit(
            case["source"], mask, case["prompt"], schedule=schedule, dilate=args.dilate, keep_scales=args.keep_scales,
            seed=10_000 + i,
            **sampling,
        )[0]  # fmt: skip
        recon = pipe.edit(case["source"], None, case["prompt"], schedule=schedule)[
            0
        ]  # empty mask: reconstruction
        outside = ~(np.asarray(mask) >= 128)
        a = image_to_tensor(edited)[0].permute(1, 2, 0)[torch.from_numpy(outside)]
        b = image_to_tensor(recon)[0].permute(1, 2, 0)[torch.from_numpy(outside)]
        psnrs.append(min(psnr(a, b), 99.0))  # identical pixels: capped at 99 dB
        squared += float((a - b).pow(2).sum())
        values += a.numel()
        row = score_case(edited, case, detector, colours)
        rows.append(
            {"prompt": case["prompt"], "mask_box": list(case["mask_box"]), **row, "psnr_unmasked": psnrs[-1]}
        )
        outputs.append(edited)
        if (i + 1) % 20 == 0:
            log.info("%d/%d edits, %.1f s", i + 1, len(cases), time.time() - t0)
    seconds = time.time() - t0
    n = len(rows)
    report = {
        "edits": n,
        "kept_rate": sum(r["kept"] for r in rows) / n,
        "edited_rate": sum(r["edited"] for r in rows) / n,
        "both_rate": sum(r["kept"] and r["edited"] for r in rows) / n,
        "geneval_rate": sum(r["geneval"] for r in rows) / n,
        "psnr_unmasked_db": float(10 * np.log10(4.0 / max(squared / values, 1e-12))),  # pooled over all edits
        "psnr_unmasked_mean_db": float(np.mean(psnrs)),
        "psnr_unmasked_median_db": float(np.median(psnrs)),
        "sampling": {**sampling, "dilate": args.dilate, "keep_scales": args.keep_scales, "pn": PN},
        "seed": args.seed,
        "seconds": round(seconds, 1),
        "rows": rows,
    }
    if args.grid:
        write_grid(cases[: args.grid_rows], outputs[: args.grid_rows], Path(args.grid))
    return report


def write_grid(cases: list[dict], outputs: list[Image.Image], path: Path) -> None:
    """Rows of (source with the masked box outlined, edited) pairs, the prompt under each pair."""
    size, caption_h, pairs_per_row = cases[0]["source"].width, 24, 3
    rows = (len(cases) + pairs_per_row - 1) // pairs_per_row
    grid = Image.new("RGB", (pairs_per_row * (2 * size + 8), rows * (size + caption_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (case, out) in enumerate(zip(cases, outputs, strict=True)):
        x, y = (i % pairs_per_row) * (2 * size + 8), (i // pairs_per_row) * (size + caption_h)
        before = case["source"].copy()
        ImageDraw.Draw(before).rectangle(case["mask_box"], outline=(0, 0, 0), width=1)
        grid.paste(before, (x, y))
        grid.paste(out, (x + size, y))
        text = f"-> {case['new']['color']} {case['new']['shape']}"
        draw.text((x + 3, y + size + 4), text, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path, optimize=True)
    log.info("before/after grid written to %s", path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--edits", type=int, default=120, help="number of edits (default 120)")
    parser.add_argument("--seed", type=int, default=EDIT_CHECK_SEED, help="seed of the renders")
    parser.add_argument("--dilate", type=int, default=0, help="grow the mask by N finest-grid tokens")
    parser.add_argument("--keep-scales", type=int, default=None, help="hold the first K scales entirely")
    parser.add_argument("--cfg", type=float, default=None, help="guidance (default: the model's own)")
    parser.add_argument(
        "--candidates", type=int, default=None, help="draws per edit (default: the model's own)"
    )
    parser.add_argument("-o", "--out", type=Path, required=True, help="JSON report")
    parser.add_argument("--grid", default=None, help="before/after grid PNG")
    parser.add_argument("--grid-rows", type=int, default=6, help="edits shown in the grid (default 6)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{report['edits']} edits: kept {report['kept_rate']:.3f}, edited {report['edited_rate']:.3f}, both "
        f"{report['both_rate']:.3f}, GenEval {report['geneval_rate']:.3f}, PSNR outside the mask vs the "
        f"reconstruction {report['psnr_unmasked_db']:.2f} dB pooled (per edit: mean "
        f"{report['psnr_unmasked_mean_db']:.2f}, median {report['psnr_unmasked_median_db']:.2f}); "
        f"{report['seconds']} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
