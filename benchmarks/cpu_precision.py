"""Training-step speed of the shapes recipe's two models under the trainers' precision and kernel options.

    uv run --no-sync python benchmarks/cpu_precision.py [--steps 10] [--threads 2]

Models, batch sizes, schedules and loss weights come from ``recipes/shapes/*.toml``. Transformer: its
``data.scales`` (128x128), forward + bit loss + backward + AdamW, in fp32 or bf16 autocast
(``deepspeed.precision``), with torch's SDPA kernel choice or the math kernel (``transformer.attention_backend``).
Tokenizer: the 1:1 schedule of its ``data.pn``, encoder + quantizer (fp32, as the trainer) + decoder + L1/L2 +
backward + AdamW, in fp32 or bf16, NCHW or channels_last (``tokenizer_model.channels_last``). Random weights and inputs; no data loading, no DeepSpeed.
Prints ms per step and the speed-up against fp32 with the default kernels, measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import torch

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "shapes"


def _autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def transformer_step(bf16: bool, math: bool) -> Callable[[], None]:
    from bsq_tokenizer.schedules import custom_schedule
    from infinity_model import Infinity, TextCondition
    from infinity_train import load_run_config
    from infinity_train.losses import bit_cross_entropy
    from infinity_train.transformer_trainer import build_infinity_config
    from torch.nn.attention import SDPBackend, sdpa_kernel

    run = load_run_config(RECIPE / "transformer.toml")
    config = build_infinity_config(run)
    model = Infinity(config)
    model.init_weights(generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    schedule = custom_schedule(run.data.scales)
    g = torch.Generator().manual_seed(1)
    batch, bits = run.data.batch_size, config.d_vae
    lengths = torch.randint(6, 14, (batch,), generator=g)
    text = TextCondition(torch.randn(int(lengths.sum()), config.text_channels, generator=g), lengths)
    inputs = torch.randn(batch, schedule.seq_len - 1, bits, generator=g).sign()
    labels = torch.randint(0, 2, (batch, schedule.seq_len, bits), generator=g)
    drop = torch.rand(batch, generator=g) < 0.1

    def step() -> None:
        kernel = sdpa_kernel(SDPBackend.MATH) if math else contextlib.nullcontext()
        with _autocast(bf16), kernel:
            logits = model(text, inputs, schedule, drop)
        loss = bit_cross_entropy(logits.float(), labels, schedule.scales).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def tokenizer_step(bf16: bool, channels_last: bool) -> Callable[[], None]:
    from bsq_tokenizer import BSQVAE, get_schedule
    from infinity_train import load_run_config
    from infinity_train.tokenizer_trainer import build_vae_config

    run = load_run_config(RECIPE / "tokenizer.toml")
    torch.manual_seed(0)
    vae = BSQVAE(build_vae_config(run))
    schedule = get_schedule(1.0, run.data.pn)  # the 1:1 bucket
    scales = schedule.vae_scales(vae.config.patchify)
    images = torch.rand(
        run.data.batch_size, 3, *schedule.pixel_hw, generator=torch.Generator().manual_seed(1)
    )
    images = images * 2 - 1
    l1, l2 = run.tokenizer_loss.l1_weight, run.tokenizer_loss.l2_weight
    if channels_last:
        vae = vae.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-4)

    def step() -> None:
        with _autocast(bf16):
            z = vae.encoder(images).float()
        codes = vae.quantizer.quantize(z, scales).codes
        with _autocast(bf16):
            recon = vae.decoder(codes).float()
        loss = l1 * (recon - images).abs().mean() + l2 * (recon - images).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def ms_per_step(step: Callable[[], None], steps: int) -> float:
    for _ in range(3):  # warm-up: allocator, oneDNN primitive caches
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="measured steps per case (after 3 warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [
        ("transformer", "fp32", lambda: transformer_step(False, False)),
        ("transformer", "bf16", lambda: transformer_step(True, False)),
        ("transformer", "fp32 + math attention", lambda: transformer_step(False, True)),
        ("transformer", "bf16 + math attention", lambda: transformer_step(True, True)),
        ("tokenizer", "fp32", lambda: tokenizer_step(False, False)),
        ("tokenizer", "bf16", lambda: tokenizer_step(True, False)),
        ("tokenizer", "fp32 + channels_last", lambda: tokenizer_step(False, True)),
        ("tokenizer", "bf16 + channels_last", lambda: tokenizer_step(True, True)),
    ]
    print(f"shapes recipe training steps on CPU, {args.threads} threads, {args.steps} steps per case")
    print(f"{'model':<13}{'case':<24}{'ms/step':>9}{'x fp32':>8}")
    base: dict[str, float] = {}
    for model, case, build in cases:
        ms = ms_per_step(build(), args.steps)
        base.setdefault(model, ms)
        print(f"{model:<13}{case:<24}{ms:>9.0f}{base[model] / ms:>8.2f}")


if __name__ == "__main__":
    main()
