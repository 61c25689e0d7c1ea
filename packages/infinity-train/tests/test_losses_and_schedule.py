"""Per-scale loss weighting (official `trainer.py`, `reweight_loss_by_scale`) and the LR/WD schedule (official `infinity/utils/lr_control.py`)."""

import math

import pytest
import torch
from bsq_tokenizer.schedules import scale_token_weights
from infinity_train.config import OptimConfig
from infinity_train.losses import bit_cross_entropy
from infinity_train.lr_schedule import lr_factor, peak_lr, weight_decay_at

SCALES = [(1, 1), (2, 2), (4, 4)]


def test_scale_weights_follow_sqrt_area_ratio_and_sum_to_one():
    w = scale_token_weights(SCALES, reweight=True)
    assert w.shape == (21,)
    torch.testing.assert_close(w.sum(), torch.tensor(1.0))
    # token of scale 0 weighs sqrt(16)/sqrt(1) = 4x a token of the last scale, scale 1: sqrt(16/4) = 2x.
    assert w[0] / w[-1] == pytest.approx(4.0) and w[1] / w[-1] == pytest.approx(2.0)
    assert torch.allclose(scale_token_weights(SCALES, reweight=False), torch.full((21,), 1 / 21))


def test_bit_cross_entropy_equals_manual_weighted_mean():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 21, 8, 2, generator=g)
    labels = torch.randint(0, 2, (3, 21, 8), generator=g)
    out = bit_cross_entropy(logits, labels, SCALES, reweight=True)
    logp = logits.log_softmax(-1)
    ce = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(-1)  # (B, L)
    manual = (ce * scale_token_weights(SCALES, True)).sum(-1).mean()
    torch.testing.assert_close(out.loss, manual)
    assert len(out.per_scale_loss) == 3 and 0 <= out.bit_acc <= 1


def test_bit_cross_entropy_rejects_mismatched_scales():
    with pytest.raises(ValueError, match="tokens"):
        bit_cross_entropy(torch.zeros(1, 5, 4, 2), torch.zeros(1, 5, 4), SCALES)


def test_lr_schedule_lin0_warmup_and_tail():
    cfg = OptimConfig(schedule="lin0", warmup_iters=10, max_iters=111, end_factor=0.3, warmup_start=0.005)
    assert lr_factor(cfg, 0) == pytest.approx(0.005)
    assert lr_factor(cfg, 5) == pytest.approx(0.005 + 0.995 * 0.5)
    assert lr_factor(cfg, 10) == 1.0 and lr_factor(cfg, 14) == 1.0  # pasd < 0.05
    assert lr_factor(cfg, 110) == pytest.approx(0.3)
    mid = 10 + 50
    assert lr_factor(cfg, mid) == pytest.approx(0.3 + 0.7 * 0.5 / 0.95)


def test_reference_train_sh_recipe_is_constant_lr_and_wd():
    cfg = OptimConfig()  # wpe = 1, no warm-up
    assert all(lr_factor(cfg, it) == 1.0 for it in range(0, 1000, 37))
    assert all(weight_decay_at(cfg, it) == pytest.approx(0.005) for it in (0, 500, 999))
    cos = OptimConfig(schedule="cos", end_factor=0.0, max_iters=101)
    assert lr_factor(cos, 50) == pytest.approx(0.5) and lr_factor(cos, 100) == pytest.approx(0.0, abs=1e-12)
    decaying = OptimConfig(weight_decay=0.05, weight_decay_end=0.01, max_iters=11)
    assert weight_decay_at(decaying, 10) == pytest.approx(0.01)
    assert weight_decay_at(decaying, 5) == pytest.approx(0.01 + 0.04 * (0.5 + 0.5 * math.cos(math.pi / 2)))


def test_peak_lr_scales_with_global_batch():
    assert peak_lr(OptimConfig(base_lr=6e-3), 32) == pytest.approx(7.5e-4)
    assert peak_lr(OptimConfig(lr=1e-4), 32) == 1e-4
