"""The fast cached step (`Infinity.forward_scale`) gives the bits of the plain reference step, scale by scale.

`forward_scale` computes the per-call constants (AdaLN modulations, biases, log-scales, the head's AdaLN, padded
text keys/values) once and RoPE tables once per model; `forward_scale_reference` recomputes everything at every
scale (the implementation before). Logits must be equal to the last bit, in fp32 and under bf16 autocast, and the sampler
must draw the same tokens, codes and log-probabilities with either step.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from bsq_tokenizer.schedules import custom_schedule
from infinity_model.condition import TextCondition
from infinity_model.config import InfinityConfig
from infinity_model.sampler import SamplerConfig, SampleResult, filter_bit_logits, sample
from infinity_model.transformer import Infinity

SCHEDULE = custom_schedule([(1, 1), (2, 2), (3, 3), (4, 4), (6, 6)])


class ReferenceStep(Infinity):
    """The same model stepping with `forward_scale_reference`."""

    def forward_scale(self, *args, **kwargs) -> torch.Tensor:
        return self.forward_scale_reference(*args, **kwargs)


def _models(patchify: bool = False) -> tuple[Infinity, Infinity]:
    config = InfinityConfig(
        depth=3,
        embed_dim=64,
        num_heads=4,
        d_vae=16 if patchify else 8,
        patchify=patchify,
        text_channels=32,
        text_maxlen=16,
        pool_heads=2,
    )
    torch.manual_seed(0)
    fast = Infinity(config)
    fast.init_weights(init_std=0.1, aln=0.5, aln_gamma=0.5, head_scale=1.0)  # logits far from 0
    reference = ReferenceStep(config)
    reference.load_state_dict(fast.state_dict())
    return fast.eval(), reference.eval()


@pytest.fixture(scope="module")
def models() -> tuple[Infinity, Infinity]:
    return _models()


def _text(lengths: list[int], seed: int = 0) -> TextCondition:
    g = torch.Generator().manual_seed(seed)
    return TextCondition(torch.randn(sum(lengths), 32, generator=g), torch.tensor(lengths))


def _precision(bf16: bool) -> contextlib.AbstractContextManager[object]:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _same_draw(a: SampleResult, b: SampleResult) -> bool:
    same_bits = len(a.bits) == len(b.bits) and all(
        torch.equal(x, y) for x, y in zip(a.bits, b.bits, strict=True)
    )
    same_scores = (a.log_prob is None and b.log_prob is None) or (
        a.log_prob is not None and b.log_prob is not None and torch.equal(a.log_prob, b.log_prob)
    )
    return same_bits and torch.equal(a.codes, b.codes) and same_scores


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize(
    "lengths", [[5], [3, 7, 5]]
)  # one prompt; prompts of different lengths (padded text)
def test_fast_step_logits_equal_the_reference_step_at_every_scale(models, lengths, bf16):
    fast, reference = models
    text = _text(lengths)
    cond = fast.prepare(TextCondition.concat(text, fast.uncond_text(text.lengths)))
    hook_calls: list[int] = []

    def hook(index: int, hidden: torch.Tensor) -> torch.Tensor:  # hidden-state edits see the same tensors
        hook_calls.append(index)
        return hidden * 1.5 if index == 1 else hidden

    g = torch.Generator().manual_seed(1)
    with torch.no_grad(), _precision(bf16):
        caches = (fast.new_cache(), reference.new_cache())
        for k, (h, w) in enumerate(SCHEDULE.scales):
            x = None if k == 0 else torch.randn(2 * len(lengths), h * w, 8, generator=g)
            got = fast.forward_scale(cond, x, k, SCHEDULE, caches[0], after_block=hook)
            want = reference.forward_scale_reference(cond, x, k, SCHEDULE, caches[1], after_block=hook)
            assert got.dtype == want.dtype == torch.float32
            assert torch.equal(got, want), f"scale {k}: max |difference| {(got - want).abs().max()}"
            assert torch.equal(caches[0].layers[0].k, caches[1].layers[0].k)
    assert hook_calls == [0, 1, 2] * 2 * SCHEDULE.num_scales


SETTINGS: dict[str, SamplerConfig] = {
    "cfg 3": SamplerConfig(cfg=3.0, tau=0.5),
    "cfg off at the last 2 scales (narrowed cache)": SamplerConfig(cfg=3.0, tau=0.5, cfg_off_last=2),
    "no guidance": SamplerConfig(cfg=1.0, tau=0.5),
    "hidden-state guidance": SamplerConfig(cfg=2.0, tau=0.5, cfg_insertion_layer=-1),
    "per-scale cfg, top-k 1, top-p 0.9": SamplerConfig(cfg=(1.0, 2.0, 3.0, 4.0, 5.0), top_k=1, top_p=0.9),
    "3 candidates": SamplerConfig(cfg=3.0, tau=0.5, candidates=3),
}


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("name", list(SETTINGS))
def test_sampler_draws_the_same_tokens_codes_and_scores_with_the_fast_step(models, name, bf16):
    fast, reference = models
    text = _text([4, 6])
    with _precision(bf16):
        got = sample(fast, text, SCHEDULE, SETTINGS[name], seed=7)
        want = sample(reference, text, SCHEDULE, SETTINGS[name], seed=7)
    assert _same_draw(got, want)


def test_fast_step_on_the_patchified_layout_and_recomputing_the_prefix():
    fast, reference = _models(patchify=True)
    schedule = custom_schedule([(1, 1), (2, 2), (3, 3)])
    text = _text([5])
    for config in (SamplerConfig(cfg=3.0), SamplerConfig(cfg=3.0, use_cache=False)):
        assert _same_draw(
            sample(fast, text, schedule, config, seed=2), sample(reference, text, schedule, config, seed=2)
        )


@pytest.mark.parametrize("top_k", [2, 900])
def test_top_k_at_least_the_two_bit_values_keeps_every_logit(top_k):
    logits = torch.randn(3, 50, 2)
    assert torch.equal(filter_bit_logits(logits, top_k, 0.0), logits)
    filtered = filter_bit_logits(logits, 1, 0.0)
    assert bool((filtered == float("-inf")).any())


def test_rope_tables_are_built_once_per_model_so_a_later_call_copies_nothing_from_the_host(
    models: tuple[Infinity, Infinity], monkeypatch: pytest.MonkeyPatch
) -> None:
    import infinity_model.transformer as transformer

    fast, _ = models
    fast._rope_tables.clear()
    built: list[object] = []
    rope_cos_sin = transformer.rope_cos_sin

    def counted(*args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        built.append(args[0])
        return rope_cos_sin(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(transformer, "rope_cos_sin", counted)
    for _ in range(2):  # a CUDA graph captures the second call: it must find every table on the model
        sample(fast, _text([5]), SCHEDULE, SamplerConfig(cfg=3.0), seed=0)
    assert built == [[hw] for hw in SCHEDULE.scales]  # one table per scale, all in the first call
