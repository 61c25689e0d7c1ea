"""Sampler (official `autoregressive_infer_cfg`): seeding, CFG branches, KV cache exactness, batching, teacher-forcing agreement, top-p."""

from __future__ import annotations

import pytest
import torch
from bsq_tokenizer import get_schedule
from bsq_tokenizer.schedules import custom_schedule
from infinity_model.condition import TextCondition
from infinity_model.config import InfinityConfig
from infinity_model.sampler import SamplerConfig, ScaleStep, codes_to_uint8, filter_bit_logits, sample
from infinity_model.transformer import Infinity

SCHEDULE = custom_schedule([(1, 1), (2, 2), (3, 3), (4, 4)])


def tiny_model(d_vae: int = 8, patchify: bool = False, depth: int = 2) -> Infinity:
    config = InfinityConfig(
        depth=depth,
        embed_dim=64,
        num_heads=4,
        d_vae=d_vae,
        patchify=patchify,
        text_channels=32,
        text_maxlen=16,
        pool_heads=2,
    )
    torch.manual_seed(0)
    model = Infinity(config)
    # larger head/AdaLN scales than the training init so that logits are far from 0 and guidance matters
    model.init_weights(init_std=0.1, aln=0.5, aln_gamma=0.5, head_scale=1.0)
    return model.eval()


def random_text(lengths: list[int], seed: int = 0, channels: int = 32) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    return TextCondition(torch.randn(sum(lengths), channels, generator=g), torch.tensor(lengths))


@pytest.fixture(scope="module")
def model() -> Infinity:
    return tiny_model()


def bits_equal(a, b) -> bool:
    return len(a.bits) == len(b.bits) and all(torch.equal(x, y) for x, y in zip(a.bits, b.bits, strict=True))


def test_same_seed_reproduces_and_other_seeds_differ(model):
    text = random_text([5])
    first = sample(model, text, SCHEDULE, seed=3)
    again = sample(model, text, SCHEDULE, seed=3)
    other = sample(model, text, SCHEDULE, seed=4)
    assert bits_equal(first, again)
    assert torch.equal(first.codes, again.codes)
    assert not bits_equal(first, other)
    assert [tuple(b.shape) for b in first.bits] == [(1, h, w, 8) for h, w in SCHEDULE.scales]
    assert first.codes.shape == (1, 8, 4, 4)


def _count_batches(model, monkeypatch) -> list[int]:
    sizes: list[int] = []
    original = model.forward_scale

    def recording(cond, x, k, schedule, cache, after_block=None):
        sizes.append(cond.batch_size)
        return original(cond, x, k, schedule, cache, after_block=after_block)

    monkeypatch.setattr(model, "forward_scale", recording)
    return sizes


def test_cfg_one_skips_the_unconditional_branch(model, monkeypatch):
    sizes = _count_batches(model, monkeypatch)
    sample(model, random_text([4, 6]), SCHEDULE, SamplerConfig(cfg=1.0))
    assert sizes == [2] * SCHEDULE.num_scales
    sizes.clear()
    sample(model, random_text([4, 6]), SCHEDULE, SamplerConfig(cfg=3.0))
    assert sizes == [4] * SCHEDULE.num_scales
    sizes.clear()
    sample(model, random_text([4, 6]), SCHEDULE, SamplerConfig(cfg=(1.0, 1.0, 2.0, 1.0)))
    assert sizes == [4] * SCHEDULE.num_scales  # any cfg != 1 doubles the batch for the whole call


@pytest.mark.parametrize("insertion", [0, -1])
def test_kv_cache_sampling_equals_recomputing_the_prefix(model, insertion):
    text = random_text([3, 7], seed=1)
    cached = sample(model, text, SCHEDULE, SamplerConfig(cfg_insertion_layer=insertion), seed=11)
    fresh = sample(
        model, text, SCHEDULE, SamplerConfig(cfg_insertion_layer=insertion, use_cache=False), seed=11
    )
    assert bits_equal(cached, fresh)
    assert torch.equal(cached.codes, fresh.codes)


def test_a_batch_of_two_prompts_equals_each_prompt_alone(model):
    both = random_text([4, 9], seed=2)
    first, second = both.split()
    batched = sample(model, both, SCHEDULE, seed=21)
    alone_0 = sample(model, first, SCHEDULE, seed=21)
    alone_1 = sample(model, second, SCHEDULE, seed=22)  # sample i of a batch uses seed + i
    for k in range(SCHEDULE.num_scales):
        assert torch.equal(batched.bits[k][0:1], alone_0.bits[k])
        assert torch.equal(batched.bits[k][1:2], alone_1.bits[k])
    listed = sample(model, both, SCHEDULE, seed=[22, 21])
    assert torch.equal(listed.bits[-1][0:1], sample(model, first, SCHEDULE, seed=22).bits[-1])


