"""Training-step speed of the shapes recipe's two models under the trainers' precision and kernel options.

    uv run --no-sync python benchmarks/cpu_precision.py [--steps 10] [--threads 2]

Transformer: the recipe's 6 x 192 Infinity, batch 16 at 128x128 (scales 1, 2, 4, 6, 8), forward + bit loss +
backward + AdamW, in fp32 or bf16 autocast (``deepspeed.precision``), with torch's SDPA kernel choice or the
math kernel (``transformer.attention_backend``). Tokenizer: the recipe's ch-8 BSQ-VAE, batch 8 at 128x128,
encoder + quantizer (fp32, as the trainer) + decoder + L1/L2 + backward + AdamW, in fp32 or bf16, NCHW or
channels_last (``tokenizer_model.channels_last``). Random weights and inputs; no data loading, no DeepSpeed.
Prints ms per step and the speed-up against fp32 with the default kernels, measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import torch

SCALES = [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8)]


def _autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def transformer_step(bf16: bool, math: bool) -> Callable[[], None]:
    from bsq_tokenizer import custom_schedule
    from infinity_model import Infinity, InfinityConfig, TextCondition
    from infinity_train import bit_cross_entropy
    from torch.nn.attention import SDPBackend, sdpa_kernel

    config = InfinityConfig.preset(
        "layer12",
        depth=6,
        embed_dim=192,
        num_heads=6,
        d_vae=16,
        block_chunks=1,
        text_channels=64,
        pool_heads=2,
    )
    model = Infinity(config)
    model.init_weights(generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    schedule = custom_schedule(SCALES)
    g = torch.Generator().manual_seed(1)
    batch = 16
    lengths = torch.randint(6, 14, (batch,), generator=g)
    text = TextCondition(torch.randn(int(lengths.sum()), 64, generator=g), lengths)
    inputs = torch.randn(batch, schedule.seq_len - 1, 16, generator=g).sign()
    labels = torch.randint(0, 2, (batch, schedule.seq_len, 16), generator=g)
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
    from bsq_tokenizer import BSQVAE, VAEConfig

    torch.manual_seed(0)
    vae = BSQVAE(
        VAEConfig.preset("d16").replace(ch=8, ch_mult=(1, 2, 4, 8, 8), num_res_blocks=1, norm_groups=4)
    )
    images = torch.rand(8, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 2 - 1
    if channels_last:
        vae = vae.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-4)

    def step() -> None:
        with _autocast(bf16):
            z = vae.encoder(images).float()
        codes = vae.quantizer.quantize(z, SCALES).codes
        with _autocast(bf16):
            recon = vae.decoder(codes).float()
        loss = 4 * (recon - images).abs().mean() + 4 * (recon - images).pow(2).mean()
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
