"""Score a folder of another model's images with GenEval's rules, offline, using the shapes-world detector.

The folder has GenEval's layout: ``<index>/metadata.jsonl`` (the prompt's metadata object) and
``<index>/samples/<n>.png``. The exact colour-blob detector of the synthetic shapes world stands in for
GenEval's Mask2Former, so nothing is downloaded; with real photos, use ``infinity-eval geneval --mask2former``.

    uv run python examples/evaluate_folder.py path/to/geneval_images -o geneval_results
"""

from __future__ import annotations

import argparse
from pathlib import Path

from infinity_eval import load_detector, run_geneval

# Not re-exported by infinity_eval: the shapes world's palette colour classifier (GenEval's colour step).
from infinity_eval.geneval.shapes import PaletteColorClassifier
from infinity_eval.io import read_geneval_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="images in GenEval's layout")
    parser.add_argument("-o", "--output", type=Path, default=Path("geneval_results"), help="results folder")
    args = parser.parse_args()

    records = read_geneval_folder(args.folder)  # one record per image, with its prompt's metadata
    detector = load_detector("infinity_eval.geneval.shapes:ShapesDetector")  # any `module:factory` works
    summary = run_geneval(
        records, detector, args.output, color_classifier=PaletteColorClassifier(), detector_name="shapes"
    )  # resumable: images already in <output>/results.jsonl are not scored again
    print(f"GenEval overall {summary['overall']:.4f} on {summary['images']} images")
    for tag, score in summary["tags"].items():
        print(f"  {tag}: {score:.4f}")
    print(f"results in {args.output} (summary.json, per_tag.csv, per_prompt.csv)")


if __name__ == "__main__":
    main()