def _capture_logits(steps: list[ScaleStep]):
    return lambda step: steps.append(step)


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_teacher_forced_logits_equal_the_sampler_logits_of_the_last_scale(model, cfg):
    text = random_text([5, 3], seed=3)
    steps: list[ScaleStep] = []
    result = sample(model, text, SCHEDULE, SamplerConfig(cfg=cfg, tau=1.0), seed=5, callback=steps.append)
    inputs = model.scale_inputs_from_bits(result.bits, SCHEDULE)
    h, w = SCHEDULE.scales[-1]
    with torch.no_grad():
        if cfg == 1.0:
            forced = model(text, inputs, SCHEDULE)[:, -h * w :]
        else:
            both = TextCondition.concat(text, model.uncond_text(text.lengths))
            logits = model(both, torch.cat([inputs, inputs]), SCHEDULE)[:, -h * w :]
            forced = cfg * logits[:2] + (1 - cfg) * logits[2:]
    assert len(steps) == SCHEDULE.num_scales and steps[-1].k == SCHEDULE.num_scales - 1
    torch.testing.assert_close(steps[-1].logits, forced, rtol=0, atol=2e-5)


def test_temperature_multiplies_logits_by_float32_reciprocal(model):
    text = random_text([4], seed=4)
    s1: list[ScaleStep] = []
    s2: list[ScaleStep] = []
    sample(model, text, SCHEDULE, SamplerConfig(cfg=1.0, tau=1.0), callback=s1.append)
    sample(model, text, SCHEDULE, SamplerConfig(cfg=1.0, tau=0.3), callback=s2.append)
    scale = torch.tensor(1 / 0.3, dtype=torch.float32)
    assert torch.equal(s2[0].logits, s1[0].logits * scale)


def test_learned_uncond_equals_passing_cfg_uncond_as_negative_text(model):
    text = random_text([4, 6], seed=5)
    default = sample(model, text, SCHEDULE, seed=9)
    explicit = sample(model, text, SCHEDULE, seed=9, negative_text=model.uncond_text(text.lengths))
    assert bits_equal(default, explicit)
    negative = sample(model, text, SCHEDULE, seed=9, negative_text=random_text([2, 11], seed=6))
    assert not bits_equal(default, negative)


def test_per_scale_cfg_and_tau_lists_must_match_the_schedule(model):
    with pytest.raises(ValueError, match="3 values but the schedule has 4 scales"):
        sample(model, random_text([3]), SCHEDULE, SamplerConfig(cfg=(3.0, 3.0, 3.0)))
    with pytest.raises(ValueError, match="tau must be > 0"):
        SamplerConfig(tau=0.0)
    with pytest.raises(ValueError, match="cfg_insertion_layer=1"):
        SamplerConfig(cfg_insertion_layer=1)
    with pytest.raises(ValueError, match="one seed per prompt"):
        sample(model, random_text([3, 3]), SCHEDULE, seed=[1, 2, 3])
    with pytest.raises(ValueError, match="one negative prompt per prompt"):
        sample(model, random_text([3, 3]), SCHEDULE, negative_text=random_text([3]))


@pytest.mark.parametrize(("ratio", "pn"), [(1.0, "0.06M"), (2.0, "0.06M"), (0.333, "0.06M")])
def test_released_templates_at_small_budget(model, ratio, pn):
    schedule = get_schedule(ratio, pn)
    result = sample(model, random_text([3]), schedule, SamplerConfig(cfg=1.0))
    assert [tuple(b.shape[1:3]) for b in result.bits] == list(schedule.scales)
    assert result.codes.shape[-2:] == schedule.scales[-1]


def test_top_p_removes_the_unlikely_bit_iff_its_probability_is_at_most_003f():
    threshold = torch.tensor(0.03, dtype=torch.float32)
    # walk the gap between two logits across the edge in float32 steps and compare with the rule itself
    base = torch.log(torch.tensor(0.97 / 0.03, dtype=torch.float64)).float()
    gaps = base + torch.arange(-300, 301, dtype=torch.float32) * 1e-6
    logits = torch.stack([torch.zeros_like(gaps), gaps], dim=-1)  # bit 0 is the unlikely one
    p_low = logits.softmax(-1)[:, 0]
    filtered = filter_bit_logits(logits, top_k=900, top_p=0.97)
    removed = torch.isinf(filtered[:, 0])
    assert torch.equal(removed, p_low <= threshold)
    assert removed.any() and (~removed).any()  # the walk really crosses the edge
    assert not torch.isinf(filtered[:, 1]).any()  # the likely bit is always kept
    ties = filter_bit_logits(torch.zeros(3, 2), top_k=900, top_p=0.97)
    assert torch.equal(ties, torch.zeros(3, 2))
    swapped = filter_bit_logits(torch.tensor([[5.0, 0.0]]), top_k=900, top_p=0.97)
    assert torch.isinf(swapped[0, 1]) and swapped[0, 0] == 5.0
    greedy = filter_bit_logits(torch.tensor([[0.1, 0.2], [0.3, 0.3]]), top_k=1, top_p=0.0)
    assert torch.isinf(greedy[0, 0]) and greedy[0, 1] == 0.2 and not torch.isinf(greedy[1]).any()


