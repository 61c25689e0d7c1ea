"""Bitwise self-correction against the reference (official `infinity/models/bitwise_self_correction.py`, `flip_requant`)."""

import pytest
import torch
from bsq_tokenizer import MultiScaleBSQ
from bsq_tokenizer.quantizer import BSQ, area_resize, codes_from_bits, trilinear_resize
from infinity_train.bsc import bitwise_self_correction
from infinity_train.config import BSCConfig

SCALES = [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8)]


def _latent(b=2, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, 8, 8, generator=g)


def test_without_noise_labels_are_the_multiscale_quantizer_bits():
    z = _latent()
    out = bitwise_self_correction(
        z, SCALES, BSQ(16), BSCConfig(noise_apply_layers=-1), torch.Generator().manual_seed(0)
    )
    ref = MultiScaleBSQ(16).quantize(z, SCALES)
    expect = torch.cat([b.flatten(1, 2) for b in ref.bits], 1)
    assert torch.equal(out.labels, expect)
    assert out.inputs.shape == (2, sum(h * w for h, w in SCALES[1:]), 16)
    assert out.flip_probs == [0.0] * len(SCALES)


@pytest.mark.slow
def test_flip_fraction_matches_the_drawn_probability_and_its_range():
    z = torch.randn(64, 32, 16, 16, generator=torch.Generator().manual_seed(1))
    scales = [(1, 1), (4, 4), (8, 8), (16, 16)]
    cfg = BSCConfig(noise_apply_layers=13, noise_apply_strength=0.3)
    gen = torch.Generator().manual_seed(3)
    drawn = []
    for _ in range(12):
        out = bitwise_self_correction(z, scales, BSQ(32), cfg, gen)
        start = 0
        for k, (h, w) in enumerate(scales):
            clean = out.labels[:, start : start + h * w].reshape(64, h, w, 32)
            frac = (out.noisy_bits[k] != clean).float().mean().item()
            n = clean.numel()
            p = out.flip_probs[k]
            tol = 4 * (max(p * (1 - p), 1e-4) / n) ** 0.5 + 1e-9
            assert abs(frac - p) <= tol, (k, p, frac)
            start += h * w
            drawn.append(p)
    assert all(0.0 <= p <= 0.3 + 1e-12 and abs(p * 100 - round(p * 100)) < 1e-9 for p in drawn)
    assert len(set(drawn)) > 10  # several of the 31 levels are visited
    mean = sum(drawn) / len(drawn)
    assert 0.08 < mean < 0.22  # E[p] = 0.15


def test_next_scale_inputs_and_labels_follow_the_flipped_bits():
    z = _latent(b=3, d=16, seed=5)
    cfg = BSCConfig(noise_apply_layers=13, noise_apply_strength=0.3)
    out = bitwise_self_correction(z, SCALES, BSQ(16), cfg, torch.Generator().manual_seed(7))
    assert sum(out.flip_probs[:-1]) > 0
    full = SCALES[-1]
    start_in = 0
    start_lab = 1
    for k in range(1, len(SCALES)):
        h, w = SCALES[k]
        accumulated = codes_from_bits(out.noisy_bits[:k], size=full).unsqueeze(2)
        expect_in = trilinear_resize(accumulated, (h, w)).squeeze(2).flatten(2).transpose(1, 2)
        got_in = out.inputs[:, start_in : start_in + h * w]
        torch.testing.assert_close(got_in, expect_in, rtol=0, atol=1e-6)
        residual = z.unsqueeze(2) - accumulated
        if k < len(SCALES) - 1:
            residual = area_resize(residual, (h, w))
        expect_bits = (residual.squeeze(2) > 0).long().flatten(2).transpose(1, 2)
        got_bits = out.labels[:, start_lab : start_lab + h * w]
        agree = (got_bits == expect_bits).float().mean().item()
        assert agree > 0.999  # equal except where a residual entry is within rounding of 0
        start_in += h * w
        start_lab += h * w


def test_same_generator_state_gives_the_same_corruption():
    z = _latent()
    cfg = BSCConfig()
    a = bitwise_self_correction(z, SCALES, BSQ(16), cfg, torch.Generator().manual_seed(11))
    b = bitwise_self_correction(z, SCALES, BSQ(16), cfg, torch.Generator().manual_seed(11))
    assert torch.equal(a.inputs, b.inputs) and a.flip_probs == b.flip_probs


def test_patchified_tokens_use_space_to_depth_channel_order():
    z = torch.randn(1, 14, 8, 8, generator=torch.Generator().manual_seed(2))
    vae_scales = [(2, 2), (4, 4), (8, 8)]
    out = bitwise_self_correction(
        z, vae_scales, BSQ(14), BSCConfig(noise_apply_layers=-1), torch.Generator(), patchify=True
    )
    assert out.labels.shape == (1, 1 + 4 + 16, 56)
    ref = MultiScaleBSQ(14).quantize(z, vae_scales).bits[0]  # (1, 2, 2, 14)
    token = out.labels[0, 0]
    for c in range(14):
        for dy in range(2):
            for dx in range(2):
                assert token[c * 4 + dy * 2 + dx] == ref[0, dy, dx, c]


def test_bsc_inputs_equal_the_models_teacher_forcing_inputs_of_the_flipped_bits():
    """With re-quantisation on every scale, BSC's inputs are Infinity.scale_inputs_from_bits(noisy bits)."""
    from bsq_tokenizer.schedules import custom_schedule
    from infinity_model import Infinity, InfinityConfig

    schedule = custom_schedule([(1, 1), (2, 2), (4, 4), (6, 6), (8, 8)])
    model = Infinity(
        InfinityConfig(
            depth=1, embed_dim=64, num_heads=2, d_vae=16, text_channels=32, text_maxlen=8, pool_heads=2
        )
    )
    z = _latent(b=2, d=16, seed=9)
    out = bitwise_self_correction(
        z, schedule.vae_scales(), BSQ(16), BSCConfig(), torch.Generator().manual_seed(1)
    )
    assert any(p > 0 for p in out.flip_probs[:-1])
    expect = model.scale_inputs_from_bits(out.noisy_bits, schedule)
    torch.testing.assert_close(out.inputs, expect, rtol=0, atol=0)
