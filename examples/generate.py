"""Turn a prompt into a PNG with the default model that ships inside infinity-model (no download).

uv run python examples/generate.py "a photo of a red circle above a blue square" -o circle.png --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from infinity_model import InfinityPipeline

# Not re-exported by ``infinity_model``: the folder of the default model (a model folder: parts + settings).
from infinity_model.default_model import default_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", help="what the image shows")
    parser.add_argument("-o", "--output", type=Path, default=Path("infinity.png"), help="PNG to write")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same image)")
    args = parser.parse_args()

    pipe = InfinityPipeline.from_pretrained(default_model_dir())  # its index names the three parts
    # pipe.generation: the pn, ratio, cfg, tau, top_k, top_p and candidates the model was scored with
    g = pipe.generation
    image = pipe(args.prompt, seed=args.seed, ratio=g.ratio, pn=g.pn, **g.sampler_options())[0]
    image.save(args.output)
    print(f"wrote {args.output} ({image.width}x{image.height})")


if __name__ == "__main__":
    main()
