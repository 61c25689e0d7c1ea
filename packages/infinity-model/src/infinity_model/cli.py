"""The ``infinity`` command line: ``infinity generate`` (text to image files), ``infinity edit``, ``infinity serve``
(a web page and an HTTP API) and ``infinity info``.

Each command fills the dataclasses the Python API takes (:class:`~infinity_model.GenerationConfig`,
:class:`~infinity_model.SamplerConfig`, ``ServeLimits``), so the defaults live there only.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InfinityModelError
from .generation import GenerationConfig

if TYPE_CHECKING:
    from bsq_tokenizer import ScaleSchedule

    from .pipeline import InfinityPipeline
    from .sampler import SamplerConfig

__all__ = [
    "COMMANDS",
    "build_parser",
    "generation_config",
    "load_pipeline",
    "main",
    "resolve_model",
    "sampler_config",
]

logger = logging.getLogger("infinity_model.cli")

# Sampling settings when neither the command line nor the model folder gives them (shown in --help).
_DEFAULTS = GenerationConfig()


def _ratio(text: str) -> float:
    """'0.75' -> 0.75; '3:4' -> 0.75: height / width, as a number or as HEIGHT:WIDTH (the web page's notation)."""
    height, sep, width = text.partition(":")
    try:
        value = float(height) / float(width) if sep else float(text)
    except (ValueError, ZeroDivisionError) as err:
        raise argparse.ArgumentTypeError(
            f"expected height / width as a number (0.75) or HEIGHT:WIDTH (3:4), got {text!r}"
        ) from err
    if not value > 0:
        raise argparse.ArgumentTypeError(f"height / width must be > 0, got {text!r}")
    return value


def _float_list(text: str) -> float | tuple[float, ...]:
    """'3' -> 3.0; '3,3,4' -> (3.0, 3.0, 4.0) (one value per scale)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected a number or a comma-separated list of numbers, got {text!r}"
        ) from err
    return values[0] if len(values) == 1 else values


def _scales(text: str) -> tuple[tuple[int, int], ...]:
    """'1x1,2x2,4x4' -> ((1, 1), (2, 2), (4, 4)): a custom schedule's token grids (height x width)."""
    try:
        grids = tuple(tuple(int(v) for v in item.lower().split("x")) for item in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected grids like 1x1,2x2,4x4, got {text!r}") from err
    if any(len(g) != 2 or min(g) < 1 for g in grids):
        raise argparse.ArgumentTypeError(f"expected grids like 1x1,2x2,4x4 (positive HxW), got {text!r}")
    return grids  # type: ignore[return-value]


def _add_model_options(cmd: argparse.ArgumentParser) -> None:
    """--model/--vae/--text-encoder and friends, shared by the subcommands that load a pipeline."""
    cmd.add_argument("--model", type=Path,
                     help="a model folder (with model_index.json: the three parts and their generation settings), "
                     "or the transformer alone: official .pth, sharded folder, or our safetensors folder (default: "
                     "the shipped shapes model, used when none of --model/--vae/--text-encoder is given)")  # fmt: skip
    cmd.add_argument(
        "--vae",
        type=Path,
        required=False,
        help="BSQ-VAE: official infinity_vae_*.pth, a save_vae folder, or an older .safetensors file",
    )
    cmd.add_argument("--text-encoder", help="local flan-t5-xl folder (or a hub id with --allow-download)")
    cmd.add_argument(
        "--allow-download", action="store_true", help="let a hub id for --text-encoder be fetched"
    )
    cmd.add_argument(
        "--model-preset", help="architecture preset if it cannot be inferred (e.g. 2b, 8b, layer12)"
    )
    cmd.add_argument(
        "--vae-preset", help="VAE preset if it cannot be inferred (d16, d24, d32, d64, d14_patchify)"
    )


def _add_sampling_options(cmd: argparse.ArgumentParser) -> None:
    """Template and sampler settings (--ratio, --pn, --scales, --cfg, --tau, ..., --seed), shared by generate and
    edit. The GenerationConfig flags default to None: unset, the model folder's settings apply (else the
    dataclass defaults shown in the help)."""
    from .sampler import SamplerConfig  # imports torch: kept out of the module's import

    cmd.add_argument("--ratio", type=_ratio, default=None, metavar="RATIO",
                     help=f"height / width, as 0.75 or 3:4; the nearest template is used (default "
                     f"{_DEFAULTS.ratio:g} or the model folder's; edit: the source's own)")  # fmt: skip
    cmd.add_argument("--pn", default=None,
                     help=f"pixel budget: 0.06M, 0.25M, 0.60M or 1M (default {_DEFAULTS.pn} or the model folder's)")  # fmt: skip
    cmd.add_argument(
        "--scales", type=_scales, help="custom token grids instead of --ratio/--pn, e.g. 1x1,2x2,4x4,8x8"
    )
    cmd.add_argument(
        "--cfg",
        type=_float_list,
        default=None,
        help=f"guidance scale, or one per scale: 3,3,4,... (default {_DEFAULTS.cfg:g} or the model folder's)",
    )
    cmd.add_argument(
        "--tau",
        type=_float_list,
        default=None,
        help=f"temperature, or one per scale (default {_DEFAULTS.tau:g} or the model folder's)",
    )
    cmd.add_argument("--top-k", type=int, default=None, help=f"default {_DEFAULTS.top_k} (0 disables)")
    cmd.add_argument("--top-p", type=float, default=None, help=f"default {_DEFAULTS.top_p:g} (0 disables)")
    cmd.add_argument("--cfg-insertion-layer", type=int, default=SamplerConfig.cfg_insertion_layer,
                     help="0: guide logits; -n: after block depth-n (default %(default)s)")  # fmt: skip
    cmd.add_argument("--cfg-off-last", type=int, default=SamplerConfig.cfg_off_last,
                     help="sample the last N scales without guidance (conditional branch only, faster; "
                     "default %(default)s)")  # fmt: skip
    cmd.add_argument(
        "--candidates",
        type=int,
        default=None,
        help=f"draws per prompt; keep the one the model finds most likely (default {_DEFAULTS.candidates} or "
        "the model folder's)",
    )
    cmd.add_argument("--seed", type=int, default=0, help="image i of a run uses seed + i")
    cmd.add_argument(
        "--negative-prompt", help="prompt for the unconditional branch (default: learned embedding)"
    )


def _add_runtime_options(cmd: argparse.ArgumentParser) -> None:
    """--device and --dtype."""
    cmd.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    cmd.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                     help="autocast precision of the transformer blocks and the VAE decoder; bfloat16 works "
                          "on CPU too (auto: bfloat16 on CUDA, float32 on CPU)")  # fmt: skip


def _add_loading_options(cmd: argparse.ArgumentParser) -> None:
    """The model options and --device/--dtype: what a command that only loads a pipeline needs (serve)."""
    _add_model_options(cmd)
    _add_runtime_options(cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infinity", description="Infinity bitwise autoregressive text-to-image."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate images from prompts")
    gen.add_argument("prompts", nargs="*", help="one or more prompts (or use --prompts-file)")
    gen.add_argument(
        "--prompts-file", type=Path, help="text file with one prompt per line (blank lines skipped)"
    )
    _add_model_options(gen)
    _add_sampling_options(gen)
    gen.add_argument("--batch-size", type=int, default=1, help="prompts sampled together")
    _add_runtime_options(gen)
    gen.add_argument("-o", "--output", type=Path, default=Path("out.png"),
                     help="output file; with several prompts NAME_000.png, NAME_001.png, ... (or a folder)")  # fmt: skip

    edit = sub.add_parser(
        "edit", help="inpaint, outpaint or vary a real image (same sampler options as generate)"
    )
    edit.add_argument("source", type=Path, help="the image to edit (any size: cover-resized to the template)")
    edit.add_argument("prompt", help="what the edited image shows")
    what = edit.add_mutually_exclusive_group()
    what.add_argument("--mask", type=Path,
                      help="mask image, white = regenerate (resized to the source with a notice if it differs)")  # fmt: skip
    what.add_argument("--outpaint", type=_ratio, metavar="RATIO",
                      help="place the source on a canvas of this height / width (0.75 or 3:4) and generate "
                      "the rest")  # fmt: skip
    edit.add_argument("--keep-scales", type=int, metavar="K",
                      help="hold the source's first K scales entirely (without --mask: a variation)")  # fmt: skip
    edit.add_argument("--dilate", type=int, default=0, metavar="N",
                      help="grow the mask by N tokens of the finest grid (default 0)")  # fmt: skip
    _add_model_options(edit)
    _add_sampling_options(edit)
    _add_runtime_options(edit)
    edit.add_argument(
        "-o", "--output", type=Path, default=Path("edit.png"), help="output PNG (default edit.png)"
    )

    from .serve.cli import add_serve_parser

    add_serve_parser(sub, _add_loading_options)

    info = sub.add_parser("info", help="describe a transformer checkpoint (preset, parameters)")
    info.add_argument(
        "checkpoint", type=Path, help="official .pth, sharded folder, or our safetensors folder"
    )
    return parser


def _read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompts)
    if args.prompts_file is not None:
        if not args.prompts_file.is_file():
            raise FileNotFoundError(f"prompts file {args.prompts_file} does not exist")
        prompts += [line.strip() for line in args.prompts_file.read_text().splitlines() if line.strip()]
    if not prompts:
        raise InfinityModelError("no prompt given; pass one or more prompts or --prompts-file FILE")
    return prompts


