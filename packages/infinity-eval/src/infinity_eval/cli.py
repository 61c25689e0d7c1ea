"""infinity-eval command line: geneval | fid | imagereward | hps | val-loss | prompts | generate."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InfinityEvalError
from .runs import Shard

if TYPE_CHECKING:
    from .remote import LocalImages

__all__ = ["COMMANDS", "build_parser", "main"]


def _key_values(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ValueError(f"{flag} {item!r} is not key=value")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


class _DeprecatedFlag(argparse.Action):
    """An old spelling of a flag, hidden from --help: stores into the new flag's dest and warns on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, **kwargs: Any) -> None:
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(
            f"{parser.prog}: warning: {option_string} is deprecated and will be removed; use {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


# Commands whose -o/--output is required (checked after parsing, since the deprecated --out also fills it).
_OUTPUT_REQUIRED = frozenset({"prompts", "generate", "geneval", "imagereward", "hps", "val-loss"})


def _input(text: str) -> Path | str:
    """An input argument: a URL (``s3://``, ``gs://``, ``https://``) stays a string, anything else is a path."""
    from .remote import is_url

    return text if is_url(text) else Path(text)


def _add_output(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("-o", "--output", type=Path, default=None, help=help)
    p.add_argument("--out", dest="output", type=Path, action=_DeprecatedFlag, new="-o/--output")


def _add_common(p: argparse.ArgumentParser) -> None:
    _add_output(p, "run folder (results*.jsonl, summary.json, CSVs)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--shard", default="0/1", help="i/n: score only the i-th of n deterministic slices")
    p.add_argument("--no-progress", action="store_true", help="disable progress bars")


def _describe_scorer_file(path: Path | None) -> dict[str, object]:
    """Provenance of a weight file a scorer was loaded from (`from_pretrained` always records both files)."""
    if path is None:
        raise ValueError("the scorer does not record its weight files; build it with from_pretrained")
    from .weights import describe_weight_file

    return describe_weight_file(path)


def prompts_command(args: argparse.Namespace) -> int:
    from .prompts import benchmark_prompts, validate_geneval_metadata, write_prompts

    items = benchmark_prompts(args.benchmark, args.images_per_prompt, args.hps_prompts)
    if args.benchmark == "geneval":
        validate_geneval_metadata([dict(i.meta or {}) for i in items])
    write_prompts(items, args.output, args.format)
    print(f"wrote {len(items)} {args.benchmark} prompts to {args.output}")
    return 0


def generate_command(args: argparse.Namespace) -> int:
    from .generate import generate_benchmark, load_generator
    from .prompts import benchmark_prompts

    generator = load_generator(args.generator, _key_values(args.generator_arg, "--generator-arg"))
    items = benchmark_prompts(args.benchmark, args.images_per_prompt, args.hps_prompts)
    manifest = generate_benchmark(
        generator,
        items,
        args.output,
        benchmark=args.benchmark,
        batch_size=args.batch_size,
        seed=args.seed,
        image_format=args.image_format,
        shard=Shard.parse(args.shard),
        progress=not args.no_progress,
    )
    print(f"images and manifest in {args.output} ({manifest})")
    return 0


def fid_options(args: argparse.Namespace) -> Any:
    """The :class:`~infinity_eval.fid.FIDOptions` the ``fid`` flags give."""
    from .fid import FIDOptions

    return FIDOptions(protocol=args.protocol, batch_size=args.batch_size)


def val_loss_options(args: argparse.Namespace) -> Any:
    """The :class:`~infinity_eval.val_loss.ValLossOptions` the ``val-loss`` flags give."""
    from .val_loss import ValLossOptions

    return ValLossOptions(
        pn=args.pn,
        noise_apply_layers=args.noise_apply_layers,
        noise_apply_strength=args.noise_apply_strength,
        noise_apply_requant=args.requant,
        reweight_by_scale=args.reweight_by_scale,
        seed=args.seed,
        batch_size=args.batch_size,
    )


def fid_command(args: argparse.Namespace) -> int:
    from .fid import FeatureStatistics, compute_fid, compute_statistics, load_fid_inception
    from .fid.api import _is_statistics_file

    options = fid_options(args)
    if args.merge_stats:
        merged = FeatureStatistics.load(args.merge_stats[0])
        for path in args.merge_stats[1:]:
            merged = merged.merge(FeatureStatistics.load(path))
        if args.save_stats is None:
            raise ValueError("--merge-stats needs --save-stats PATH")
        merged.save(args.save_stats)
        print(f"merged {len(args.merge_stats)} statistics (N = {merged.n}) into {args.save_stats}")
        return 0
    cache = None if args.no_cache else (args.cache_dir or None)
    if len(args.inputs) == 1:
        if args.save_stats is None:
            raise ValueError("with one input, pass --save-stats PATH (or give two inputs to compute FID)")
        # weights are loaded only for images: an .npz input needs none
        is_npz = _is_statistics_file(args.inputs[0])
        backbone = None if is_npz else load_fid_inception(args.weights, device=args.device)
        stats = compute_statistics(
            args.inputs[0],
            backbone,
            options,
            args.device,
            cache,
            Shard.parse(args.shard),
            args.num_workers,
            not args.no_progress,
            args.stats_protocol,
        )
        stats.save(args.save_stats)
        label = backbone.label if backbone is not None else stats.meta.get("backbone", "unrecorded")
        print(f"saved statistics of {stats.n} images to {args.save_stats} (backbone {label})")
        return 0
    if len(args.inputs) != 2:
        raise ValueError("fid takes one input (with --save-stats) or two inputs")
    if args.shard != "0/1":
        raise ValueError("--shard applies to statistics (one input with --save-stats), then --merge-stats")
    result = compute_fid(
        args.inputs[0],
        args.inputs[1],
        weights=args.weights,
        options=options,
        device=args.device,
        cache_dir=cache,
        out_dir=args.output,
        num_workers=args.num_workers,
        progress=not args.no_progress,
        unrecorded_protocol=args.stats_protocol,
    )
    label = result.summary["header"]["options"]["backbone"]
    print(
        f"FID {result.fid:.4f} (N = {result.n_a} vs {result.n_b}, protocol {options.protocol}, backbone {label})"
    )
    return 0


def _geneval_records(path: Path):
    from .io import read_geneval_folder, read_manifest

    return read_manifest(path) if path.is_file() else read_geneval_folder(path)


def geneval_command(args: argparse.Namespace) -> int:
    from .remote import local_images

    with local_images(args.input) as images:  # a URL: a temporary copy, removed when the run ends
        return _geneval(args, images)


def _geneval(args: argparse.Namespace, images: LocalImages) -> int:
    from .geneval import (
        GenEvalOptions,
        Mask2FormerDetector,
        PrecomputedDetector,
        load_clip_color_classifier,
        load_detector,
        load_openclip_color_classifier,
        run_geneval,
    )
    from .weights import describe_weight_file

    options = GenEvalOptions(**_key_values(args.option, "--option"))
    records = images.named(_geneval_records(images.path))
    weights: list[dict[str, Any]] = []
    chosen = [x for x in (args.detector, args.detections, args.mask2former) if x]
    if len(chosen) != 1:
        raise ValueError(
            "pass exactly one of --detector module:factory, --detections FILE.jsonl, --mask2former"
        )
    if args.detector:
        detector = load_detector(args.detector, _key_values(args.detector_arg, "--detector-arg"))
        name = args.detector
    elif args.detections:
        detector = PrecomputedDetector(args.detections)
        name = f"precomputed:{args.detections.name}"
    else:
        detector = Mask2FormerDetector(args.detector_weights, args.detector_config, device=args.device)
        weights.append(describe_weight_file(detector.weights_path))
        name = "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco"
    classifier = None
    if args.color_classifier:
        from ._imports import import_object
        from .geneval.colors import ColorClassifier

        classifier = import_object(args.color_classifier, "colour classifier factory")()
        if not isinstance(classifier, ColorClassifier):
            raise ValueError(f"{args.color_classifier} did not return a callable(crops, object_name)")
        name += f"+colors:{args.color_classifier}"
    elif any("color" in c for r in records for c in (r.meta or {}).get("include", [])):
        if args.clip_backend == "open_clip":
            classifier, clip_path = load_openclip_color_classifier(args.clip_weights, device=args.device)
            files = [clip_path]
        else:
            classifier, files = load_clip_color_classifier(
                args.clip_weights, args.clip_vocab, device=args.device
            )
        weights.extend(describe_weight_file(f) for f in files)
        name += f"+colors:ViT-L-14 openai ({args.clip_backend})"
    summary = run_geneval(
        records,
        detector,
        args.output,
        options,
        classifier,
        Shard.parse(args.shard),
        detector_name=name,
        weights=weights,
        progress=not args.no_progress,
    )
    from .geneval import format_summary

    print(format_summary(summary))
    return 0


def imagereward_command(args: argparse.Namespace) -> int:
    from .io import read_imagereward_folder, read_manifest
    from .prompts import imagereward_prompts
    from .remote import local_images

    missing: list[str] = []
    with local_images(args.input) as images:  # a URL: a temporary copy, removed when the run ends
        if images.path.is_file():
            records = read_manifest(images.path)
        else:
            prompts = json.loads(args.prompts.read_text()) if args.prompts else imagereward_prompts()
            records, missing = read_imagereward_folder(images.path, prompts)
        return _imagereward(args, images.named(records), missing)


def _imagereward(args: argparse.Namespace, records: list[Any], missing: list[str]) -> int:
    from .imagereward import ImageRewardScorer, imagereward_benchmark_summary
    from .scoring import run_image_scorer

    scorer = ImageRewardScorer.from_pretrained(
        args.weights, vocab=args.vocab, device=args.device, batch_size=args.batch_size
    )
    weights = [_describe_scorer_file(scorer.weights_file), _describe_scorer_file(scorer.vocab_file)]

    def summarize(rows):
        by_prompt: dict[str, list[float]] = {}
        for r in rows:
            by_prompt.setdefault(r["prompt_id"], []).append(r["score"])
        return imagereward_benchmark_summary(by_prompt)

    summary = run_image_scorer(
        "imagereward",
        records,
        scorer,
        args.output,
        summarize,
        {**scorer.options(), "metric_version": "imagereward-1"},
        weights,
        Shard.parse(args.shard),
        args.batch_size,
        missing,
        not args.no_progress,
    )
    print(
        f"ImageReward {summary['imagereward']:.4f} over {summary['prompts']} prompts / {summary['images']} images"
    )
    return 0


def hps_command(args: argparse.Namespace) -> int:
    from .io import read_hps_folder, read_manifest
    from .prompts import hps_prompts
    from .remote import local_images

    missing: list[str] = []
    with local_images(args.input) as images:  # a URL: a temporary copy, removed when the run ends
        if images.path.is_file():
            records = read_manifest(images.path)
        else:
            if args.prompts_dir is None:
                raise ValueError(
                    "an HPS folder needs --prompts-dir with anime.json etc. (Hugging Face dataset zhwang/HPDv2)"
                )
            records, missing = read_hps_folder(images.path, hps_prompts(args.prompts_dir))
        return _hps(args, images.named(records), missing)


def _hps(args: argparse.Namespace, records: list[Any], missing: list[str]) -> int:
    from .hps import HPSv21Scorer, hps_benchmark_summary
    from .scoring import run_image_scorer

    for m in missing:
        logging.getLogger(__name__).warning("HPS: %s", m)
    kwargs: dict[str, Any] = {}
    if args.antialias is not None:
        kwargs["antialias"] = args.antialias
    scorer = HPSv21Scorer.from_pretrained(
        args.weights, vocab=args.vocab, version=args.version, device=args.device, **kwargs
    )
    weights = [_describe_scorer_file(scorer.weights_file), _describe_scorer_file(scorer.vocab_file)]

    def summarize(rows):
        by_style: dict[str, list[tuple[str, float]]] = {}
        for r in rows:
            by_style.setdefault(r.get("tag") or "all", []).append((r["prompt_id"], r["score"]))
        return hps_benchmark_summary({s: [v for _, v in sorted(items)] for s, items in by_style.items()})

    summary = run_image_scorer(
        "hps",
        records,
        scorer,
        args.output,
        summarize,
        {**scorer.options(), "metric_version": "hps-1"},
        weights,
        Shard.parse(args.shard),
        args.batch_size,
        missing,
        not args.no_progress,
    )
    styles = ", ".join(f"{k} {v['hps']:.2f}" for k, v in summary["styles"].items())
    print(f"HPS {args.version}: {styles}; average {summary['average']:.2f}")
    return 0


def val_loss_command(args: argparse.Namespace) -> int:
    from .val_loss import run_infinity_val_loss

    options = val_loss_options(args)
    summary = run_infinity_val_loss(
        model_dir=args.model,
        vae_path=args.vae,
        text_encoder=args.text_encoder,
        manifest=args.manifest,
        out_dir=args.output,
        options=options,
        device=args.device,
        progress=not args.no_progress,
    )
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("loss_bit_mean", "loss_reweight_by_scale", "acc_bit_mean", "acc_token_mean")
            }
        )
    )
    return 0