def test_decoded_images_are_rgb_uint8_by_truncation():
    class ColourVAE:
        def decode(self, codes):
            img = torch.full((codes.shape[0], 3, 2, 2), -1.0)
            img[:, 0] = 1.0  # red channel full
            img[:, 1] = 0.999  # (1.999 / 2) * 255 = 254.87 -> 254 (truncated, not rounded)
            return img

    out = codes_to_uint8(ColourVAE(), torch.zeros(1, 4, 1, 1))
    assert out.dtype == torch.uint8 and out.shape == (1, 2, 2, 3)
    assert out[0, 0, 0].tolist() == [255, 254, 0]


def test_callback_sees_every_scale_with_partial_codes(model):
    steps: list[ScaleStep] = []
    result = sample(model, random_text([4]), SCHEDULE, seed=1, callback=steps.append)
    assert [s.k for s in steps] == list(range(SCHEDULE.num_scales))
    assert all(s.codes.shape == result.codes.shape for s in steps)
    assert torch.equal(steps[-1].codes, result.codes)
    assert not torch.equal(steps[0].codes, result.codes)
    assert steps[0].preview is None  # no VAE given


def test_patchified_model_samples_stride8_vae_grid_bits():
    model = tiny_model(d_vae=56, patchify=True)
    text = random_text([4], seed=8)
    steps: list[ScaleStep] = []
    result = sample(model, text, SCHEDULE, SamplerConfig(cfg=1.0, tau=1.0), seed=2, callback=steps.append)
    assert [tuple(b.shape) for b in result.bits] == [(1, 2 * h, 2 * w, 14) for h, w in SCHEDULE.scales]
    assert result.codes.shape == (1, 14, 8, 8)
    inputs = model.scale_inputs_from_bits(result.bits, SCHEDULE)
    with torch.no_grad():
        forced = model(text, inputs, SCHEDULE)[:, -16:]
    torch.testing.assert_close(steps[-1].logits, forced, rtol=0, atol=2e-5)


def test_patchified_token_bit_c4_dy2_dx_lands_on_vae_channel_c_at_offset_dy_dx(monkeypatch):
    model = tiny_model(d_vae=56, patchify=True)
    index = 2 * 4 + 1 * 2 + 0  # VAE channel 2, dy = 1, dx = 0

    def forced(cond, x, k, schedule, cache, after_block=None):
        h, w = schedule.scales[k]
        logits = torch.zeros(cond.batch_size, h * w, 56, 2)
        logits[..., 0] = 50.0  # every bit 0 ...
        logits[:, :, index, 0], logits[:, :, index, 1] = 0.0, 50.0  # ... except token channel 9
        return logits

    monkeypatch.setattr(model, "forward_scale", forced)
    result = sample(model, random_text([3]), SCHEDULE, SamplerConfig(cfg=1.0, tau=1.0))
    bits = result.bits[-1][0]  # (8, 8, 14)
    expected = torch.zeros(8, 8, 14, dtype=bits.dtype)
    expected[1::2, 0::2, 2] = 1
    assert torch.equal(bits, expected)


def test_single_prompt_consumes_one_generator_stream_like_the_reference(model):
    """B = 1: one generator seeded once, one multinomial over the (h*w*d, 2) matrix per scale, in scale order."""
    steps: list[ScaleStep] = []
    result = sample(model, random_text([6], seed=7), SCHEDULE, seed=1234, callback=steps.append)
    rng = torch.Generator().manual_seed(1234)
    for k, step in enumerate(steps):
        flat = filter_bit_logits(step.logits.reshape(-1, 2), top_k=900, top_p=0.97)
        draws = torch.multinomial(flat.softmax(-1), num_samples=1, replacement=True, generator=rng)
        h, w = SCHEDULE.scales[k]
        assert torch.equal(
            draws.view(1, h, w, -1), result.bits[k]
        )  # row (i*w + j)*d + c: token-major, bit-minor


