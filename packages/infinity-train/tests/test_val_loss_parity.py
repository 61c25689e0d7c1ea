"""The trainer's validation loss equals `infinity-eval val-loss`'s on the same checkpoint and batches.

Both run the reference validation-loss protocol (official `evaluation/validation_loss/validation_loss.py`):
BSC with 20 noisy layers, strength 0.2, re-quantisation, flip probabilities from a seeded legacy numpy
`RandomState` and flip masks from a seeded torch CPU generator.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("infinity_eval")

SCALES = ((1, 1), (2, 2), (4, 4))


def _tiny_trainer(reweight: bool):
    """A TransformerTrainer on a tiny random model without DeepSpeed: only what validation reads is set."""
    from bsq_tokenizer import BSQVAE, VAEConfig
    from infinity_model import Infinity
    from infinity_train.config import DataConfig, DeepSpeedConfig, RunConfig, TransformerTrainConfig
    from infinity_train.distributed import DistInfo
    from infinity_train.transformer_trainer import TransformerTrainer, build_infinity_config

    config = RunConfig(
        seed=3,
        data=DataConfig(scales=SCALES, use_precomputed_text=True, batch_size=2),
        transformer=TransformerTrainConfig(reweight_loss_by_scale=reweight),
        deepspeed=DeepSpeedConfig(precision="fp32"),  # infinity-eval runs the model as loaded (fp32 here)
    )
    config = config.replace(
        transformer_model=config.transformer_model.__class__(
            preset="layer12",
            overrides={
                "depth": 2,
                "embed_dim": 64,
                "num_heads": 2,
                "text_channels": 32,
                "text_maxlen": 16,
                "pool_heads": 2,
                "block_chunks": 1,
                "d_vae": 16,
            },
        )
    )
    trainer = TransformerTrainer.__new__(
        TransformerTrainer
    )  # skips DeepSpeed; the methods under test are real
    trainer.config = config
    trainer.dist = DistInfo(0, 1, 0, torch.device("cpu"))
    trainer.model_config = build_infinity_config(config)
    torch.manual_seed(0)
    model = Infinity(trainer.model_config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)  # random weights far from the init, so every scale's logits matter
    trainer.engines = {"model": model.eval()}
    vae_config = VAEConfig.preset("d16").replace(ch=32, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1)
    trainer.vae = BSQVAE(vae_config).eval().requires_grad_(False)
    trainer.text_encoder = None
    trainer._latent_cache = {}
    return trainer


def _batches(count: int = 3) -> list[dict]:
    g = torch.Generator().manual_seed(11)
    out = []
    for _ in range(count):
        feats = [torch.randn(n, 32, generator=g) for n in (3, 5)]
        out.append(
            {"images": torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, "template": 1.0, "t5_features": feats}
        )
    return out


@pytest.mark.parametrize("reweight", [False, True])
def test_trainer_validation_equals_infinity_eval_val_loss_on_the_same_batches(reweight):
    from bsq_tokenizer.schedules import custom_schedule
    from infinity_eval.val_loss import ValLossOptions, infinity_val_loss
    from infinity_train.transformer_trainer import text_condition_from_batch

    trainer = _tiny_trainer(reweight)
    batches = _batches()
    ours = trainer.validation_metrics(batches)
    schedule = custom_schedule(SCALES, 1.0, name="custom")
    eval_batches = [
        (text_condition_from_batch(b, True, None, torch.device("cpu")), b["images"]) for b in batches
    ]
    options = ValLossOptions(seed=trainer.validation_seed, reweight_by_scale=reweight)
    model = trainer.engine.eval()  # validation_metrics hands the model back in training mode
    theirs = infinity_val_loss(model, trainer.vae, eval_batches, options, schedule_for=lambda r: schedule)
    # the trainer reduces in fp32 (its differentiable loss), infinity-eval in fp64: equal to fp32 rounding
    assert ours["loss"] == pytest.approx(theirs["loss_reweight_by_scale"], rel=1e-6, abs=0)
    assert 100 * ours["bit_acc"] == pytest.approx(theirs["acc_bit_mean"], rel=1e-6)
    assert 100 * ours["token_acc"] == pytest.approx(theirs["acc_token_mean"], rel=1e-6, abs=1e-9)
    if not reweight:
        assert theirs["loss_reweight_by_scale"] == pytest.approx(theirs["loss_bit_mean"], rel=1e-12)


def test_trainer_and_infinity_eval_build_identical_bsc_inputs_and_labels_with_flips_on():
    """The equality above is exact where it matters: the same flips, inputs and labels, bit for bit."""
    from infinity_eval.val_loss import ValLossOptions, bsc_inputs_and_labels
    from infinity_train.bsc import bitwise_self_correction
    from infinity_train.transformer_trainer import VALIDATION_BSC

    latent = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(4))
    scales = [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8)]
    lfq = _tiny_trainer(False).vae.quantizer.lfq
    ours = bitwise_self_correction(
        latent,
        scales,
        lfq,
        VALIDATION_BSC,
        torch.Generator().manual_seed(5),
        levels=np.random.RandomState(5).randint,
    )
    x, y = bsc_inputs_and_labels(
        latent, scales, ValLossOptions(), np.random.RandomState(5), torch.Generator().manual_seed(5)
    )
    assert sum(ours.flip_probs[:-1]) > 0  # flips were on
    assert torch.equal(ours.inputs, x) and torch.equal(ours.labels, y)
