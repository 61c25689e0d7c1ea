"""Time and shapes-GenEval score of the default model under the fast sampling options, against today's path.

    uv run --no-sync python benchmarks/fast_sampling.py [--prompts 100] [--threads 1] [--chunk 20]

Configurations: fp32 (the reference), fp32 with ``cfg_off_last`` 1 and 2, and bf16 CPU autocast
(``dtype=torch.bfloat16``: transformer blocks and VAE decoder). The default model's generation settings
(cfg, tau, candidates) on held-out prompts of the shapes world (``recipes/shapes``' held-out prompt seed, one
image each, seed = prompt index), scored like the recipe (shapes detector, palette colours, GenEval rules).
The configurations run interleaved chunk by chunk, so machine noise hits all alike; the table gives seconds,
the speed ratio against fp32 and the score; bf16 also its largest pixel difference from the fp32 images.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

HELDOUT_PROMPT_SEED = 3  # recipes/shapes/shapes_recipe.py: the held-out prompts (never used for tuning)


def score(images: Sequence[Image.Image], specs: Sequence[dict]) -> float:
    """The shapes GenEval overall score (recipes/shapes/shapes_recipe.py, ``score_specs``)."""
    from infinity_eval.geneval.rules import aggregate, evaluate_detections
    from infinity_eval.geneval.shapes import PaletteColorClassifier, ShapesDetector

    detector, colors = ShapesDetector(), PaletteColorClassifier()
    rows = []
    for image, spec in zip(images, specs, strict=True):
        verdict = evaluate_detections(detector.detect(image), spec, image=image, classify_colors=colors)
        rows.append({"tag": spec["tag"], "correct": verdict.correct, "metadata": json.dumps(spec)})
    return float(aggregate(rows)["overall"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=20)
    args = parser.parse_args()
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
    configs = {
        "fp32 (today)": (fp32, 0),
        "fp32 cfg_off_last=1": (fp32, 1),
        "fp32 cfg_off_last=2": (fp32, 2),
        "bf16 autocast": (bf16, 0),
        "bf16 cfg_off_last=1": (bf16, 1),
    }
    specs = heldout_specs(args.prompts, HELDOUT_PROMPT_SEED)
    prompts = [s["prompt"] for s in specs]
    images: dict[str, list[Image.Image]] = {name: [] for name in configs}
    seconds = dict.fromkeys(configs, 0.0)
    for i in range(0, len(prompts), args.chunk):
        chunk, seeds = prompts[i : i + args.chunk], list(range(i, min(i + args.chunk, len(prompts))))
        for name, (pipe, off) in configs.items():
            t0 = time.perf_counter()
            images[name] += pipe(chunk, schedule=schedule, seed=seeds, cfg_off_last=off, **sampling)
            seconds[name] += time.perf_counter() - t0
    reference = np.stack([np.asarray(im, dtype=np.int16) for im in images["fp32 (today)"]])
    print(f"default model, {len(prompts)} held-out prompts x 1 image, {g}, {args.threads} thread(s)")
    print(f"{'configuration':24} {'s':>7} {'speed-up':>8} {'score':>6} {'max |dpx|':>9} {'mean |dpx|':>10}")
    for name in configs:
        px = np.abs(np.stack([np.asarray(im, dtype=np.int16) for im in images[name]]) - reference)
        print(
            f"{name:24} {seconds[name]:7.1f} {seconds['fp32 (today)'] / seconds[name]:7.2f}x "
            f"{score(images[name], specs):6.3f} {int(px.max()):9d} {float(px.mean()):10.2f}"
        )
    # the decoder alone: the same codes (fp32 sampling of the first chunk) decoded in fp32 and under bf16 autocast
    from infinity_model import SamplerConfig
    from infinity_model.sampler import codes_to_uint8

    codes = fp32.generate(prompts[: args.chunk], schedule=schedule, sampler=SamplerConfig(**sampling)).codes
    with torch.no_grad():
        exact = codes_to_uint8(fp32.vae, codes).to(torch.int16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = codes_to_uint8(fp32.vae, codes).to(torch.int16)
    diff = (exact - low).abs()
    print(
        f"VAE decoder alone, same codes, bf16 vs fp32: max |dpx| {int(diff.max())}, mean {float(diff.float().mean()):.2f}"
    )


if __name__ == "__main__":
    main()
