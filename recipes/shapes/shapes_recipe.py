"""Steps of the shapes recipe that have no CLI of their own (reproduce.sh calls them in order).

python recipes/shapes/shapes_recipe.py data --out WORK/data --train 12000 --heldout-images 300 --prompts 300
python recipes/shapes/shapes_recipe.py text-encoder --out WORK/text_encoder
python recipes/shapes/shapes_recipe.py package --model M --vae V --text-encoder T --out DIR --report R
python recipes/shapes/shapes_recipe.py vae-check --vae V --prompts P --out WORK/vae_check.json
python recipes/shapes/shapes_recipe.py tune --model-dir DIR --out WORK/tune.json
python recipes/shapes/shapes_recipe.py sample --model-dir DIR --prompts P --out WORK/eval/images
python recipes/shapes/shapes_recipe.py grid --model-dir DIR --out grid.png
python recipes/shapes/shapes_recipe.py prefix-check --model-dir DIR --prompts P --out WORK/prefix_check.json
python recipes/shapes/shapes_recipe.py report --geneval WORK/eval/geneval --fid WORK/eval/fid.txt ...
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

from infinity_model import GenerationConfig

log = logging.getLogger("shapes_recipe")

# Seeds of the disjoint draws of the world: training images, held-out images (FID), held-out prompts, and the
# validation prompts that choose the sampling settings (so the held-out prompts never tune anything).
TRAIN_SEED = 1
HELDOUT_IMAGE_SEED = 2
HELDOUT_PROMPT_SEED = 3
VALIDATION_PROMPT_SEED = 4
VAE_CHECK_IMAGE_SEED = 5  # renders of the held-out prompts for the tokenizer's reconstruction check
LONG_SIDE = 192  # rendered size; `infinity-data convert --pn 0.016M` resize-crops to 128x128 (1:1) etc.
PN = "0.016M"

# Sampling settings the shipped model is evaluated with (and `infinity generate` uses by default); the `tune`
# step replaces cfg and tau with the best pair of TUNE_GRID on the validation prompts (one draw per image), then
# chooses how many candidates to draw per image (keeping the one the model finds most likely) at that pair.
GENERATION = GenerationConfig(pn=PN, ratio=1.0, cfg=3.0, tau=0.5, top_k=0, top_p=0.0, candidates=1)
TUNE_GRID = {"cfg": (1.0, 2.0, 3.0, 5.0), "tau": (0.1, 0.5, 1.0)}
CANDIDATE_GRID = (1, 4, 8)
# The steps of reproduce.sh that make the model (data to the packaged folder); the rest scores it.
TRAINING_STEPS = (
    "data",
    "convert",
    "text_encoder",
    "t5_features",
    "tokenizer",
    "transformer",
    "transformer_cycle2",
    "package",
)


def shapes_vocabulary() -> list[str]:
    """Whole-word tokens of the text encoder: every word a shapes caption can contain."""
    from infinity_data.shapes import COLORS, COUNT_WORDS, RELATIONS, SHAPES

    words = ["a", "an", "the", "photo", "of", "and", "with", "image", "picture"]
    words += list(SHAPES) + [s + "s" for s in SHAPES]
    words += list(COLORS) + list(COUNT_WORDS.values()) + ["one"]
    for relation in RELATIONS:
        words += relation.split()
    return list(dict.fromkeys(words))


def cmd_data(args: argparse.Namespace) -> None:
    from bsq_tokenizer import resize_crop_for_template
    from infinity_data.shapes import generate, heldout_specs, write_folder

    out = Path(args.out)
    t0 = time.time()
    write_folder(out / "train", args.train, TRAIN_SEED, long_side=LONG_SIDE)
    log.info("wrote %d training images to %s (%.0f s)", args.train, out / "train", time.time() - t0)
    # Held-out real images for FID: 1:1 like the evaluated samples, resized exactly as training images are.
    real = out / "heldout_images"
    real.mkdir(parents=True, exist_ok=True)
    for i, sample in enumerate(generate(args.heldout_images, HELDOUT_IMAGE_SEED, LONG_SIDE, (1.0,))):
        resize_crop_for_template(sample.image, 1.0, PN).save(real / f"{i:05d}.png")
    specs = heldout_specs(args.prompts, HELDOUT_PROMPT_SEED)
    with open(out / "heldout_prompts.jsonl", "w", encoding="utf-8") as handle:
        for spec in specs:
            handle.write(json.dumps(spec) + "\n")
    train_prompts = {p.read_text().strip() for p in (out / "train").glob("*.txt")}
    seen = sum(spec["prompt"] in train_prompts for spec in specs)
    log.info(
        "wrote %d held-out images and %d held-out prompts (%d of them also occur as training captions: the "
        "world has few distinct sentences; the images and seeds are new)",
        args.heldout_images,
        len(specs),
        seen,
    )


def cmd_text_encoder(args: argparse.Namespace) -> None:
    import torch
    from infinity_model import TextEncoder
    from infinity_model.local_t5 import write_neighbour_t5

    folder = write_neighbour_t5(args.out, shapes_vocabulary(), d_model=args.width, seed=0)
    encoder = TextEncoder.from_pretrained(folder, max_length=32)
    prompts = [
        "a photo of a red circle above a blue square",
        "a photo of a blue circle above a red square",
        "a photo of a blue square above a red circle",
    ]
    feats, mask = encoder.encode_padded(prompts)
    n = int(mask[0].sum())
    for i in (1, 2):
        cos = torch.nn.functional.cosine_similarity(feats[0, :n], feats[i, :n], dim=-1)
        log.info(
            "feature rows of %r vs %r: cosine min %.2f mean %.2f",
            prompts[0],
            prompts[i],
            cos.min(),
            cos.mean(),
        )
    log.info("text encoder (width %d, %d words) written to %s", args.width, len(shapes_vocabulary()), folder)


def cmd_t5_shards(args: argparse.Namespace) -> None:
    """Copy the shards, adding each caption's frozen T5 features (``<key>.t5.npy``, float16 [L, C])."""
    from infinity_data import ShardIndex, ShardWriter, read_shard
    from infinity_data.shards import ShardSample
    from infinity_model import TextEncoder

    encoder = TextEncoder.from_pretrained(args.text_encoder, max_length=64)
    src, dst = Path(args.shards), Path(args.out)
    part = dst.with_name(dst.name + ".part")
    count = 0
    with ShardWriter(part) as writer:
        for shard in ShardIndex.load(src).shards:
            samples = list(read_shard(src / shard.path))
            metas = [json.loads(files["json"]) for _, files in samples]
            text = encoder.encode([m["caption"] for m in metas])
            offsets = [0, *text.lengths.cumsum(0).tolist()]
            for i, ((key, files), meta) in enumerate(zip(samples, metas, strict=True)):
                ext = next(e for e in ("png", "jpg", "webp") if e in files)
                feats = text.features[offsets[i] : offsets[i + 1]].half().numpy()
                writer.write(ShardSample(key, files[ext], ext, meta, t5=feats))
                count += 1
    ShardIndex.scan(part).save()
    part.rename(dst)
    log.info("wrote %d samples with T5 features to %s", count, dst)