def _output_paths(output: Path, count: int) -> list[Path]:
    if output.suffix == "" or output.is_dir():
        return [output / f"{i:03d}.png" for i in range(count)]
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}_{i:03d}{output.suffix}") for i in range(count)]


def resolve_model(args: argparse.Namespace) -> GenerationConfig:
    """Fill --model/--vae/--text-encoder from a model folder (``--model FOLDER`` alone, or the default model when
    none is given); check that all three are set. Returns the folder's generation settings (else the defaults).
    Raises :class:`InfinityModelError` naming the option that is missing.
    """
    from .model_folder import LEGACY_INDEX_FILE, MODEL_INDEX_FILE, read_model_folder

    settings = GenerationConfig()
    folder: Path | None = None
    if args.model is None and args.vae is None and args.text_encoder is None:
        from .default_model import default_model_dir

        folder = default_model_dir()
        logger.info("no --model: using the default model in %s", folder)
    elif (
        args.vae is None
        and args.text_encoder is None
        and any((Path(args.model) / name).is_file() for name in (MODEL_INDEX_FILE, LEGACY_INDEX_FILE))
    ):
        folder = Path(args.model)  # a model folder: its index names the three parts
    if folder is not None:
        index = read_model_folder(folder)
        args.model, args.vae, args.text_encoder = index.model, index.vae, index.text_encoder
        settings = index.generation
    if args.model is None:
        raise InfinityModelError(
            "pass --model (or none of --model/--vae/--text-encoder to use the default model)"
        )
    if args.vae is None:
        raise InfinityModelError(
            "pass --vae (the BSQ-VAE that matches the model), or a model folder as --model"
        )
    if args.text_encoder is None:
        raise InfinityModelError(
            "pass --text-encoder (a local flan-t5-xl folder), or a model folder as --model"
        )
    return settings


