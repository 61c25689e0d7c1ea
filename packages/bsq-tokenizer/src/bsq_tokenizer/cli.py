"""bsq-tokenizer command line: reconstruct, encode, decode and inspect with released or our checkpoints."""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import VAE_PRESETS, VAEConfig
from .errors import BSQTokenizerError
from .image import (
    center_crop_to_multiple,
    check_multiple,
    image_to_tensor,
    load_image,
    psnr,
    tensor_to_images,
)
from .io import (
    CheckpointError,
    config_from_metadata,
    config_metadata,
    detect_preset,
    infer_vae_config,
    load_official_vae,
    read_state_dict,
    saved_vae_config,
)
from .safetensors_io import load_safetensors, load_safetensors_metadata, save_safetensors
from .schedules import (
    PIXEL_BUDGETS,
    VAE_STRIDE,
    default_latent_schedule,
    get_schedule,
    resize_crop_for_template,
)
from .vae import BSQVAE

logger = logging.getLogger("bsq_tokenizer.cli")

_BITS_FORMATS = (".safetensors", ".npz")


def parse_scales(text: str) -> list[tuple[int, int]] | None:
    """'auto' -> None; '1,2,4' -> squares; '1x1,2x3' -> (h, w) pairs (latent grid)."""
    if text.strip().lower() == "auto":
        return None
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        try:
            h, w = (int(v) for v in item.split("x")) if "x" in item else (int(item), int(item))
        except ValueError:
            raise ValueError(
                f"bad scale {item!r} in --scales {text!r}; use 'auto', '1,2,4,8' or '1x1,2x3,...'"
            ) from None
        out.append((h, w))
    return out


def _load_model(args: argparse.Namespace) -> BSQVAE:
    model = load_official_vae(args.checkpoint, args.preset, device=args.device)
    logger.info("loaded %s (%s)", args.checkpoint, model.config)
    return model


