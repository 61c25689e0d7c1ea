"""Infinity forward numerics: KV cache == teacher forcing, varlen text == alone, SDPA == plain attention."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from bsq_tokenizer import get_schedule
from bsq_tokenizer.quantizer import bits_to_codes, space_to_depth
from bsq_tokenizer.schedules import custom_schedule
from infinity_model.attention import (
    COS_ATTN_MAX_LOG_SCALE,
    CrossAttention,
    SelfAttention,
    TextAttentivePool,
    TextMemory,
    block_causal_bias,
    block_causal_mask,
)
from infinity_model.condition import TextCondition
from infinity_model.config import InfinityConfig
from infinity_model.rope import rope_cos_sin
from infinity_model.transformer import Infinity

SCHEDULE = custom_schedule([(1, 1), (2, 2), (3, 3), (4, 4)])


def tiny_config(**kw) -> InfinityConfig:
    base = dict(depth=4, embed_dim=64, num_heads=4, d_vae=8, block_chunks=2, text_channels=32, text_maxlen=16)
    base.update(pool_heads=4)
    base.update(kw)
    return InfinityConfig(**base)


def tiny_model(seed: int = 0, **kw) -> Infinity:
    torch.manual_seed(seed)
    model = Infinity(tiny_config(**kw))
    # training init, then a perturbation so that gates/AdaLN are far from their near-zero init values
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def random_text(lengths: list[int], seed: int = 0, channels: int = 32) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    return TextCondition(torch.randn(sum(lengths), channels, generator=g), torch.tensor(lengths))


def random_bits(schedule, batch: int, d: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 2, (batch, h, w, d), generator=g) for h, w in schedule.scales]


def cached_logits(model: Infinity, text: TextCondition, inputs: torch.Tensor, schedule) -> torch.Tensor:
    cond = model.prepare(text)
    cache = model.new_cache()
    outs, start = [], 0
    for k, (h, w) in enumerate(schedule.scales):
        x = None if k == 0 else inputs[:, start : start + h * w]
        start += 0 if k == 0 else h * w
        outs.append(model.forward_scale(cond, x, k, schedule, cache))
    return torch.cat(outs, 1)


@pytest.fixture(scope="module")
def model() -> Infinity:
    return tiny_model()


@torch.no_grad()
def test_teacher_forced_logits_equal_kv_cached_forward_scale(model: Infinity) -> None:
    text = random_text([3, 6])
    inputs = model.scale_inputs_from_bits(random_bits(SCHEDULE, 2, 8), SCHEDULE)
    full = model(text, inputs, SCHEDULE)
    assert full.shape == (2, SCHEDULE.seq_len, 8, 2)
    cached = cached_logits(model, text, inputs, SCHEDULE)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_kv_cache_exact_on_a_real_schedule_with_non_square_template() -> None:
    model = tiny_model(seed=1, block_chunks=1)
    schedule = get_schedule(0.5, "0.06M")  # (1,1) (2,2) (2,4) (3,6) (5,10) (8,16) (11,22)
    text = random_text([5])
    inputs = model.scale_inputs_from_bits(random_bits(schedule, 1, 8, seed=2), schedule)
    torch.testing.assert_close(
        cached_logits(model, text, inputs, schedule), model(text, inputs, schedule), atol=1e-5, rtol=1e-5
    )


@torch.no_grad()
def test_batch_of_different_length_prompts_equals_each_alone(model: Infinity) -> None:
    text = random_text([2, 7], seed=3)
    inputs = model.scale_inputs_from_bits(random_bits(SCHEDULE, 2, 8, seed=4), SCHEDULE)
    both = model(text, inputs, SCHEDULE)
    both_cached = cached_logits(model, text, inputs, SCHEDULE)
    for b, alone_text in enumerate(text.split()):
        alone = model(alone_text, inputs[b : b + 1], SCHEDULE)
        torch.testing.assert_close(both[b : b + 1], alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(both_cached[b : b + 1], alone, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_padding_rows_do_not_leak_into_other_samples(model: Infinity) -> None:
    """Changing sample 1's prompt leaves sample 0's logits bit-for-bit unchanged."""
    inputs = model.scale_inputs_from_bits(random_bits(SCHEDULE, 2, 8, seed=5), SCHEDULE)
    a = random_text([4, 9], seed=6)
    b = TextCondition(torch.cat([a.features[:4], torch.randn(3, 32)]), torch.tensor([4, 3]))
    torch.testing.assert_close(
        model(a, inputs, SCHEDULE)[0], model(b, inputs, SCHEDULE)[0], atol=1e-6, rtol=0
    )


def test_block_causal_mask_semantics() -> None:
    mask = block_causal_mask([(1, 1), (2, 2), (1, 2)])
    assert mask.shape == (7, 7) and mask.dtype == torch.bool
    scale_of = [0, 1, 1, 1, 1, 2, 2]
    for q in range(7):
        for k in range(7):
            assert bool(mask[q, k]) == (scale_of[k] <= scale_of[q])
    bias = block_causal_bias([(1, 1), (2, 2), (1, 2)], torch.bfloat16)
    assert bias.dtype == torch.bfloat16 and bias.shape == (7, 7) and bias.stride() == (16, 1)
    assert torch.equal(bias == 0, mask) and bool((bias[~mask] == float("-inf")).all())


@torch.no_grad()
def test_block_causal_forward_ignores_finer_scales(model: Infinity) -> None:
    """Logits of scales < k do not change when the inputs of scale k change."""
    text = random_text([4])
    inputs = model.scale_inputs_from_bits(random_bits(SCHEDULE, 1, 8, seed=7), SCHEDULE)
    changed = inputs.clone()
    changed[:, 1 + 4 :] += 1.0  # inputs of scales 2 and 3 (after the 1x1 SOS and the 2x2 scale)
    a, b = model(text, inputs, SCHEDULE), model(text, changed, SCHEDULE)
    torch.testing.assert_close(a[:, :5], b[:, :5], atol=1e-6, rtol=0)  # SOS + scale 1 untouched
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-3


# ------------------------------------------------------------------ plain reference attention


def plain_softmax_attention(q, k, v, scale, allowed=None):
    logits = (q.double() @ k.double().transpose(-1, -2)) * scale
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    return (logits.softmax(-1) @ v.double()).float()


def plain_rope(x, cos, sin):
    out = torch.empty_like(x)
    out[..., 0::2] = cos * x[..., 0::2] - sin * x[..., 1::2]
    out[..., 1::2] = sin * x[..., 0::2] + cos * x[..., 1::2]
    return out


@torch.no_grad()
def test_self_attention_equals_plain_cosine_attention_with_block_causal_mask() -> None:
    torch.manual_seed(0)
    sa = SelfAttention(64, 4)
    for p in sa.parameters():
        p.normal_(0, 0.3)
    sa.scale_mul_1H11.copy_(torch.tensor([1.0, 2.0, 4.0, 9.0]).view(1, 4, 1, 1))  # 9 > ln 100: clamped
    scales = [(1, 1), (2, 2), (3, 3)]
    x = torch.randn(2, 14, 64)
    cos, sin = rope_cos_sin(scales, (64, 64), 16)
    mask = block_causal_mask(scales)
    got = sa(x, cos, sin, mask)
    qkv = x @ sa.mat_qkv.weight.T + torch.cat([sa.q_bias, torch.zeros(64), sa.v_bias])
    q, k, v = qkv.view(2, 14, 3, 4, 16).permute(2, 0, 3, 1, 4)
    s = torch.tensor([1.0, 2.0, 4.0, min(9.0, COS_ATTN_MAX_LOG_SCALE)]).exp().view(1, 4, 1, 1)
    q = plain_rope(q / q.norm(dim=-1, keepdim=True) * s, cos, sin)
    k = plain_rope(k / k.norm(dim=-1, keepdim=True), cos, sin)
    out = plain_softmax_attention(q, k, v, 1.0, mask)
    expect = out.transpose(1, 2).reshape(2, 14, 64) @ sa.proj.weight.T + sa.proj.bias
    torch.testing.assert_close(got, expect, atol=2e-5, rtol=1e-5)
    assert abs(COS_ATTN_MAX_LOG_SCALE - float(torch.tensor(100.0).log())) == 0


def _memory(rows, lengths) -> TextMemory:
    text = TextCondition(rows, torch.tensor(lengths))
    return TextMemory(rows=rows, lengths=text.lengths, cu_seqlens=text.cu_seqlens, max_len=text.max_len)


@torch.no_grad()
def test_cross_attention_and_pool_equal_plain_per_sample_attention() -> None:
    torch.manual_seed(1)
    lengths = [3, 1, 5]
    ca = CrossAttention(64, 48, 4)
    pool = TextAttentivePool(32, 48, 4)
    for p in [*ca.parameters(), *pool.parameters()]:
        p.normal_(0, 0.3)
    x = torch.randn(3, 6, 64)
    rows = torch.randn(sum(lengths), 48)
    got = ca(x, _memory(rows, lengths))
    t5 = torch.randn(sum(lengths), 32)
    pooled = pool(_memory(t5, lengths))
    start = 0
    for b, n in enumerate(lengths):
        r = rows[start : start + n]
        q = (x[b] @ ca.mat_q.weight.T + ca.mat_q.bias).view(6, 4, 16).transpose(0, 1)
        kv = (r @ ca.mat_kv.weight.T + torch.cat([torch.zeros(64), ca.v_bias])).view(n, 2, 4, 16)
        out = plain_softmax_attention(
            q, kv[:, 0].transpose(0, 1), kv[:, 1].transpose(0, 1), 1 / math.sqrt(16)
        )
        expect = out.transpose(0, 1).reshape(6, 64) @ ca.proj.weight.T + ca.proj.bias
        torch.testing.assert_close(got[b], expect, atol=2e-5, rtol=1e-5)
        pa = pool.ca
        kv = (t5[start : start + n] @ pa.mat_kv.weight.T + torch.cat([torch.zeros(48), pa.v_bias])).view(
            n, 2, 4, 12
        )
        out = plain_softmax_attention(
            pa.mat_q.transpose(0, 1), kv[:, 0].transpose(0, 1), kv[:, 1].transpose(0, 1), 1 / math.sqrt(12)
        )
        expect = out.reshape(48) @ pa.proj.weight.T + pa.proj.bias
        torch.testing.assert_close(pooled[b], expect, atol=2e-5, rtol=1e-5)
        start += n


# ------------------------------------------------------------------------ conditioning


@torch.no_grad()
def test_cond_drop_equals_running_the_unconditional_rows(model: Infinity) -> None:
    text = random_text([3, 5], seed=8)
    inputs = model.scale_inputs_from_bits(random_bits(SCHEDULE, 2, 8, seed=9), SCHEDULE)
    dropped = model(text, inputs, SCHEDULE, cond_drop=torch.tensor([False, True]))
    uncond = model.uncond_text(text.lengths)
    assert torch.equal(uncond.features[3:], model.cfg_uncond[:5])
    mixed = TextCondition.concat(text.split()[0], uncond.split()[1])
    torch.testing.assert_close(dropped, model(mixed, inputs, SCHEDULE), atol=1e-6, rtol=0)


@torch.no_grad()
def test_after_block_hook_sees_every_block_and_can_replace_hidden(model: Infinity) -> None:
    text = random_text([4])
    cond = model.prepare(text)
    seen: list[int] = []

    def hook(i: int, hidden: torch.Tensor) -> torch.Tensor:
        seen.append(i)
        return hidden

    plain = model.forward_scale(cond, None, 0, SCHEDULE, model.new_cache())
    hooked = model.forward_scale(cond, None, 0, SCHEDULE, model.new_cache(), after_block=hook)
    assert seen == list(range(model.config.depth))
    torch.testing.assert_close(plain, hooked, atol=0, rtol=0)
    zeroed = model.forward_scale(cond, None, 0, SCHEDULE, model.new_cache(), after_block=lambda i, h: h * 0)
    assert not torch.allclose(zeroed, plain)


def test_forward_scale_rejects_out_of_order_scales_and_bad_shapes(model: Infinity) -> None:
    cond = model.prepare(random_text([4]))
    cache = model.new_cache()
    with pytest.raises(ValueError, match="forward_scale\\(k=1\\)"):
        model.forward_scale(cond, torch.zeros(1, 4, 8), 1, SCHEDULE, cache)
    model.forward_scale(cond, None, 0, SCHEDULE, cache)
    with pytest.raises(ValueError, match="scale 1 input must be"):
        model.forward_scale(cond, torch.zeros(1, 5, 8), 1, SCHEDULE, cache)
    with pytest.raises(ValueError, match="L-1=29"):
        model(random_text([4]), torch.zeros(1, 28, 8), SCHEDULE)
    with pytest.raises(ValueError, match="1x1 start-of-sequence scale"):
        model(random_text([4]), torch.zeros(1, 28, 8), custom_schedule([(2, 2), (3, 3), (4, 4)]))


# ------------------------------------------------------------------------ inputs from bits


def test_scale_inputs_from_bits_is_trilinear_down_of_the_accumulated_code(model: Infinity) -> None:
    bits = random_bits(SCHEDULE, 2, 8, seed=10)
    got = model.scale_inputs_from_bits(bits, SCHEDULE)
    acc = torch.zeros(2, 8, 1, 4, 4)
    expect = []
    for k in range(3):
        acc = acc + F.interpolate(
            bits_to_codes(bits[k]).contiguous(), size=(1, 4, 4), mode="trilinear", align_corners=False
        )
        h, w = SCHEDULE.scales[k + 1]
        nxt = F.interpolate(acc, size=(1, h, w), mode="trilinear", align_corners=False)
        expect.append(nxt.flatten(2).transpose(1, 2))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, torch.cat(expect, 1), atol=0, rtol=0)
    assert torch.equal(model.scale_inputs_from_bits(bits[:-1], SCHEDULE), got)  # last scale is not needed


def test_patchified_inputs_space_to_depth_and_accept_both_bit_layouts() -> None:
    model = tiny_model(d_vae=56, patchify=True, depth=2, block_chunks=1)
    g = torch.Generator().manual_seed(11)
    vae_bits = [torch.randint(0, 2, (1, 2 * h, 2 * w, 14), generator=g) for h, w in SCHEDULE.scales]
    token_bits = [b.permute(0, 3, 1, 2) for b in vae_bits]
    token_bits = [space_to_depth(b).permute(0, 2, 3, 1) for b in token_bits]  # (1, h, w, 56)
    a = model.scale_inputs_from_bits(vae_bits, SCHEDULE)
    b = model.scale_inputs_from_bits(token_bits, SCHEDULE)
    assert a.shape == (1, SCHEDULE.seq_len - 1, 56)
    assert torch.equal(a, b)
    acc = F.interpolate(bits_to_codes(vae_bits[0]).contiguous(), size=(1, 8, 8), mode="trilinear")
    first = space_to_depth(F.interpolate(acc, size=(1, 4, 4), mode="trilinear").squeeze(2))
    torch.testing.assert_close(a[:, :4], first.flatten(2).transpose(1, 2), atol=0, rtol=0)
    with pytest.raises(ValueError, match="bits of scale 0"):
        model.scale_inputs_from_bits([torch.zeros(1, 1, 1, 8, dtype=torch.long)] * 4, SCHEDULE)


# ------------------------------------------------------------------------ training side


def test_training_forward_gives_gradients_to_every_parameter() -> None:
    model = tiny_model(seed=2).train()
    text = random_text([3, 4], seed=12)
    inputs = model.scale_inputs_from_bits(random_bits(SCHEDULE, 2, 8, seed=13), SCHEDULE)
    logits = model(text, inputs, SCHEDULE, cond_drop=torch.tensor([False, False]))
    logits.float().logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    model.set_gradient_checkpointing(True)
    model.zero_grad()
    again = model(text, inputs, SCHEDULE, cond_drop=torch.tensor([False, True]))
    again.float().logsumexp(-1).mean().backward()
    assert model.cfg_uncond.grad is not None and model.cfg_uncond.grad.abs().sum() > 0


def test_init_weights_follows_the_special_init() -> None:
    torch.manual_seed(0)
    model = Infinity(tiny_config())
    gss_before = torch.cat([b.ada_gss.detach().clone() for b in model.block_list])
    uncond_before = model.cfg_uncond.detach().clone()
    model.init_weights()
    gss_after = torch.cat([b.ada_gss.detach() for b in model.block_list])
    torch.testing.assert_close(gss_after[:, :, :2], gss_before[:, :, :2] * 5e-6)
    torch.testing.assert_close(gss_after[:, :, 2:], gss_before[:, :, 2:] * 1e-3)
    assert torch.equal(model.cfg_uncond, uncond_before)
    assert model.head.bias.abs().sum() == 0 and model.head_nm.ada_lin[1].bias.abs().sum() == 0
    std = math.sqrt(1 / (3 * 64))
    assert 0.5 * std < model.word_embed.weight.std() < 1.5 * std
    assert model.head.weight.abs().max() <= 2.0 * 0.02
    assert all(
        float(b.sa.scale_mul_1H11.detach().flatten()[0]) == pytest.approx(math.log(4))
        for b in model.block_list
    )


@torch.no_grad()
def test_bf16_autocast_forward_stays_close_to_fp32(model: Infinity) -> None:
    text = random_text([3, 5], seed=14)
    inputs = model.scale_inputs_from_bits(random_bits(SCHEDULE, 2, 8, seed=15), SCHEDULE)
    ref = model(text, inputs, SCHEDULE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(text, inputs, SCHEDULE)
    assert low.dtype == torch.float32  # the head runs in fp32
    assert (low - ref).abs().max() < 0.1 * ref.abs().max()


@torch.no_grad()
def test_patchified_56_bit_model_kv_cache_equals_teacher_forcing() -> None:
    model = tiny_model(seed=3, d_vae=56, patchify=True, depth=2, block_chunks=1)
    g = torch.Generator().manual_seed(16)
    vae_bits = [torch.randint(0, 2, (2, 2 * h, 2 * w, 14), generator=g) for h, w in SCHEDULE.scales]
    inputs = model.scale_inputs_from_bits(vae_bits, SCHEDULE)
    text = random_text([2, 5], seed=17)
    full = model(text, inputs, SCHEDULE)
    assert full.shape == (2, SCHEDULE.seq_len, 56, 2)
    torch.testing.assert_close(cached_logits(model, text, inputs, SCHEDULE), full, atol=1e-5, rtol=1e-5)
