"""Time and shapes-GenEval score of the default model under the fast sampling options, against today's path.

    uv run --no-sync python benchmarks/fast_sampling.py [--prompts 300] [--images-per-prompt 4] [--threads 1]

Configurations: fp32 (the reference) and bf16 CPU autocast (``dtype=torch.bfloat16``: transformer blocks and VAE
decoder), each with ``cfg_off_last`` k = 0, 1, 2. The default model's own generation settings (cfg, tau,
candidates) on the held-out prompts of the shapes world with the recipe's protocol (``recipes/shapes``: the
held-out prompt seed, 300 prompts x 4 images, image j of prompt i seeded ``4 i + j``), scored like the recipe
(shapes detector, palette colours, GenEval rules), so the fp32 row is the recipe's reported score. The
configurations run interleaved chunk by chunk, so machine noise hits all alike; the table gives seconds, the
speed ratio against fp32, the score, its difference from fp32 with a paired bootstrap interval (images resampled
within each tag, the same draw for both configurations), and the pixel differences from the fp32 images (and the
share of images within 8/255 of them everywhere: the same drawing up to rounding). Then the logit differences of
bf16: the bf16 sampler is forced onto the fp32 images' bits (``prefix_bits``), so both precisions compute the
guided, temperature-scaled logits of every scale from the same inputs; and the VAE decoder alone on the same
codes. ``--seed-offset`` draws another set of images (image k seeded offset + k) to add evidence, ``--pool``
scores the images of several ``--json`` runs together; ``--off`` and ``--precisions`` run a subset of the
configurations.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

HELDOUT_PROMPT_SEED = 3  # recipes/shapes/shapes_recipe.py: the held-out prompts (never used for tuning)
BOOTSTRAP = 2000
CLOSE_PX = 8  # an image within 8/255 of the fp32 one everywhere: the same bits up to decoder rounding


def verdicts(images: Sequence[Image.Image], specs: Sequence[dict]) -> list[bool]:
    """Per image: correct under the shapes GenEval check (recipes/shapes/shapes_recipe.py, ``score_specs``)."""
    from infinity_eval.geneval.rules import evaluate_detections
    from infinity_eval.geneval.shapes import PaletteColorClassifier, ShapesDetector

    detector, colors = ShapesDetector(), PaletteColorClassifier()
    return [
        bool(evaluate_detections(detector.detect(im), spec, image=im, classify_colors=colors).correct)
        for im, spec in zip(images, specs, strict=True)
    ]


def overall(correct: Sequence[bool], specs: Sequence[dict]) -> float:
    """GenEval's overall score: the unweighted mean of the per-tag means (``infinity_eval.geneval.rules.aggregate``)."""
    from infinity_eval.geneval.rules import aggregate

    rows = [
        {"tag": s["tag"], "correct": c, "metadata": json.dumps(s)}
        for c, s in zip(correct, specs, strict=True)
    ]
    return float(aggregate(rows)["overall"])


def paired_interval(
    a: Sequence[bool], b: Sequence[bool], tags: Sequence[str], seed: int = 0
) -> tuple[float, float]:
    """95% paired bootstrap interval of overall(b) - overall(a): images resampled within each tag, the same
    indices for both, overall = mean of the tag means (as ``aggregate``)."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    groups = [np.flatnonzero(np.asarray(tags) == t) for t in sorted(set(tags))]
    diffs = np.zeros(BOOTSTRAP)
    for idx in groups:
        draw = idx[rng.integers(0, len(idx), size=(BOOTSTRAP, len(idx)))]
        diffs += (y[draw] - x[draw]).mean(axis=1)
    diffs /= len(groups)
    low, high = np.quantile(diffs, [0.025, 0.975])
    return float(low), float(high)


def logit_differences(
    fp32: Any, bf16: Any, prompts: list[str], seeds: list[int], schedule: Any, sampling: dict
) -> dict[str, float]:
    """bf16 vs fp32 guided logits on the same inputs: both samplers forced onto the fp32 draw's bits."""
    from infinity_model import SamplerConfig
    from infinity_model.sampler import ScaleStep

    config = SamplerConfig(**{**sampling, "candidates": 1})
    logits: dict[str, list[torch.Tensor]] = {"fp32": [], "bf16": []}
    reference = fp32.generate(prompts, schedule=schedule, sampler=config, seed=seeds)
    for name, pipe in (("fp32", fp32), ("bf16", bf16)):

        def keep(step: ScaleStep, out: list[torch.Tensor] = logits[name]) -> None:
            out.append(step.logits.float().flatten())

        pipe.generate(
            prompts, schedule=schedule, sampler=config, seed=seeds, callback=keep, prefix_bits=reference.bits
        )
    a, b = torch.cat(logits["fp32"]), torch.cat(logits["bf16"])
    a2, b2 = a.view(-1, 2), b.view(-1, 2)  # (bit, value) pairs: p(bit = 1) = softmax over the pair
    pa, pb = a2.softmax(-1)[:, 1], b2.softmax(-1)[:, 1]
    return {
        "max_abs": float((a - b).abs().max()),
        "mean_abs": float((a - b).abs().mean()),
        "mean_abs_fp32": float(a.abs().mean()),
        "max_dp": float((pa - pb).abs().max()),
        "mean_dp": float((pa - pb).abs().mean()),
        "decisions_flipped": float(((pa > 0.5) != (pb > 0.5)).float().mean()),
        "bits": float(pa.numel()),
    }