def cmd_package(args: argparse.Namespace) -> None:
    from infinity_model.default_model import write_default_model

    provenance = {"recipe": "recipes/shapes", "trained_on": "synthetic shapes world (infinity_data.shapes)"}
    if args.report and Path(args.report).is_file():
        provenance.update(json.loads(Path(args.report).read_text()))
    generation = GENERATION
    if args.tune and Path(args.tune).is_file():
        tuned = json.loads(Path(args.tune).read_text())
        generation = replace(GENERATION, **tuned["best"])
        provenance["tuning"] = tuned
    root = write_default_model(args.out, args.model, args.vae, args.text_encoder, generation, provenance)
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    log.info("default model written to %s (%.1f MB)", root, size / 1e6)


def _pipeline(model_dir: str | None):
    """The default model (or the model folder ``model_dir``) and its generation settings."""
    from infinity_model import InfinityPipeline
    from infinity_model.default_model import default_model_dir

    pipe = InfinityPipeline.from_pretrained(default_model_dir(model_dir), device="cpu")
    return pipe, pipe.generation


def _read_specs(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def cmd_sample(args: argparse.Namespace) -> None:
    from infinity_eval import generate_benchmark
    from infinity_eval.prompts import PromptItem

    pipe, g = _pipeline(args.model_dir)
    schedule = pipe.schedule(g.ratio, g.pn)
    specs = _read_specs(args.prompts)
    # The held-out prompts are draws of the world's generator and repeat (about 110 distinct of 300): every
    # draw gets its own seeds, or the repeats of a prompt would be copies of one image scored many times.
    n = args.images_per_prompt
    items = [PromptItem(f"{i:05d}", s["prompt"], n, s["tag"], s, seed=i * n) for i, s in enumerate(specs)]
    sampling = g.sampler_options()
    if args.candidates is not None:
        sampling["candidates"] = args.candidates

    def generator(prompts: list[str], seeds: list[int]):
        return pipe(prompts, schedule=schedule, seed=seeds, **sampling)

    t0 = time.time()
    manifest = generate_benchmark(generator, items, args.out, "geneval", batch_size=args.batch_size)
    total = len(items) * n
    log.info(
        "sampled %d images (best of %d draws each) in %.1f s (%.3f s/image) -> %s",
        total,
        sampling["candidates"],
        time.time() - t0,
        (time.time() - t0) / total,
        manifest,
    )


def score_specs(images: list, specs: list[dict]) -> dict:
    """The shapes GenEval check on in-memory images: official rules, exact detector, palette colours."""
    from infinity_eval.geneval.rules import aggregate, evaluate_detections
    from infinity_eval.geneval.shapes import PaletteColorClassifier, ShapesDetector

    detector, colors = ShapesDetector(), PaletteColorClassifier()
    rows = []
    for image, spec in zip(images, specs, strict=True):
        verdict = evaluate_detections(detector.detect(image), spec, image=image, classify_colors=colors)
        rows.append({"tag": spec["tag"], "correct": verdict.correct, "metadata": json.dumps(spec)})
    return aggregate(rows)


def cmd_tune(args: argparse.Namespace) -> None:
    """Score every (cfg, tau) of TUNE_GRID on validation prompts (their own seed) and keep the best pair; then
    score CANDIDATE_GRID at that pair and keep the best count (the first of equals: the fewest draws)."""
    from infinity_data.shapes import heldout_specs

    pipe, g = _pipeline(args.model_dir)
    schedule = pipe.schedule(g.ratio, g.pn)
    specs = [
        s for s in heldout_specs(args.prompts, VALIDATION_PROMPT_SEED) for _ in range(args.images_per_prompt)
    ]
    prompts = [s["prompt"] for s in specs]

    def score(cfg: float, tau: float, candidates: int) -> dict:
        settings = replace(g, cfg=cfg, tau=tau, candidates=candidates).sampler_options()
        images = []
        for i in range(0, len(prompts), args.batch_size):
            chunk = prompts[i : i + args.batch_size]
            seeds = [1_000_000 + i + j for j in range(len(chunk))]  # one seed per image, all distinct
            images += pipe(chunk, schedule=schedule, seed=seeds, **settings)
        summary = score_specs(images, specs)
        row = {"cfg": cfg, "tau": tau, "candidates": candidates, "overall": summary["overall"]}
        log.info("cfg %.1f tau %.2f candidates %d: overall %.3f", cfg, tau, candidates, summary["overall"])
        return {**row, "tags": summary["tags"]}

    results = [score(cfg, tau, 1) for cfg in TUNE_GRID["cfg"] for tau in TUNE_GRID["tau"]]
    pair = max(results, key=lambda r: r["overall"])  # first of equals: the grid's order
    counts = [pair if n == 1 else score(pair["cfg"], pair["tau"], n) for n in CANDIDATE_GRID]
    best = max(counts, key=lambda r: r["overall"])
    out = {
        "best": {"cfg": best["cfg"], "tau": best["tau"], "candidates": best["candidates"]},
        "validation_prompts": args.prompts,
        "images_per_prompt": args.images_per_prompt,
        "grid": results,
        "candidates": counts,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    log.info(
        "best on %d validation images (%d prompts): cfg %.1f tau %.2f, %d candidates (overall %.3f)",
        len(specs),
        args.prompts,
        best["cfg"],
        best["tau"],
        best["candidates"],
        best["overall"],
    )


def _heldout_renders(specs: list[dict]) -> list:
    """Each spec rendered with the check's own seed exactly as training images are (1:1, resized to 128x128)."""
    import random

    from bsq_tokenizer import resize_crop_for_template
    from infinity_data.shapes import image_size, render

    rng = random.Random(VAE_CHECK_IMAGE_SEED)
    height, width = image_size(1.0, LONG_SIDE)
    return [resize_crop_for_template(render(spec, height, width, rng)[0], 1.0, PN) for spec in specs]


def cmd_prefix_check(args: argparse.Namespace) -> None:
    """Where the model goes wrong: the shapes check when the first k scales are a real render's (k = 0 … all).

    Row k gives the model the tokenizer's bits of a held-out render for scales 0 … k-1 and lets it sample the
    rest with the shipped settings. Row 0 is plain generation (one image per prompt), the last row the
    tokenizer's reconstruction; the drop between rows k and k+1 is what the model's scale k costs.
    """
    import torch
    from bsq_tokenizer import image_to_tensor
    from infinity_model import SamplerConfig
    from PIL import Image

    pipe, g = _pipeline(args.model_dir)
    schedule = pipe.schedule(g.ratio, g.pn)
    specs = _read_specs(args.prompts)
    real = _heldout_renders(specs)
    with torch.no_grad():
        x = torch.cat([image_to_tensor(img) for img in real])
        given = pipe.vae.encode_to_bits(x, schedule.vae_scales(pipe.vae.config.patchify)).bits
    # one draw per image (no candidates): the check is about the model's scales, not the choice among draws
    sampler = SamplerConfig(**replace(g, candidates=1).sampler_options())
    rows = []
    for k in range(schedule.num_scales + 1):
        images = []
        for i in range(0, len(specs), args.batch_size):
            chunk = specs[i : i + args.batch_size]
            result = pipe.generate(
                [s["prompt"] for s in chunk],
                schedule=schedule,
                sampler=sampler,
                seed=[3_000_000 + i + j for j in range(len(chunk))],
                prefix_bits=[b[i : i + len(chunk)] for b in given[:k]],
            )
            images += [Image.fromarray(img.numpy()) for img in result.images]
        summary = score_specs(images, specs)
        rows.append({"given_scales": k, "overall": summary["overall"], "tags": summary["tags"]})
        log.info("first %d scales given: shapes check %.3f", k, summary["overall"])
    out = {
        "scales": [list(hw) for hw in schedule.scales],
        "images": len(specs),
        "sampling": g.to_dict(),
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


def cmd_vae_check(args: argparse.Namespace) -> None:
    """The shapes check on tokenizer reconstructions of held-out renders: the ceiling any transformer can reach.

    Each held-out prompt is rendered (new seed) exactly as training images are (1:1, resized to 128x128), coded
    with the 0.016M 1:1 multi-scale schedule, decoded, and scored like generated images.
    """
    import torch
    from bsq_tokenizer import get_schedule, image_to_tensor, load_vae, tensor_to_images

    vae = load_vae(args.vae).eval()
    specs = _read_specs(args.prompts)
    real = _heldout_renders(specs)
    scales = get_schedule(1.0, PN).vae_scales(vae.config.patchify)
    recon, l1 = [], 0.0
    with torch.no_grad():
        for i in range(0, len(real), 50):
            x = torch.cat([image_to_tensor(img) for img in real[i : i + 50]])
            y = vae.decode(vae.encode_to_bits(x, scales).codes)
            l1 += float((y - x).abs().sum()) / x[0].numel()
            recon += tensor_to_images(y)
    summary = score_specs(recon, specs)
    out = {"overall": summary["overall"], "tags": summary["tags"], "l1": l1 / len(real), "images": len(real)}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    log.info(
        "tokenizer reconstructions of %d held-out renders: shapes check %.3f, L1 %.4f",
        len(real),
        out["overall"],
        out["l1"],
    )


def cmd_grid(args: argparse.Namespace) -> None:
    from PIL import Image, ImageDraw

    pipe, g = _pipeline(args.model_dir)
    prompts = [
        "a photo of a red circle above a blue square",
        "a photo of a yellow triangle",
        "a photo of three squares",
        "a photo of a green square and a purple circle",
        "a photo of a triangle left of a circle",
        "a photo of two circles",
        "a photo of a blue triangle and a red square",
        "a photo of a square below a triangle",
    ]
    images = pipe(
        prompts, schedule=pipe.schedule(g.ratio, g.pn), seed=list(range(len(prompts))), **g.sampler_options()
    )
    cols, size, caption_h = 4, images[0].width, 30
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * size, rows * (size + caption_h)), "white")
    draw = ImageDraw.Draw(grid)
    for i, (img, prompt) in enumerate(zip(images, prompts, strict=True)):
        x, y = (i % cols) * size, (i // cols) * (size + caption_h)
        grid.paste(img, (x, y))
        text = prompt.removeprefix("a photo of ")
        words, lines = text.split(), [""]
        for word in words:
            if len(lines[-1]) + len(word) + 1 > 22:
                lines.append("")
            lines[-1] = (lines[-1] + " " + word).strip()
        draw.multiline_text((x + 3, y + size + 2), "\n".join(lines[:2]), fill="black", spacing=1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    log.info("sample grid written to %s", args.out)


def training_seconds(timings: dict[str, int]) -> int:
    """Wall time of the steps that make the model (TRAINING_STEPS; those skipped by a reused output count 0)."""
    return sum(int(timings.get(name, 0)) for name in TRAINING_STEPS)


def cmd_training_time(args: argparse.Namespace) -> None:
    timings = json.loads(Path(args.timings).read_text())
    missing = [name for name in TRAINING_STEPS if name not in timings]
    total = training_seconds(timings)
    note = f" (not timed in this run, output reused: {', '.join(missing)})" if missing else ""
    print(f"== training, data to packaged model: {total} s = {total / 60:.1f} min{note}")


def cmd_report(args: argparse.Namespace) -> None:
    summary = json.loads((Path(args.geneval) / "summary.json").read_text())
    report: dict = {
        "shapes_geneval_overall": summary["overall"],
        "shapes_geneval_tags": summary["tags"],
        "shapes_geneval_images": summary["images"],
        "geneval_shapes": summary,
    }
    if args.geneval_single and Path(args.geneval_single).is_dir():
        single = json.loads((Path(args.geneval_single) / "summary.json").read_text())
        report["shapes_geneval_single_draw"] = {"overall": single["overall"], "tags": single["tags"]}
    if args.fid and Path(args.fid).is_file():
        text = Path(args.fid).read_text()
        match = re.search(r"FID ([0-9.]+)", text)
        report["fid"] = float(match.group(1)) if match else None
        report["fid_line"] = text.strip().splitlines()[-1] if text.strip() else ""
    else:
        report["fid"] = None
        report["fid_line"] = "not computed (no FID Inception weights; see recipes/shapes/README.md)"
    if args.vae_check and Path(args.vae_check).is_file():
        report["tokenizer_reconstruction_check"] = json.loads(Path(args.vae_check).read_text())
    if args.tune and Path(args.tune).is_file():
        report["sampling"] = json.loads(Path(args.tune).read_text())["best"]
    if args.prefix_check and Path(args.prefix_check).is_file():
        rows = json.loads(Path(args.prefix_check).read_text())["rows"]
        report["prefix_check"] = {str(r["given_scales"]): r["overall"] for r in rows}
    if args.timings and Path(args.timings).is_file():
        report["timings_s"] = json.loads(Path(args.timings).read_text())
        report["training_s"] = training_seconds(report["timings_s"])
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    log.info("report written to %s", args.out)
    print(json.dumps({k: v for k, v in report.items() if k != "geneval_shapes"}, indent=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("data", help="training images, held-out images (FID) and held-out prompts")
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=12000)
    p.add_argument("--heldout-images", type=int, default=300)
    p.add_argument("--prompts", type=int, default=300)
    p.set_defaults(func=cmd_data)
    p = sub.add_parser("text-encoder", help="the frozen T5 encoder + tokenizer of the shapes vocabulary")
    p.add_argument("--out", required=True)
    p.add_argument("--width", type=int, default=64)
    p.set_defaults(func=cmd_text_encoder)
    p = sub.add_parser("t5-shards", help="the shards again, with precomputed T5 features of every caption")
    p.add_argument("--shards", required=True)
    p.add_argument("--text-encoder", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_t5_shards)
    p = sub.add_parser("package", help="write the default-model folder from the exported parts")
    for name in ("--model", "--vae", "--text-encoder", "--out"):
        p.add_argument(name, required=True)
    p.add_argument("--report", default=None)
    p.add_argument(
        "--tune", default=None, help="tune.json of the tune step: its cfg/tau replace the defaults"
    )
    p.set_defaults(func=cmd_package)
    p = sub.add_parser("vae-check", help="the shapes check on tokenizer reconstructions of held-out renders")
    p.add_argument("--vae", required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_vae_check)
    p = sub.add_parser("prefix-check", help="the check with the first k scales taken from real renders")
    p.add_argument("--model-dir", default=None)
    p.add_argument("--prompts", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=20)
    p.set_defaults(func=cmd_prefix_check)
    p = sub.add_parser("tune", help="choose cfg, tau and candidates on validation prompts (not held-out)")
    p.add_argument("--model-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--prompts", type=int, default=120)
    p.add_argument("--images-per-prompt", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=20)
    p.set_defaults(func=cmd_tune)
    p = sub.add_parser("sample", help="images for the held-out prompts in the GenEval layout")
    p.add_argument("--model-dir", default=None)
    p.add_argument("--prompts", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--images-per-prompt", type=int, default=4, help="GenEval's protocol: 4")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--candidates", type=int, default=None, help="draws per image (default: the model folder's)"
    )
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("grid", help="a grid of samples for the README")
    p.add_argument("--model-dir", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_grid)
    p = sub.add_parser("training-time", help="print the wall time of the steps that make the model")
    p.add_argument("--timings", required=True)
    p.set_defaults(func=cmd_training_time)
    p = sub.add_parser("report", help="collect the scores into one JSON")
    p.add_argument("--geneval", required=True)
    p.add_argument(
        "--geneval-single", default=None, help="the check of the held-out draws without candidates"
    )
    p.add_argument("--fid", default=None)
    p.add_argument("--timings", default=None)
    p.add_argument("--vae-check", default=None)
    p.add_argument("--tune", default=None)
    p.add_argument("--prefix-check", default=None)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