def test_prefix_of_a_samples_own_bits_reproduces_it_exactly(model):
    text = random_text([5])
    free = sample(model, text, SCHEDULE, seed=3)
    forced = sample(model, text, SCHEDULE, seed=3, prefix_bits=free.bits[:2])
    assert bits_equal(free, forced)
    assert torch.equal(free.codes, forced.codes)


def test_prefix_bits_fix_the_first_scales_and_the_model_continues_from_them(model):
    text = random_text([5])
    other = sample(model, text, SCHEDULE, seed=5)
    free = sample(model, text, SCHEDULE, seed=3)
    forced = sample(model, text, SCHEDULE, seed=3, prefix_bits=other.bits[:2])
    assert all(torch.equal(forced.bits[k], other.bits[k]) for k in range(2))
    assert not torch.equal(forced.bits[3], free.bits[3])  # the continuation follows the new layout
    whole = sample(model, text, SCHEDULE, seed=3, prefix_bits=other.bits)
    assert torch.equal(whole.codes, other.codes)


def test_prefix_bits_of_the_wrong_shape_count_or_dtype_are_refused(model):
    text = random_text([5])
    bits = sample(model, text, SCHEDULE, seed=3).bits
    with pytest.raises(
        ValueError, match=r"prefix_bits\[1\] has shape \(1, 3, 3, 8\); scale 1 needs \(1, 2, 2, 8\)"
    ):
        sample(model, text, SCHEDULE, prefix_bits=[bits[0], bits[2]])
    with pytest.raises(ValueError, match="5 scales but the schedule has only 4"):
        sample(model, text, SCHEDULE, prefix_bits=[*bits, bits[-1]])
    with pytest.raises(TypeError, match="0/1 labels"):
        sample(model, text, SCHEDULE, prefix_bits=[bits[0].float()])
    with pytest.raises(ValueError, match="0/1 labels"):
        sample(model, text, SCHEDULE, prefix_bits=[bits[0] * 2 + 1])


def _teacher_forced_log_prob(model, text, bits) -> torch.Tensor:
    """Sum over every bit of log softmax(teacher-forced logits)[bit], one value per sample."""
    inputs = model.scale_inputs_from_bits(bits, SCHEDULE)
    labels = torch.cat([b.flatten(1, 2) for b in bits], dim=1)  # (B, L, d)
    with torch.no_grad():
        logits = model(text, inputs, SCHEDULE).float()
    return logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(dim=(1, 2))


def test_log_probs_are_the_untempered_teacher_forced_likelihoods_of_the_drawn_bits(model):
    text = random_text([5, 3], seed=3)
    result = sample(model, text, SCHEDULE, SamplerConfig(cfg=3.0, tau=0.7), seed=5)
    cond = _teacher_forced_log_prob(model, text, result.bits)
    uncond = _teacher_forced_log_prob(model, model.uncond_text(text.lengths), result.bits)
    assert result.log_prob is not None and result.log_prob_uncond is not None
    torch.testing.assert_close(result.log_prob, cond, rtol=0, atol=1e-3)
    torch.testing.assert_close(result.log_prob_uncond, uncond, rtol=0, atol=1e-3)
    assert not torch.allclose(cond, uncond, atol=1e-2)  # the two branches really differ
    unguided = sample(model, text, SCHEDULE, SamplerConfig(cfg=1.0), seed=5)
    assert unguided.log_prob is not None and unguided.log_prob_uncond is None
    hidden = sample(model, text, SCHEDULE, SamplerConfig(cfg=3.0, cfg_insertion_layer=-1), seed=5)
    assert hidden.log_prob is None and hidden.log_prob_uncond is None


def test_candidates_keep_each_prompts_most_likely_of_its_n_seeded_draws(model):
    text = random_text([5, 3], seed=3)
    config = SamplerConfig(cfg=3.0, tau=1.0)
    best = sample(model, text, SCHEDULE, SamplerConfig(cfg=3.0, tau=1.0, candidates=3), seed=[10, 20])
    for i, base in enumerate((10, 20)):
        alone = [sample(model, text.select([i]), SCHEDULE, config, seed=3 * base + j) for j in range(3)]
        scores = torch.cat([a.log_prob for a in alone])
        assert len(set(scores.tolist())) == 3  # three different draws to choose from
        pick = alone[int(scores.argmax())]
        assert all(torch.equal(b[i : i + 1], p) for b, p in zip(best.bits, pick.bits, strict=True))
        torch.testing.assert_close(best.log_prob[i], scores.max(), rtol=0, atol=1e-4)
        torch.testing.assert_close(best.codes[i : i + 1], pick.codes)