def _prepare(
    args: argparse.Namespace, config: VAEConfig
) -> tuple[torch.Tensor, list[tuple[int, int]] | None]:
    """Load and resize/crop the image; return (image tensor in [-1, 1], VAE-grid scales or None for default)."""
    img = load_image(args.image)
    if args.pn is not None:
        if config.token_stride != VAE_STRIDE:
            raise ValueError(
                f"pixel budgets assume {VAE_STRIDE} pixels per token, but this tokenizer has {config.token_stride}; "
                "give --scales explicitly instead of --pn"
            )
        w, h = img.size
        schedule = get_schedule(h / w, args.pn)
        img = resize_crop_for_template(img, h / w, args.pn)
        template_scales = list(schedule.vae_scales(patchify=config.patchify))
        logger.info(
            "template %s, pn %s -> %dx%d pixels, %d scales",
            schedule.template,
            args.pn,
            *schedule.pixel_hw,
            len(template_scales),
        )
        return image_to_tensor(img), template_scales
    if args.crop:
        img = center_crop_to_multiple(img, config.patch_size)
    try:
        check_multiple(img.size[0], img.size[1], config.patch_size)
    except ValueError as exc:
        raise ValueError(f"{args.image}: {exc}; on the command line use --crop or --pn") from None
    scales = parse_scales(args.scales)
    if scales is None:
        latent = (img.size[1] // config.patch_size, img.size[0] // config.patch_size)
        try:
            scales = list(default_latent_schedule(latent))
        except ValueError as exc:
            raise ValueError(
                f"{exc}\nUse --pn {{{','.join(PIXEL_BUDGETS)}}} to resize to a released schedule."
            ) from None
    return image_to_tensor(img), scales


def _save_image(x: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor_to_images(x)[0].save(path)


def reconstruct_command(args: argparse.Namespace) -> int:
    model = _load_model(args)
    x, scales = _prepare(args, model.config)
    x = x.to(args.device)
    with torch.no_grad():
        out = model.encode_to_bits(x, scales)
        recon = model.decode(out.codes)
    _save_image(recon, args.output)
    print(f"scales: {' '.join(f'{h}x{w}' for h, w in out.scales)}")
    print(f"PSNR: {psnr(recon, x):.2f} dB  ({x.shape[2]}x{x.shape[3]} px) -> {args.output}")
    return 0


def encode_command(args: argparse.Namespace) -> int:
    if args.output.suffix not in _BITS_FORMATS:
        raise ValueError(f"-o {args.output}: bits files must end in {' or '.join(_BITS_FORMATS)}")
    model = _load_model(args)
    x, scales = _prepare(args, model.config)
    with torch.no_grad():
        out = model.encode_to_bits(x.to(args.device), scales)
    tensors = {f"bits.{k}": b.to(torch.uint8).cpu() for k, b in enumerate(out.bits)}
    meta = {
        "scales": json.dumps([list(s) for s in out.scales]),
        **config_metadata(model.config),
        "image_hw": json.dumps([int(x.shape[2]), int(x.shape[3])]),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if args.output.suffix == ".safetensors":
        save_safetensors(tensors, args.output, metadata=meta)
    else:
        arrays: dict[str, Any] = {k: v.numpy() for k, v in tensors.items()}
        arrays.update({f"meta.{k}": np.array(v) for k, v in meta.items()})
        np.savez_compressed(args.output, **arrays)
    total = sum(b.numel() for b in out.bits)
    print(f"{len(out.bits)} scales, {total} bits -> {args.output}")
    return 0


def read_bits(path: Path) -> tuple[list[torch.Tensor], dict[str, str]]:
    """Per-scale bits ``(B, h, w, d)`` and metadata of a file written by ``bsq-tokenizer encode``."""
    if path.suffix == ".safetensors":
        tensors, meta = load_safetensors(path), load_safetensors_metadata(path)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            tensors = {k: torch.from_numpy(data[k]) for k in data.files if k.startswith("bits.")}
            meta = {k.removeprefix("meta."): str(data[k]) for k in data.files if k.startswith("meta.")}
    else:
        raise ValueError(f"{path}: bits files must end in {' or '.join(_BITS_FORMATS)}")
    n = len(tensors)
    if n == 0 or set(tensors) != {f"bits.{k}" for k in range(n)}:
        raise ValueError(f"{path}: expected tensors bits.0 .. bits.N-1, found {sorted(tensors)}")
    return [tensors[f"bits.{k}"].long() for k in range(n)], meta


def decode_command(args: argparse.Namespace) -> int:
    bits, meta = read_bits(args.bits)
    model = _load_model(args)
    written = config_from_metadata(meta)
    if written is not None and written.codebook_dim != model.config.codebook_dim:
        raise ValueError(
            f"{args.bits} holds {written.codebook_dim}-bit codes but {args.checkpoint} is a "
            f"{model.config.codebook_dim}-bit tokenizer; decode with the checkpoint used for encoding"
        )
    with torch.no_grad():
        img = model.decode_from_bits([b.to(args.device) for b in bits])
    _save_image(img, args.output)
    print(f"{len(bits)} scales -> {img.shape[2]}x{img.shape[3]} px -> {args.output}")
    return 0


def info_command(args: argparse.Namespace) -> int:
    sd = read_state_dict(args.checkpoint, use_ema=args.ema)
    saved = saved_vae_config(args.checkpoint)
    params = sum(v.numel() for k, v in sd.items() if not k.endswith(".mask"))
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in sd.values()})
    presets = detect_preset(sd)
    print(f"file:        {args.checkpoint}")
    print(f"entries:     {len(sd)}")
    print(f"parameters:  {params:,}")
    print(f"dtypes:      {', '.join(dtypes)}")
    print(f"preset:      {' / '.join(presets) if presets else '(none matches exactly)'}")
    if saved is not None:
        print(f"config:      {saved} (from metadata)")
    else:
        try:
            print(f"config:      {infer_vae_config(sd)} (inferred from shapes)")
        except CheckpointError as exc:
            print(f"config:      cannot infer ({exc})")
    return 0


def library_default(function: Callable[..., Any], name: str) -> Any:
    """The default of ``function``'s keyword ``name``: a flag that fills it takes it from there (its one home)."""
    return inspect.signature(function).parameters[name].default


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", "-c", type=Path, required=True, help="official .pth or our .safetensors")
    p.add_argument(
        "--preset",
        choices=list(VAE_PRESETS),
        default=library_default(load_official_vae, "config"),
        help="architecture (default: from the file's metadata or inferred from its shapes)",
    )
    p.add_argument(
        "--device",
        default=library_default(load_official_vae, "device"),
        help="torch device (default %(default)s)",
    )


def _add_image_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", type=Path)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--pn", choices=PIXEL_BUDGETS, help="resize+crop to this pixel budget's template size")
    group.add_argument(
        "--scales",
        default="auto",
        help="'auto' (default table for the latent size), '1,2,4,8' or '1x1,2x3,...'",
    )
    p.add_argument(
        "--crop", action="store_true", help="centre-crop to a multiple of the stride instead of failing"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bsq-tokenizer", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reconstruct", help="encode -> bits -> decode an image; print PSNR")
    _add_image_args(p)
    _add_model_args(p)
    p.add_argument("-o", "--output", type=Path, required=True)

    p = sub.add_parser("encode", help="encode an image to per-scale bits (.safetensors or .npz)")
    _add_image_args(p)
    _add_model_args(p)
    p.add_argument("-o", "--output", type=Path, required=True)

    p = sub.add_parser("decode", help="decode a bits file written by 'encode' to an image")
    p.add_argument("bits", type=Path)
    _add_model_args(p)
    p.add_argument("-o", "--output", type=Path, required=True)

    p = sub.add_parser("info", help="describe a checkpoint: entries, parameters, matching preset")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--ema", action="store_true", default=library_default(read_state_dict, "use_ema"),
                   help="inspect the 'ema' weights of an official file")  # fmt: skip
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "reconstruct": reconstruct_command,
    "encode": encode_command,
    "decode": decode_command,
    "info": info_command,
}

# Errors that mean "bad input", reported in one line: the package's base error, plus the ValueError/OSError that
# image and tensor helpers raise for a wrong size or a missing file.
_USER_ERRORS = (BSQTokenizerError, ValueError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the subcommand, and return its exit code (2 after a reported error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command](args)
    except _USER_ERRORS as exc:
        print(f"bsq-tokenizer {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
