"""Load the released Infinity-2B from its official files and generate an image.

The three parts are local paths (nothing is downloaded): the transformer ``infinity_2b_reg.pth``, the BSQ-VAE
``infinity_vae_d32reg.pth`` and a flan-t5-xl folder (``google/flan-t5-xl`` saved with ``save_pretrained``).
The architecture is read from the checkpoint's tensor shapes, so the same script loads any official-layout
Infinity checkpoint.

    uv run python examples/load_released_2b.py "a red fox in the snow" \
        --model weights/infinity_2b_reg.pth --vae weights/infinity_vae_d32reg.pth \
        --text-encoder weights/flan-t5-xl -o fox.png --pn 1M --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from infinity_model import InfinityPipeline
from infinity_model.checkpoint import describe_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", help="what the image shows")
    parser.add_argument("--model", type=Path, default=Path("infinity_2b_reg.pth"), help="transformer .pth")
    parser.add_argument("--vae", type=Path, default=Path("infinity_vae_d32reg.pth"), help="BSQ-VAE .pth")
    parser.add_argument(
        "--text-encoder", type=Path, default=Path("flan-t5-xl"), help="local flan-t5-xl folder"
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("infinity_2b.png"), help="PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same image)")
    parser.add_argument("--pn", default="1M", help="pixel budget: 0.06M, 0.25M, 0.60M or 1M (1024x1024)")
    parser.add_argument("--ratio", type=float, default=1.0, help="aspect ratio height / width")
    parser.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance scale")
    parser.add_argument("--tau", type=float, default=0.5, help="sampling temperature")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    for key, value in describe_checkpoint(args.model).items():  # format, preset, depth, width, parameters
        print(f"{key}: {value}")
    pipe = InfinityPipeline.from_pretrained(
        args.model, args.vae, args.text_encoder, device=args.device
    )  # bf16 autocast on CUDA, fp32 on CPU
    image = pipe(args.prompt, seed=args.seed, pn=args.pn, ratio=args.ratio, cfg=args.cfg, tau=args.tau)[0]
    image.save(args.output)
    print(f"wrote {args.output} ({image.width}x{image.height})")


if __name__ == "__main__":
    main()
