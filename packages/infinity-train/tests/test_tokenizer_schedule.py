"""The tokenizer trainer quantizes each batch with its own (template, pixel budget) schedule."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from bsq_tokenizer import VAEConfig, get_schedule
from infinity_train.config import config_from_dict
from infinity_train.tokenizer_trainer import TokenizerTrainer


def _trainer(data: dict) -> SimpleNamespace:
    config = config_from_dict({"task": "tokenizer", "data": data})
    return SimpleNamespace(config=config, vae_config=VAEConfig(codebook_dim=16, ch=32))


def test_batches_of_every_template_use_their_own_small_budget_schedule():
    trainer = _trainer({"pn": "0.016M"})
    for template, latent in ((1.0, (8, 8)), (0.75, (9, 12)), (2.0, (10, 5))):
        scales = TokenizerTrainer._scales(trainer, template, latent)
        assert scales == list(get_schedule(template, "0.016M").scales)
        assert scales[-1] == latent


def test_a_latent_that_does_not_end_the_schedule_is_a_clear_error():
    trainer = _trainer({"pn": "0.016M"})
    with pytest.raises(ValueError, match=r"latent is \(16, 16\).*data.scales"):
        TokenizerTrainer._scales(trainer, 1.0, (16, 16))


def test_explicit_square_scales_win():
    trainer = _trainer({"pn": "0.016M", "scales": [[1, 1], [2, 2], [4, 4]]})
    assert TokenizerTrainer._scales(trainer, 1.0, (4, 4)) == [(1, 1), (2, 2), (4, 4)]