def test_candidates_must_be_positive_and_need_logit_guidance():
    with pytest.raises(ValueError, match="candidates must be >= 1"):
        SamplerConfig(candidates=0)
    with pytest.raises(ValueError, match=r"cfg_insertion_layer=-2\) does not compute"):
        SamplerConfig(candidates=2, cfg_insertion_layer=-2)


class _CountingVAE:
    """A stand-in decoder (a fixed function of the codes) that records how many images it decoded."""

    def __init__(self) -> None:
        self.decoded = 0

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        self.decoded += codes.shape[0]
        img = codes.mean(dim=1, keepdim=True).tanh()
        return (
            torch.cat([img, -img, img * 0.5], dim=1).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        )


def test_candidates_decode_only_the_kept_images_and_they_equal_the_plain_draws_decoding(model):
    text = random_text([5, 3], seed=3)
    vae = _CountingVAE()
    best = sample(
        model, text, SCHEDULE, SamplerConfig(cfg=3.0, tau=1.0, candidates=3), seed=[10, 20], vae=vae
    )
    assert vae.decoded == 2  # B images, not B * candidates
    for i, base in enumerate((10, 20)):
        alone = [
            sample(
                model, text.select([i]), SCHEDULE, SamplerConfig(cfg=3.0, tau=1.0), seed=3 * base + j, vae=vae
            )
            for j in range(3)
        ]
        pick = alone[int(torch.cat([a.log_prob for a in alone]).argmax())]
        assert best.images is not None and pick.images is not None
        assert torch.equal(best.images[i : i + 1], pick.images)  # the kept image, pixel for pixel


def test_cfg_off_last_runs_only_the_conditional_half_at_the_last_scales(model, monkeypatch):
    text = random_text([4, 6], seed=2)
    reference = sample(model, text, SCHEDULE, SamplerConfig(cfg=3.0, tau=1.0), seed=7)
    # the same draw as guidance 1 at the last two scales (the conditional logits alone), now in half the batch
    unguided_end = sample(model, text, SCHEDULE, SamplerConfig(cfg=(3.0, 3.0, 1.0, 1.0), tau=1.0), seed=7)
    sizes = _count_batches(model, monkeypatch)
    off = sample(model, text, SCHEDULE, SamplerConfig(cfg=3.0, tau=1.0, cfg_off_last=2), seed=7)
    assert sizes == [4, 4, 2, 2]
    assert bits_equal(off, unguided_end) and not bits_equal(off, reference)
    torch.testing.assert_close(off.log_prob, unguided_end.log_prob, rtol=0, atol=1e-4)
    assert off.log_prob_uncond is None  # the unconditional branch did not see the last scales
    sizes.clear()
    default = sample(model, text, SCHEDULE, SamplerConfig(cfg=3.0, tau=1.0, cfg_off_last=0), seed=7)
    assert sizes == [4] * SCHEDULE.num_scales and bits_equal(default, reference)
    assert torch.equal(default.codes, reference.codes) and torch.equal(default.log_prob, reference.log_prob)
    sizes.clear()
    never = sample(model, text, SCHEDULE, SamplerConfig(cfg=3.0, tau=1.0, cfg_off_last=9), seed=7)
    assert sizes == [2] * SCHEDULE.num_scales
    assert bits_equal(never, sample(model, text, SCHEDULE, SamplerConfig(cfg=1.0, tau=1.0), seed=7))


def test_cfg_off_last_with_hidden_state_guidance_and_candidates(model):
    text = random_text([5], seed=4)
    hidden = SamplerConfig(cfg=(3.0, 3.0, 3.0, 1.0), tau=1.0, cfg_insertion_layer=-1)
    plain = sample(model, text, SCHEDULE, hidden, seed=1)
    off = sample(
        model, text, SCHEDULE, SamplerConfig(cfg=3.0, tau=1.0, cfg_insertion_layer=-1, cfg_off_last=1), seed=1
    )
    assert bits_equal(off, plain)
    best = sample(
        model, text, SCHEDULE, SamplerConfig(cfg=3.0, tau=1.0, candidates=2, cfg_off_last=1), seed=3
    )
    assert best.log_prob is not None and best.codes.shape == (1, 8, 4, 4)


def test_cfg_off_last_must_be_non_negative_and_needs_the_cache():
    with pytest.raises(ValueError, match="cfg_off_last must be >= 0"):
        SamplerConfig(cfg_off_last=-1)
    with pytest.raises(ValueError, match="needs use_cache=True"):
        SamplerConfig(cfg_off_last=1, use_cache=False)