def _defaults(function: Callable[..., Any]) -> dict[str, Any]:
    """The keyword defaults of a library function whose arguments a command's flags fill."""
    return {
        name: p.default
        for name, p in inspect.signature(function).parameters.items()
        if p.default is not p.empty
    }


def build_parser() -> argparse.ArgumentParser:
    # the flags' defaults are read from the dataclasses and functions the commands fill (their one home)
    from .fid import FIDOptions, compute_fid
    from .generate import generate_benchmark
    from .hps import HPSv21Scorer
    from .imagereward import ImageRewardScorer
    from .val_loss import ValLossOptions

    generate = _defaults(generate_benchmark)
    fid = _defaults(compute_fid)
    # the scorers' own defaults (their constructors: from_pretrained passes these keywords on)
    imagereward = _defaults(ImageRewardScorer.__init__)
    hps = _defaults(HPSv21Scorer.__init__)
    parser = argparse.ArgumentParser(prog="infinity-eval", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prompts", help="write a benchmark's prompt list for your own generator")
    p.add_argument("benchmark", choices=("geneval", "imagereward", "hps"))
    _add_output(p, "prompt list file to write (.jsonl or .txt, see --format)")
    p.add_argument("--format", choices=("jsonl", "txt"), default="jsonl")
    p.add_argument("--images-per-prompt", type=int, default=None, help="default: official (4 / 10 / 1)")
    p.add_argument("--hps-prompts", type=Path, default=None, help="folder with anime.json etc. (HPS only)")

    p = sub.add_parser("generate", help="drive a prompts -> images callable over a benchmark's prompts")
    p.add_argument("benchmark", choices=("geneval", "imagereward", "hps"))
    p.add_argument(
        "--generator", required=True, help="module:factory returning callable(prompts, seed) -> images"
    )
    p.add_argument("--generator-arg", action="append", help="key=value passed to the factory (repeatable)")
    p.add_argument("--images-per-prompt", type=int, default=None)
    p.add_argument("--hps-prompts", type=Path, default=None)
    p.add_argument("--batch-size", type=int, default=generate["batch_size"])
    p.add_argument("--seed", type=int, default=generate["seed"])
    p.add_argument("--image-format", choices=("png", "jpg"), default=generate["image_format"])
    _add_common(p)

    p = sub.add_parser("fid", help="FID between two folders / manifests / .npz statistics")
    p.add_argument(
        "inputs",
        nargs="*",
        type=_input,
        help="A B (B is the cached reference) or one input with --save-stats; folders, manifests and .npz "
        "may be URLs (s3://, gs://; https:// for files)",
    )
    p.add_argument("--weights", type=Path, default=None, help="FID Inception weights (file or folder)")
    p.add_argument("--protocol", choices=("pytorch-fid", "clean"), default=FIDOptions.protocol)
    p.add_argument(
        "--stats-protocol",
        choices=("pytorch-fid", "clean"),
        default=fid["unrecorded_protocol"],
        help="protocol of .npz statistics that record none (plain mu/sigma files); must equal --protocol",
    )
    p.add_argument("--batch-size", type=int, default=FIDOptions.batch_size)
    p.add_argument("--num-workers", type=int, default=fid["num_workers"])
    p.add_argument("--cache-dir", type=Path, default=None, help="cache of reference-set statistics")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument(
        "--save-stats",
        type=Path,
        default=None,
        help="write the .npz statistics (mu, sigma, N, M2) of one input",
    )
    p.add_argument("--merge-stats", type=Path, nargs="+", default=None, help="merge shard .npz files")
    _add_common(p)

    p = sub.add_parser("geneval", help="GenEval on a GenEval folder or manifest, with a detector")
    p.add_argument(
        "input",
        type=_input,
        help="GenEval folder (<index>/metadata.jsonl + samples/) or manifest .jsonl (local, s3://, gs://; "
        "https:// for a manifest)",
    )
    p.add_argument("--detector", default=None, help="module:factory returning a Detector")
    p.add_argument("--detector-arg", action="append", help="key=value passed to the detector factory")
    p.add_argument("--detections", type=Path, default=None, help="precomputed detections JSONL")
    p.add_argument("--mask2former", action="store_true", help="official Mask2Former via mmdet 2.x")
    p.add_argument("--detector-weights", type=Path, default=None)
    p.add_argument("--detector-config", type=Path, default=None)
    p.add_argument(
        "--color-classifier", default=None, help="module:factory returning callable(crops, object_name)"
    )
    p.add_argument("--clip-weights", type=Path, default=None, help="OpenAI ViT-L-14.pt (file or folder)")
    p.add_argument("--clip-vocab", type=Path, default=None, help="bpe_simple_vocab_16e6.txt.gz (open_clip's)")
    p.add_argument(
        "--clip-backend",
        choices=("torch", "open_clip"),
        default="torch",
        help="CLIP implementation for colours",
    )
    p.add_argument("--option", action="append", help="rule option key=value, e.g. threshold=0.3")
    _add_common(p)

    p = sub.add_parser(
        "imagereward", help="ImageReward-v1.0 on a folder (official / Infinity layout) or manifest"
    )
    p.add_argument(
        "input", type=_input, help="folder or manifest .jsonl (local, s3://, gs://; https:// manifest)"
    )
    p.add_argument(
        "--prompts", type=Path, default=None, help="benchmark prompts JSON (default: the shipped 100)"
    )
    p.add_argument("--weights", type=Path, default=None, help="ImageReward.pt (file or folder)")
    p.add_argument("--vocab", type=Path, default=None, help="bert-base-uncased vocab.txt")
    p.add_argument("--batch-size", type=int, default=imagereward["batch_size"])
    _add_common(p)

    p = sub.add_parser("hps", help="HPSv2.1 (or v2.0) on <style>/<idx>.jpg folders or a manifest")
    p.add_argument(
        "input", type=_input, help="folder or manifest .jsonl (local, s3://, gs://; https:// manifest)"
    )
    p.add_argument(
        "--prompts-dir", type=Path, default=None, help="folder with anime.json, concept-art.json, ..."
    )
    p.add_argument("--weights", type=Path, default=None, help="HPS_v2.1_compressed.pt (file or folder)")
    p.add_argument("--vocab", type=Path, default=None, help="bpe_simple_vocab_16e6.txt.gz")
    p.add_argument("--version", choices=("v2.1", "v2.0"), default=hps["version"])
    p.add_argument("--antialias", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--batch-size", type=int, default=hps["batch_size"])
    _add_common(p)

    p = sub.add_parser(
        "val-loss", help="bitwise validation loss / accuracy of an Infinity model (extra 'val-loss')"
    )
    p.add_argument("--model", type=Path, required=True, help="Infinity model folder (save_infinity format)")
    p.add_argument("--vae", type=Path, required=True, help="BSQ-VAE folder or official .pth")
    p.add_argument(
        "--text-encoder", type=Path, required=True, help="T5 folder for infinity_model.TextEncoder"
    )
    p.add_argument("--manifest", type=Path, required=True, help="JSONL of {image, prompt}")
    val = ValLossOptions
    p.add_argument("--pn", default=val.pn, help="pixel budget (default %(default)s)")
    p.add_argument("--noise-apply-layers", type=int, default=val.noise_apply_layers)
    p.add_argument("--noise-apply-strength", type=float, default=val.noise_apply_strength)
    p.add_argument("--no-requant", dest="requant", action="store_false", default=val.noise_apply_requant,
                   help="flip bits without re-quantising the following scales")  # fmt: skip
    p.add_argument("--reweight-by-scale", action="store_true", default=val.reweight_by_scale)
    p.add_argument("--seed", type=int, default=val.seed)
    p.add_argument("--batch-size", type=int, default=val.batch_size)
    _add_common(p)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "prompts": prompts_command,
    "generate": generate_command,
    "fid": fid_command,
    "geneval": geneval_command,
    "imagereward": imagereward_command,
    "hps": hps_command,
    "val-loss": val_loss_command,
}

# Errors that mean "bad input", reported in one line: the package's base error (weights not found, checksum), plus
# what reading a missing or malformed file, a missing optional extra or a bad key=value raises.
_USER_ERRORS = (InfinityEvalError, FileNotFoundError, ValueError, KeyError, ImportError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the subcommand, and return its exit code (2 after a reported error)."""
    # Weights are never downloaded at run time: libraries that could reach a hub (transformers for the T5 of
    # val-loss) run in offline mode unless the user says otherwise.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in _OUTPUT_REQUIRED and args.output is None:
        parser.error(f"{args.command}: the following arguments are required: -o/--output")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command](args)
    except _USER_ERRORS as err:
        print(f"infinity-eval {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
