"""Start-up of ``infinity generate`` on the shipped default model against ``import torch`` alone.

    uv run --no-sync python benchmarks/startup.py [--repeats 5] [--threads 2]

Each row is a fresh Python process, timed from outside (wall clock, best of ``--repeats`` round-robin rounds):
``import torch`` alone; ``infinity --help``; ``infinity generate "…" -o out.png`` today (the T5 text encoder
through ``transformers``, as before the plain-torch path; forced by making that path decline) and now; and
the work part (text encoding, sampling, decoding, writing the PNG) timed inside a process that already loaded
the pipeline. The budget is ``import torch`` + 1.0 s. ``--cold`` runs without bytecode caches (every module
compiled from source), the default with warm caches in a private ``PYTHONPYCACHEPREFIX`` folder (this
machine sets ``PYTHONDONTWRITEBYTECODE``, so the usual ``__pycache__`` folders are never written).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "a red circle above a blue square"

_TODAY = (
    "import sys, infinity_model.t5_encoder as t; t.load_local_t5 = lambda *a: None; "
    "from infinity_model.cli import main; sys.exit(main(sys.argv[1:]))"
)
_NOW = "import sys; from infinity_model.cli import main; sys.exit(main(sys.argv[1:]))"
_WORK = """
import sys, time, torch
from infinity_model import InfinityPipeline
from infinity_model.default_model import load_default_model
dm = load_default_model(None)
g = dm.generation
pipe = InfinityPipeline.from_pretrained(dm.model, dm.vae, dm.text_encoder, device="cpu", dtype=torch.float32)
options = {k: getattr(g, k) for k in ("cfg", "tau", "top_k", "top_p", "candidates")}
best = float("inf")
for _ in range(3):  # the first call also warms allocations
    t0 = time.perf_counter()
    schedule = pipe.schedule(g.ratio, g.pn)
    pipe([sys.argv[2]], schedule=schedule, seed=0, **options)[0].save(sys.argv[4])
    best = min(best, time.perf_counter() - t0)
print(f"WORK {best:.6f}")
"""


def _run(code: str | None, args: list[str], env: dict[str, str]) -> tuple[float, str]:
    command = [sys.executable, "-c", code, *args] if code is not None else [*args]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="no bytecode caches (compile every module)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        out = str(Path(tmp) / "out.png")
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPYCACHEPREFIX=str(Path(tmp) / "pyc"))
        if args.cold:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
        generate = ["generate", PROMPT, "-o", out, "--seed", "0"]
        rows: dict[str, tuple[str | None, list[str]]] = {
            "import torch": ("import torch", []),
            "infinity --help": (_NOW, ["--help"]),
            "infinity generate, today (transformers T5)": (_TODAY, generate),
            "infinity generate, now": (_NOW, generate),
            "work part (in a loaded process)": (_WORK, generate),
        }
        images = {}
        for name, (code, argv) in rows.items():  # warm-up round: bytecode caches, page cache; and the outputs
            _run(code, argv, env)
            if "generate," in name:
                images[name] = Path(out).read_bytes()
        same = len(set(images.values())) == 1
        times: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.repeats):
            for name, (code, argv) in rows.items():
                seconds, stdout = _run(code, argv, env)
                if name.startswith("work part"):
                    seconds = float(stdout.split("WORK ")[1].split()[0])
                times[name].append(seconds)
    best = {name: min(t) for name, t in times.items()}
    budget = best["import torch"] + 1.0
    caches = "cold (no bytecode caches)" if args.cold else "warm bytecode caches"
    print(
        f"{caches}, {args.threads} threads, best of {args.repeats}; budget = import torch + 1.0 s = {budget:.2f} s; "
        f"today's and the new PNG are byte-identical: {same}"
    )
    print("\n| process | best s | minus import torch | within budget |\n|---|---:|---:|---|")
    for name, seconds in best.items():
        extra = "" if name.startswith(("import torch", "work")) else f"{seconds - best['import torch']:+.2f}"
        fits = "" if not extra else ("yes" if seconds <= budget else "no")
        print(f"| {name} | {seconds:.2f} | {extra} | {fits} |")
    if not same:
        raise SystemExit("today's and the new path wrote different PNGs")


if __name__ == "__main__":
    main()
