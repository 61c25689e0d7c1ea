"""Quantizer numerics follow the official `infinity/models/bsq_vae/multiscale_bsq.py` exactly (fp32 values, resize formulas, residual scheme)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from bsq_tokenizer import MultiScaleBSQ, get_schedule
from bsq_tokenizer.quantizer import (
    BSQ,
    RandomBitFlips,
    ResidualSteps,
    area_resize,
    bits_to_codes,
    codebook_scale,
    codes_from_bits,
    depth_to_space,
    depth_to_space_bits,
    residual_quantize,
    space_to_depth,
    space_to_depth_bits,
    trilinear_resize,
)


def _f32_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


def _random_bits(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, shape, generator=gen)


def test_bits_to_codes_d32_gives_one_ulp_above_one_over_sqrt32():
    codes = bits_to_codes(_random_bits((2, 3, 5, 32)))
    assert codes.shape == (2, 32, 1, 3, 5)
    assert codes.dtype == torch.float32
    values = set(codes.abs().flatten().tolist())
    assert values == {0.1767767071723938}
    assert _f32_bits(0.1767767071723938) == 0x3E3504F4
    assert codebook_scale(32) == 0.1767766922712326


def test_bits_to_codes_d14_value_is_torchs_normalize_of_plus_minus_s():
    # The reference normalises with F.normalize, whose fp32 result for d = 14 depends on torch's reduction
    # kernel: one ulp above s (0.267261266708374, the released code's value) on current torch, exactly s on
    # torch 2.4 (the lowest supported). Both follow the same op, so the check is against the op itself.
    bits = _random_bits((1, 4, 4, 14), seed=1)
    codes = bits_to_codes(bits)
    s = codebook_scale(14)
    assert s == 0.26726123690605164
    expected = torch.nn.functional.normalize(bits.float() * s * 2 - s, p=2.0, dim=-1, eps=1e-12)
    assert torch.equal(codes, expected.permute(0, 3, 1, 2).unsqueeze(2))
    values = set(codes.abs().flatten().tolist())
    assert values in ({0.267261266708374}, {s})
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 14):  # the locked torch
        assert values == {0.267261266708374}


@pytest.mark.parametrize("d", [16, 24, 64])
def test_bits_to_codes_is_exactly_s_for_16_24_64(d):
    codes = bits_to_codes(_random_bits((1, 2, 3, d), seed=d))
    assert set(codes.abs().flatten().tolist()) == {codebook_scale(d)}


def test_bits_to_codes_sign_follows_bits_and_accepts_bools():
    bits = _random_bits((1, 2, 2, 32), seed=3)
    codes = bits_to_codes(bits.bool())
    assert torch.equal(codes.squeeze(2).permute(0, 2, 3, 1) > 0, bits.bool())
    assert torch.equal(codes, bits_to_codes(bits.to(torch.uint8)))


def test_bits_to_codes_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(B, h, w, d\)"):
        bits_to_codes(torch.zeros(2, 32, dtype=torch.int64))
    with pytest.raises(TypeError, match="integer or bool"):
        bits_to_codes(torch.zeros(1, 1, 1, 32))


def _bilinear_ref(x: list[list[float]], out_h: int, out_w: int) -> list[list[float]]:
    """Pure-python half-pixel bilinear: src = (dst + 0.5) * in/out - 0.5 clamped at 0 (scale rounded to fp32)."""
    in_h, in_w = len(x), len(x[0])

    def axis(dst: int, n_in: int, n_out: int) -> tuple[int, int, float]:
        # Source coordinate and weight in fp32, as the kernel computes them; the blend itself in double.
        f32 = np.float32
        scale = f32(n_in) / f32(n_out)
        src = max(f32(scale * (f32(dst) + f32(0.5)) - f32(0.5)), f32(0.0))
        i0 = math.floor(src)
        i1 = min(i0 + 1, n_in - 1)
        return i0, i1, float(f32(src - f32(i0)))

    out = []
    for i in range(out_h):
        y0, y1, fy = axis(i, in_h, out_h)
        row = []
        for j in range(out_w):
            x0, x1, fx = axis(j, in_w, out_w)
            top = (1 - fx) * x[y0][x0] + fx * x[y0][x1]
            bottom = (1 - fx) * x[y1][x0] + fx * x[y1][x1]
            row.append((1 - fy) * top + fy * bottom)
        out.append(row)
    return out


def _area_ref(x: list[list[float]], out_h: int, out_w: int) -> list[list[float]]:
    """Pure-python adaptive average pooling with windows floor(i*n/m) .. ceil((i+1)*n/m) - 1."""
    in_h, in_w = len(x), len(x[0])
    out = []
    for i in range(out_h):
        r0, r1 = (i * in_h) // out_h, -((-(i + 1) * in_h) // out_h)
        row = []
        for j in range(out_w):
            c0, c1 = (j * in_w) // out_w, -((-(j + 1) * in_w) // out_w)
            cells = [x[a][b] for a in range(r0, r1) for b in range(c0, c1)]
            row.append(sum(cells) / len(cells))
        out.append(row)
    return out


RESIZE_CASES = [
    ((3, 5), (7, 4)),
    ((16, 16), (6, 6)),
    ((4, 4), (16, 16)),
    ((5, 3), (2, 2)),
    ((1, 1), (3, 2)),
    ((7, 9), (7, 9)),
]


@pytest.mark.parametrize(("src", "dst"), RESIZE_CASES)
def test_trilinear_resize_matches_half_pixel_formula(src, dst):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 1, *src, generator=gen)
    y = trilinear_resize(x, dst)
    assert y.shape == (1, 2, 1, *dst)
    for c in range(2):
        ref = torch.tensor(_bilinear_ref(x[0, c, 0].tolist(), *dst), dtype=torch.float32)
        torch.testing.assert_close(y[0, c, 0], ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("src", "dst"),
    [((16, 16), (6, 6)), ((7, 5), (3, 2)), ((9, 9), (4, 4)), ((5, 7), (5, 3)), ((8, 8), (8, 8))],
)
def test_area_resize_matches_adaptive_pooling_windows(src, dst):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 1, *src, generator=gen)
    y = area_resize(x, dst)
    assert y.shape == (2, 3, 1, *dst)
    for b in range(2):
        for c in range(3):
            ref = torch.tensor(_area_ref(x[b, c, 0].tolist(), *dst), dtype=torch.float32)
            torch.testing.assert_close(y[b, c, 0], ref, rtol=0, atol=2e-6)


def test_resizes_are_identity_at_the_same_size_and_reject_4d():
    x = torch.randn(1, 4, 1, 3, 3)
    assert trilinear_resize(x, (3, 3)) is x
    assert area_resize(x, (1, 3, 3)) is x
    with pytest.raises(ValueError, match=r"\(B, d, 1, h, w\)"):
        trilinear_resize(torch.randn(1, 4, 3, 3), (2, 2))
    with pytest.raises(ValueError, match="t = 1"):
        area_resize(x, (2, 2, 2))


def test_bsq_mask_buffer_values():
    assert BSQ(32).mask[:3].tolist() == [2147483648, 1073741824, 536870912]
    assert BSQ(64).mask[:3].tolist() == [-(2**63), 2**62, 2**61]
    assert BSQ(14).mask.tolist() == [2 ** (13 - i) for i in range(14)]
    assert BSQ(16).mask.dtype == torch.int64


@pytest.mark.parametrize("d", [14, 32])
def test_bsq_straight_through_values_are_plus_minus_s_on_the_sphere(d):
    gen = torch.Generator().manual_seed(d)
    r = torch.randn(2, d, 1, 6, 5, generator=gen)
    r[0, :, 0, 0, 0] = 0.0  # sign(0) -> -1
    q, bits = BSQ(d)(r)
    s = codebook_scale(d)
    assert q.shape == r.shape and q.dtype == torch.float32
    assert bits.shape == (2, 6, 5, d) and bits.dtype == torch.int64
    # Up to one ulp from +-s (the straight-through sum is not exactly s).
    torch.testing.assert_close(q.abs(), torch.full_like(q, s), rtol=0, atol=3e-8)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(2, 1, 6, 5), rtol=0, atol=1e-6)
    # u is normalised over the channel axis, computed channel-last as in the reference.
    u = torch.nn.functional.normalize(r.permute(0, 2, 3, 4, 1), dim=-1, eps=1e-12).permute(0, 4, 1, 2, 3)
    assert torch.equal(bits, (u > 0).squeeze(2).permute(0, 2, 3, 1).long())
    assert bits[0, 0, 0].sum() == 0
    # The forward value is computed as u + (z - u) in fp32, bit for bit.
    z = torch.where(u > 0, 1.0, -1.0) * s
    assert torch.equal(q, u + (z - u))


def test_bsq_gradient_is_straight_through():
    r = torch.randn(1, 8, 1, 2, 2, requires_grad=True)
    q, _ = BSQ(8)(r)
    q.sum().backward()
    u_grad = torch.autograd.grad(torch.nn.functional.normalize(r, dim=1).sum(), r)[0]
    torch.testing.assert_close(r.grad, u_grad)


def test_multiscale_residual_norm_shrinks_and_codes_are_the_sum():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, 32, 16, 16, generator=gen) * 0.3
    scales = get_schedule(1.0, "0.06M").scales
    out = MultiScaleBSQ(32).quantize(z, scales)
    assert [tuple(b.shape) for b in out.bits] == [(2, h, w, 32) for h, w in scales]
    assert out.scales == scales
    # Replay the residual recursion and check the residual decreases after the later scales.
    residual = z.unsqueeze(2)
    norms = [residual.norm().item()]
    total = torch.zeros_like(residual)
    for bits, (h, w) in zip(out.bits, scales, strict=True):
        q, b = BSQ(32)(area_resize(residual, (h, w)))
        assert torch.equal(b, bits)
        up = trilinear_resize(q, (16, 16))
        residual = residual - up
        total = total + up
        norms.append(residual.norm().item())
    assert torch.equal(total.squeeze(2), out.codes)
    assert norms[-1] < norms[0]
    assert norms[-1] < norms[-2] < norms[-3]


def test_multiscale_default_schedule_and_bad_inputs():
    q = MultiScaleBSQ(16)
    out = q.quantize(torch.randn(1, 16, 16, 16))
    assert out.scales == ((1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16))
    with pytest.raises(ValueError, match="channels"):
        q.quantize(torch.randn(1, 8, 4, 4), [(4, 4)])
    with pytest.raises(ValueError, match="must equal the latent size"):
        q.quantize(torch.randn(1, 16, 4, 4), [(1, 1), (2, 2)])
    with pytest.raises(ValueError, match="larger than the latent"):
        q.quantize(torch.randn(1, 16, 4, 4), [(8, 8), (4, 4)])
    with pytest.raises(ValueError, match="no default scale schedule"):
        q.quantize(torch.randn(1, 16, 5, 5))


def test_codes_from_bits_equals_straight_through_codes_up_to_ulps():
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(1, 32, 8, 8, generator=gen)
    scales = [(1, 1), (2, 2), (4, 4), (8, 8)]
    out = MultiScaleBSQ(32).quantize(z, scales)
    rebuilt = codes_from_bits(out.bits)
    assert rebuilt.shape == out.codes.shape
    torch.testing.assert_close(rebuilt, out.codes, rtol=0, atol=1e-6)
    assert codes_from_bits(out.bits, size=(8, 8)).shape == (1, 32, 8, 8)


def test_space_to_depth_channel_order_and_inverse():
    x = torch.arange(2 * 3 * 4 * 6).reshape(2, 3, 4, 6)
    y = space_to_depth(x)
    assert y.shape == (2, 12, 2, 3)
    for c in range(3):
        for dy in range(2):
            for dx in range(2):
                assert torch.equal(y[:, c * 4 + dy * 2 + dx], x[:, c, dy::2, dx::2])
    assert torch.equal(y, torch.nn.functional.pixel_unshuffle(x.float(), 2).long())
    assert torch.equal(depth_to_space(y), x)
    bits = _random_bits((1, 4, 6, 14))
    packed = space_to_depth_bits(bits)
    assert packed.shape == (1, 2, 3, 56)
    assert torch.equal(depth_to_space_bits(packed), bits)
    with pytest.raises(ValueError, match="even"):
        space_to_depth(torch.zeros(1, 1, 3, 4))


def test_residual_quantize_without_flips_is_the_tokenizer_and_gives_next_scale_inputs():

    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, 16, 8, 8, generator=gen) * 0.5
    scales = [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8)]
    ref = MultiScaleBSQ(16).quantize(z, scales)
    out = residual_quantize(z, scales, BSQ(16), next_inputs=True)
    assert torch.equal(out.codes, ref.codes)
    assert all(torch.equal(a, b) for a, b in zip(out.bits, ref.bits, strict=True))
    assert all(a is b for a, b in zip(out.bits, out.fed_bits, strict=True))
    # input of scale k = trilinear resize of the codes summed over scales < k
    assert [tuple(x.shape) for x in out.next_inputs] == [(2, 16, h, w) for h, w in scales[1:]]
    for k in range(1, len(scales)):
        summed = codes_from_bits(ref.bits[:k], size=(8, 8)).unsqueeze(2)
        expected = trilinear_resize(summed, scales[k]).squeeze(2)
        torch.testing.assert_close(out.next_inputs[k - 1], expected, rtol=0, atol=1e-5)


def test_flipped_bits_are_fed_forward_and_later_scales_correct_them():

    gen = torch.Generator().manual_seed(4)
    z = torch.randn(1, 16, 8, 8, generator=gen) * 0.5
    scales = [(1, 1), (2, 2), (4, 4), (8, 8)]
    seen: list[int] = []

    def flip_scale_one(k: int, bits: torch.Tensor) -> torch.Tensor | None:
        seen.append(k)
        return torch.ones_like(bits, dtype=torch.bool) if k == 1 else None

    clean = residual_quantize(z, scales, BSQ(16))
    out = residual_quantize(z, scales, BSQ(16), flip=flip_scale_one)
    assert seen == [0, 1, 2, 3]
    assert torch.equal(out.bits[0], clean.bits[0]) and torch.equal(out.bits[1], clean.bits[1])
    assert torch.equal(out.fed_bits[1], 1 - clean.bits[1])
    # the labels of scale 2 are the quantizer's answer to the corrupted accumulation, not the clean ones
    assert not torch.equal(out.bits[2], clean.bits[2])
    expected = codes_from_bits([out.fed_bits[0], out.fed_bits[1], out.bits[2], out.bits[3]])
    torch.testing.assert_close(out.codes, expected, rtol=0, atol=1e-5)
    # without requant the clean code is accumulated although the flipped bits are reported
    kept = residual_quantize(z, scales, BSQ(16), flip=flip_scale_one, requant=False)
    assert torch.equal(kept.codes, clean.codes) and torch.equal(kept.fed_bits[1], out.fed_bits[1])


def test_recomputed_residual_is_the_latent_minus_the_accumulation_bit_for_bit():
    """``residual="recompute"`` is the form of official `bitwise_self_correction.py` (`flip_requant`)."""
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(2, 16, 8, 8, generator=gen) * 0.7
    scales = [(1, 1), (2, 2), (3, 3), (5, 5), (8, 8)]
    masks = [torch.rand(2, h, w, 16, generator=gen) < 0.2 for h, w in scales]
    out = residual_quantize(
        z, scales, BSQ(16), flip=lambda k, bits: masks[k], residual="recompute", next_inputs=True
    )
    feats = z.unsqueeze(2)
    acc = torch.zeros_like(feats)
    for k, hw in enumerate(scales):
        residual = feats - acc
        if k < len(scales) - 1:
            residual = area_resize(residual, hw)
        _, bits = BSQ(16)(residual)
        assert torch.equal(out.bits[k], bits)
        acc = acc + trilinear_resize(bits_to_codes(bits ^ masks[k]), (8, 8))
        if k < len(scales) - 1:
            assert torch.equal(out.next_inputs[k], trilinear_resize(acc, scales[k + 1]).squeeze(2))
    assert torch.equal(out.codes, acc.squeeze(2))
    # the tokenizer's running subtraction rounds differently in fp32
    kept = ResidualSteps(scales, z, zero_start=True)
    fresh = ResidualSteps(scales, z, zero_start=True, residual="recompute")
    for steps in (kept, fresh):
        for _ in scales[:-1]:
            steps.add(steps.quantize(BSQ(16))[0])
    assert kept.residual is not None and fresh.residual is not None
    assert not torch.equal(kept.residual, fresh.residual)
    torch.testing.assert_close(kept.residual, fresh.residual, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="'subtract' or 'recompute'"):
        ResidualSteps(scales, z, residual="again")  # type: ignore[arg-type]


def test_random_bit_flips_draw_a_level_then_a_mask_for_the_first_layers_only():
    bits = torch.zeros(2, 3, 3, 8, dtype=torch.int64)
    drawn: list[int] = []

    def top_level(n: int) -> int:
        drawn.append(n)
        return n - 1

    flips = RandomBitFlips(2, 1.0, torch.Generator().manual_seed(0), levels=top_level)
    masks = [flips(k, bits) for k in range(4)]
    assert drawn == [101, 101] and flips.probs == [1.0, 1.0, 0.0, 0.0]
    assert masks[0] is not None and bool(masks[0].all()) and masks[2] is None and masks[3] is None
    # default levels: torch.randint on the same generator, then torch.rand of the bit shape
    a = RandomBitFlips(13, 0.3, torch.Generator().manual_seed(1))
    b = RandomBitFlips(13, 0.3, torch.Generator().manual_seed(1))
    for k in range(3):
        mask_a, mask_b = a(k, bits), b(k, bits)
        assert mask_a is not None and mask_b is not None and torch.equal(mask_a, mask_b)
    assert a.probs == b.probs and all(0 <= p <= 0.3 for p in a.probs)
    gen = torch.Generator().manual_seed(1)
    p0 = int(torch.randint(0, 31, (1,), generator=gen).item()) * 0.01
    assert a.probs[0] == p0
    off = RandomBitFlips(13, -1.0, torch.Generator())
    assert off(0, bits) is None and off.probs == [0.0]


def test_residual_steps_refuse_misuse():

    steps = ResidualSteps([(1, 1), (2, 2)])
    with pytest.raises(RuntimeError, match="needs the continuous latent"):
        steps.quantize(BSQ(4))
    with pytest.raises(RuntimeError, match="at least one added scale"):
        steps.next_input()
    with pytest.raises(ValueError, match="needs a code on"):
        steps.add(torch.zeros(1, 4, 1, 2, 2))
    with pytest.raises(ValueError, match="latent must have shape"):
        ResidualSteps([(1, 1), (2, 2)], torch.zeros(1, 4, 3, 3))


def test_residual_steps_compose_two_codes_on_the_full_grid_and_quantize_a_masked_residual():
    """add(code, other=, weight=) sums weight * up(code) + (1 - weight) * up(other); weight 1 or 0 is either
    code alone. quantize(where=) counts only the residual where ``where`` is 1."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 8, 6, 6, generator=g)
    scales = [(3, 3), (6, 6)]
    a = bits_to_codes(torch.rand(2, 3, 3, 8, generator=g) > 0.5)
    b = bits_to_codes(torch.rand(2, 3, 3, 8, generator=g) > 0.5)
    lfq = BSQ(8)

    def summed(**kwargs):
        steps = ResidualSteps(scales, z)
        steps.add(a, **kwargs)
        return steps

    ones, zeros = torch.ones(2, 1, 1, 6, 6), torch.zeros(2, 1, 1, 6, 6)
    assert torch.equal(summed(other=b, weight=ones).codes, summed().codes)
    assert torch.equal(summed(other=b, weight=zeros).codes, trilinear_resize(b, (6, 6)).squeeze(2))
    half = ones.clone()
    half[..., 3:] = 0
    mixed = summed(other=b, weight=half).codes
    assert torch.equal(mixed[..., :3], summed().codes[..., :3])
    assert torch.equal(mixed[..., 3:], trilinear_resize(b, (6, 6)).squeeze(2)[..., 3:])
    with pytest.raises(ValueError, match="both other= and weight="):
        summed(other=b)
    steps = summed()
    _, plain = steps.quantize(lfq)
    _, masked = steps.quantize(lfq, where=half)
    assert torch.equal(steps.quantize(lfq, where=ones)[1], plain)
    assert torch.equal(masked[:, :, :3], plain[:, :, :3]) and not torch.equal(masked, plain)