def load_pipeline(args: argparse.Namespace, generation: GenerationConfig | None = None) -> InfinityPipeline:
    """Load the pipeline named by the model options (after :func:`resolve_model`) on --device/--dtype;
    ``generation`` (the settings :func:`resolve_model` returned) becomes ``pipe.generation``."""
    import torch

    from .pipeline import InfinityPipeline

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    return InfinityPipeline.from_pretrained(
        model=args.model,
        vae=args.vae,
        text_encoder=args.text_encoder,
        generation=generation,
        device=device,
        dtype=dtype,
        model_preset=args.model_preset,
        vae_preset=args.vae_preset,
        allow_download=args.allow_download,
    )


def generation_config(args: argparse.Namespace, settings: GenerationConfig | None = None) -> GenerationConfig:
    """``settings`` (the model folder's; default :class:`GenerationConfig`) with the flags the user gave in place
    of its fields (--pn, --ratio, --cfg, --tau, --top-k, --top-p, --candidates)."""
    given = {
        f.name: getattr(args, f.name) for f in fields(GenerationConfig) if getattr(args, f.name) is not None
    }
    return replace(settings or GenerationConfig(), **given)


def sampler_config(args: argparse.Namespace, generation: GenerationConfig) -> SamplerConfig:
    """The :class:`SamplerConfig` of a generate/edit command: ``generation``'s sampler fields plus the flags that
    only the sampler has (--cfg-insertion-layer, --cfg-off-last). Checked here, before any model is loaded."""
    from .sampler import SamplerConfig

    return SamplerConfig(
        **generation.sampler_options(),
        cfg_insertion_layer=args.cfg_insertion_layer,
        cfg_off_last=args.cfg_off_last,
    )