def pool(paths: Sequence[str]) -> None:
    """Score differences against fp32 over the images of several ``--json`` runs (e.g. other ``--seed-offset``)."""
    from infinity_data.shapes import heldout_specs

    runs = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            runs.append(json.load(handle))
    names = [name for name in runs[0]["correct"] if all(name in run["correct"] for run in runs)]
    specs = [
        s
        for run in runs
        for s in heldout_specs(run["prompts"], HELDOUT_PROMPT_SEED)
        for _ in range(run["images_per_prompt"])
    ]
    tags = [s["tag"] for s in specs]
    correct = {name: [c for run in runs for c in run["correct"][name]] for name in names}
    reference = "fp32 (today)"
    offsets = [run.get("seed_offset", 0) for run in runs]
    print(f"pooled: {len(runs)} runs (seed offsets {offsets}), {len(specs)} images\n")
    print("| configuration | score | Δ score | 95% interval |\n|---|---:|---:|---:|")
    for name in names:
        score_, base = overall(correct[name], specs), overall(correct[reference], specs)
        low, high = paired_interval(correct[reference], correct[name], tags)
        print(f"| {name} | {score_:.4f} | {score_ - base:+.4f} | [{low:+.4f}, {high:+.4f}] |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=300, help="held-out prompts (the recipe's set: 300)")
    parser.add_argument("--images-per-prompt", type=int, default=4, help="the recipe's GenEval protocol: 4")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=20, help="images per pipeline call")
    parser.add_argument(
        "--off",
        default="0,1,2",
        help="cfg_off_last values to run for each precision (0, fp32, is always run)",
    )
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32 (always run), bf16")
    parser.add_argument(
        "--seed-offset", type=int, default=0, help="image k gets seed offset + k (0: the recipe's seeds)"
    )
    parser.add_argument("--json", default=None, help="also write the per-image verdicts and timings here")
    parser.add_argument(
        "--pool", nargs="+", default=None, help="only pool the verdicts of these --json files (no sampling)"
    )
    args = parser.parse_args()
    if args.pool:
        pool(args.pool)
        return
    torch.set_num_threads(args.threads)

    from infinity_data.shapes import heldout_specs
    from infinity_model import InfinityPipeline
    from infinity_model.default_model import load_default_model

    dm = load_default_model(None)
    g = dm.generation
    fp32 = InfinityPipeline.from_pretrained(
        dm.model, dm.vae, dm.text_encoder, device="cpu", dtype=torch.float32
    )
    bf16 = InfinityPipeline(fp32.model, fp32.vae, fp32.text_encoder, dtype=torch.bfloat16)
    schedule = fp32.schedule(g.ratio, g.pn)
    sampling = {k: getattr(g, k) for k in ("cfg", "tau", "top_k", "top_p", "candidates")}
    offs = sorted({int(k) for k in args.off.split(",")} | {0})
    precisions = {"fp32", *args.precisions.split(",")}
    unknown = sorted(precisions - {"fp32", "bf16"})
    if unknown:
        raise SystemExit(f"fast_sampling.py: unknown --precisions {unknown}; choose from fp32, bf16")
    configs = {
        f"{name} cfg_off_last={k}" if k else f"{name}{' (today)' if name == 'fp32' else ''}": (pipe, k)
        for name, pipe in (("fp32", fp32), ("bf16", bf16))
        if name in precisions
        for k in offs
    }
    reference_name = "fp32 (today)"
    n = args.images_per_prompt
    specs = [s for s in heldout_specs(args.prompts, HELDOUT_PROMPT_SEED) for _ in range(n)]
    prompts = [s["prompt"] for s in specs]  # image j of prompt i has index (and seed) n * i + j
    images: dict[str, list[Image.Image]] = {name: [] for name in configs}
    seconds = dict.fromkeys(configs, 0.0)
    for i in range(0, len(prompts), args.chunk):
        chunk = prompts[i : i + args.chunk]
        seeds = [args.seed_offset + j for j in range(i, i + len(chunk))]
        for name, (pipe, off) in configs.items():
            t0 = time.perf_counter()
            images[name] += pipe(chunk, schedule=schedule, seed=seeds, cfg_off_last=off, **sampling)
            seconds[name] += time.perf_counter() - t0
        print(f"  {i + len(chunk)}/{len(prompts)} images", flush=True)
    correct = {name: verdicts(images[name], specs) for name in configs}
    scores = {name: overall(correct[name], specs) for name in configs}
    tags = [s["tag"] for s in specs]
    reference = np.stack([np.asarray(im, dtype=np.int16) for im in images[reference_name]])
    print(
        f"default model, {args.prompts} held-out prompts x {n} images = {len(prompts)}, {g}, "
        f"{args.threads} thread(s)\n"
    )
    print(
        "| configuration | s | speed-up | score | Δ score | 95% interval | max \\|Δpx\\| | mean \\|Δpx\\| | images ≤ 8 px |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for name in configs:
        arr = np.stack([np.asarray(im, dtype=np.int16) for im in images[name]])
        px = np.abs(arr - reference)
        low, high = paired_interval(correct[reference_name], correct[name], tags)
        close = float((px.reshape(len(prompts), -1).max(axis=1) <= CLOSE_PX).mean())
        print(
            f"| {name} | {seconds[name]:.1f} | {seconds[reference_name] / seconds[name]:.2f}x | "
            f"{scores[name]:.3f} | {scores[name] - scores[reference_name]:+.3f} | [{low:+.3f}, {high:+.3f}] | "
            f"{int(px.max())} | {float(px.mean()):.2f} | {close:.0%} |"
        )
    # logits: the bf16 sampler forced onto the fp32 bits of the first chunk (same inputs at every scale)
    first = list(range(min(args.chunk, len(prompts))))
    first_seeds = [args.seed_offset + i for i in first]
    diff = logit_differences(fp32, bf16, [prompts[i] for i in first], first_seeds, schedule, sampling)
    print(
        f"\nlogits, bf16 vs fp32 on the same inputs ({int(diff['bits'])} bit decisions of {len(first)} images, "
        f"guided and divided by tau): max |Δ| {diff['max_abs']:.4f}, mean |Δ| {diff['mean_abs']:.5f} (mean "
        f"|logit| {diff['mean_abs_fp32']:.3f}); p(bit=1) max |Δ| {diff['max_dp']:.4f}, mean |Δ| "
        f"{diff['mean_dp']:.6f}; more likely value flipped in {diff['decisions_flipped']:.2e} of the bits"
    )
    # the decoder alone: the same codes (fp32 sampling of the first chunk) decoded in fp32 and under bf16 autocast
    from infinity_model import SamplerConfig
    from infinity_model.sampler import codes_to_uint8

    codes = fp32.generate(
        [prompts[i] for i in first], schedule=schedule, sampler=SamplerConfig(**sampling), seed=first_seeds
    ).codes
    with torch.no_grad():
        exact = codes_to_uint8(fp32.vae, codes).to(torch.int16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low_px = codes_to_uint8(fp32.vae, codes).to(torch.int16)
    dpx = (exact - low_px).abs()
    print(
        f"VAE decoder alone, same codes, bf16 vs fp32: max |Δpx| {int(dpx.max())}, mean {float(dpx.float().mean()):.2f}"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(
                {
                    "prompts": args.prompts,
                    "images_per_prompt": n,
                    "seed_offset": args.seed_offset,
                    "threads": args.threads,
                    "seconds": seconds,
                    "scores": scores,
                    "correct": correct,
                    "logits": diff,
                    "decoder_max_dpx": int(dpx.max()),
                },
                handle,
                indent=1,
            )


if __name__ == "__main__":
    main()