def _schedule(args: argparse.Namespace, pipe: InfinityPipeline, ratio: float, pn: str) -> ScaleSchedule:
    from bsq_tokenizer.schedules import custom_schedule

    if args.scales is not None:
        h, w = args.scales[-1]
        return custom_schedule(args.scales, template=h / w)
    return pipe.schedule(ratio, pn)


def _prepare(args: argparse.Namespace) -> tuple[InfinityPipeline, GenerationConfig, dict[str, Any]]:
    """Resolve the model, build the command's GenerationConfig and SamplerConfig (so a bad flag fails before the
    model loads), then load the pipeline. Returns it, the settings and the sampler's keywords for the pipeline."""
    settings = resolve_model(args)
    generation = generation_config(args, settings)
    sampler = sampler_config(args, generation)
    return load_pipeline(args, settings), generation, asdict(sampler)


def generate_command(args: argparse.Namespace) -> int:
    """``infinity generate``: one PNG per prompt, prompts sampled --batch-size at a time."""
    from tqdm import tqdm

    if args.batch_size < 1:
        raise InfinityModelError(f"--batch-size must be >= 1, got {args.batch_size}")
    prompts = _read_prompts(args)
    pipe, generation, sampler = _prepare(args)
    paths = _output_paths(args.output, len(prompts))
    for path in {p.parent for p in paths}:
        path.mkdir(parents=True, exist_ok=True)
    schedule = _schedule(args, pipe, generation.ratio, generation.pn)
    for start in range(0, len(prompts), args.batch_size):
        chunk = prompts[start : start + args.batch_size]
        with tqdm(
            total=schedule.num_scales, desc=f"images {start + 1}-{start + len(chunk)}", unit="scale"
        ) as bar:
            images = pipe(
                chunk,
                negative_prompt=args.negative_prompt,
                schedule=schedule,
                **sampler,
                seed=args.seed + start,
                callback=lambda step: bar.update(1),
            )
        for image, path in zip(images, paths[start : start + len(chunk)], strict=True):
            image.save(path)
            print(path)
    return 0


def edit_command(args: argparse.Namespace) -> int:
    """``infinity edit``: one edited image of the template's size (inpainting, outpainting or a variation)."""
    from .edit import open_image

    if args.mask is None and args.outpaint is None and args.keep_scales is None:
        raise InfinityModelError("pass --mask MASK.png, --outpaint RATIO or --keep-scales K")
    if args.outpaint is not None and args.keep_scales is not None:
        raise InfinityModelError("--keep-scales applies to --mask edits and variations, not to --outpaint")
    source = open_image(args.source, "source image")  # FileNotFoundError / ValueError name the file
    mask = None if args.mask is None else open_image(args.mask, "mask", rgb=False)
    pipe, generation, sampler = _prepare(args)
    options = dict(sampler, seed=args.seed, negative_prompt=args.negative_prompt)
    if args.outpaint is not None:
        schedule = _schedule(args, pipe, args.outpaint, generation.pn)
        images = pipe.outpaint(source, args.prompt, ratio=args.outpaint, schedule=schedule, dilate=args.dilate,
                               **options)  # fmt: skip
    else:
        ratio = args.ratio if args.ratio is not None else source.height / source.width
        schedule = _schedule(args, pipe, ratio, generation.pn)
        images = pipe.edit(source, mask, args.prompt, schedule=schedule, keep_scales=args.keep_scales,
                           dilate=args.dilate, **options)  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(args.output)
    print(args.output)
    return 0


def serve_command(args: argparse.Namespace) -> int:
    """``infinity serve``: the web page and the HTTP API until interrupted (needs infinity-model[serve])."""
    from .serve.cli import serve

    return serve(args)


def info_command(args: argparse.Namespace) -> int:
    """``infinity info``: preset, parameters and layout of a transformer checkpoint."""
    from .checkpoint import describe_checkpoint

    for key, value in describe_checkpoint(args.checkpoint).items():
        print(f"{key}: {value}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "generate": generate_command,
    "edit": edit_command,
    "serve": serve_command,
    "info": info_command,
}


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "bad input", reported in one line: the package's base error (checkpoint, model folder,
    usage), the tokenizer's (its VAE files), and the ValueError/OSError that image and file handling raise."""
    from bsq_tokenizer import BSQTokenizerError

    return (InfinityModelError, BSQTokenizerError, ValueError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the subcommand, and return its exit code (2 after a reported error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command](args)
    except _user_errors() as err:
        print(f"infinity {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
