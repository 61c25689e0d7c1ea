"""Validation-loss reductions on hand-built logits, and BSC + the Infinity adapter on tiny random models."""

import math

import numpy as np
import pytest
import torch
from infinity_eval.val_loss import (
    ValLossAccumulator,
    ValLossOptions,
    bitwise_metrics,
    bsc_inputs_and_labels,
    infinity_val_loss,
)

SCALES = [(1, 1), (2, 2)]  # L = 5


def test_bitwise_metrics_on_hand_built_logits_with_per_scale_slices_and_tie_rule():
    # B=1, L=5, d=2. Scale 0 token: logits favour the right bits; scale 1 tokens: ties (predict bit 0).
    logits = torch.zeros(1, 5, 2, 2)
    labels = torch.tensor([[[1, 0], [0, 0], [1, 0], [0, 1], [1, 1]]])
    logits[0, 0, 0] = torch.tensor([0.0, math.log(3.0)])  # p(bit=1) = 3/4, label 1
    logits[0, 0, 1] = torch.tensor([math.log(3.0), 0.0])  # p(bit=0) = 3/4, label 0
    m = bitwise_metrics(logits, labels, SCALES, reweight=True)
    ce0 = -math.log(0.75)
    ce_tie = math.log(2.0)
    assert m.loss_per_scale == pytest.approx([ce0, ce_tie])
    assert m.loss_bit_mean == pytest.approx((ce0 + 4 * ce_tie) / 5)
    assert m.loss_reweight_by_scale == pytest.approx(2 / 6 * ce0 + 4 / 6 * ce_tie)
    # ties predict 0: scale 1 labels have bits right: [0,0] 2, [1,0] 1, [0,1] 1, [1,1] 0 -> 4/8
    assert m.acc_bit_per_scale == pytest.approx([100.0, 50.0])
    assert m.acc_token_per_scale == pytest.approx([100.0, 25.0])
    assert m.acc_bit_mean == pytest.approx(100 * 6 / 10)
    assert m.acc_token_mean == pytest.approx(100 * 2 / 5)


def test_metrics_reject_a_schedule_that_does_not_match_the_logits():
    with pytest.raises(ValueError, match="tokens"):
        bitwise_metrics(torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, dtype=torch.long), SCALES)


def test_aggregation_is_the_unweighted_mean_over_batches_plus_sample_weighted():
    acc = ValLossAccumulator()
    g = torch.Generator().manual_seed(0)
    metrics = []
    for b in (1, 3):
        logits = torch.randn(b, 5, 2, 2, generator=g)
        labels = torch.randint(0, 2, (b, 5, 2), generator=g)
        metrics.append(bitwise_metrics(logits, labels, SCALES))
        acc.add(metrics[-1])
    out = acc.result()
    assert out["batches"] == 2 and out["samples"] == 4
    assert out["loss_bit_mean"] == pytest.approx((metrics[0].loss_bit_mean + metrics[1].loss_bit_mean) / 2)
    assert out["loss_bit_mean_sample_weighted"] == pytest.approx(
        (metrics[0].loss_bit_mean + 3 * metrics[1].loss_bit_mean) / 4
    )
    assert out["acc_bit_per_scale"] == pytest.approx(
        [(a + b) / 2 for a, b in zip(metrics[0].acc_bit_per_scale, metrics[1].acc_bit_per_scale, strict=True)]
    )


bsq = pytest.importorskip("bsq_tokenizer")
schedules = pytest.importorskip("bsq_tokenizer.schedules")
infinity_model = pytest.importorskip("infinity_model")


def test_fp64_scale_weights_sum_to_one_and_favour_coarse_scales():
    w = schedules.scale_token_weights(SCALES, reweight=True, dtype=torch.float64)
    assert w.dtype == torch.float64 and w.shape == (5,) and float(w.sum()) == pytest.approx(1.0)
    # sqrt(4)/sqrt(1) = 2 for the 1x1 token, 1 for each 2x2 token -> 2/6 and 1/6
    assert w.tolist() == pytest.approx([2 / 6, 1 / 6, 1 / 6, 1 / 6, 1 / 6], rel=1e-15)
    uniform = schedules.scale_token_weights(SCALES, reweight=False, dtype=torch.float64)
    assert uniform.tolist() == [0.2] * 5


def _tiny_vae():
    torch.manual_seed(0)
    vae = bsq.BSQVAE(bsq.VAEConfig(codebook_dim=8, ch=32, ch_mult=(1, 1, 2), patch_size=4)).eval()
    return vae


def _tiny_infinity():
    cfg = infinity_model.InfinityConfig(
        depth=2,
        embed_dim=64,
        num_heads=4,
        d_vae=8,
        block_chunks=1,
        text_channels=32,
        text_maxlen=16,
        pool_heads=4,
    )
    torch.manual_seed(1)
    model = infinity_model.Infinity(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


def test_noise_free_bsc_matches_the_tokenizer_and_model_teacher_forcing():
    vae, model = _tiny_vae(), _tiny_infinity()
    schedule = schedules.custom_schedule([(1, 1), (2, 2), (4, 4)])
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        latent = vae.encode(images)
        clean = ValLossOptions(noise_apply_layers=-1)
        x, y = bsc_inputs_and_labels(
            latent, schedule.vae_scales(), clean, np.random.RandomState(0), torch.Generator().manual_seed(0)
        )
        ref = vae.encode_to_bits(images, schedule.vae_scales())
        ref_labels = torch.cat([b.reshape(2, -1, 8) for b in ref.bits], dim=1)
        ref_inputs = model.scale_inputs_from_bits(ref.bits, schedule)
    assert y.shape == (2, 21, 8) and x.shape == (2, 20, 8)
    assert torch.equal(y, ref_labels)
    # BSC without re-quantisation accumulates straight-through codes; the model path rebuilds codes from
    # bits, which differ by an ulp (official `multiscale_bsq.py`)
    torch.testing.assert_close(x, ref_inputs, rtol=0, atol=1e-6)


def test_bsc_noise_flips_inputs_but_never_labels_of_the_first_scale_and_is_seeded():
    vae = _tiny_vae()
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    scales = [(1, 1), (2, 2), (4, 4)]
    latent = vae.encode(images).detach()
    opts = ValLossOptions(noise_apply_layers=20, noise_apply_strength=0.5)

    def run(seed):
        return bsc_inputs_and_labels(
            latent, scales, opts, np.random.RandomState(seed), torch.Generator().manual_seed(seed)
        )

    (x1, y1), (x2, y2), (x3, _) = run(0), run(0), run(7)
    _, clean_y = bsc_inputs_and_labels(
        latent, scales, ValLossOptions(noise_apply_layers=-1), np.random.RandomState(0), torch.Generator()
    )
    assert torch.equal(x1, x2) and torch.equal(y1, y2)  # the seed fixes the protocol
    assert not torch.equal(x1, x3)
    assert torch.equal(y1[:, :1], clean_y[:, :1])  # scale 0 labels come before any noise
    assert set(torch.unique(y1).tolist()) <= {0, 1}


def test_infinity_val_loss_end_to_end_on_tiny_random_models():
    vae, model = _tiny_vae(), _tiny_infinity()
    schedule = schedules.custom_schedule([(1, 1), (2, 2), (4, 4)])
    g = torch.Generator().manual_seed(4)
    text = infinity_model.TextCondition(torch.randn(7, 32, generator=g), torch.tensor([3, 4]))
    batches = [(text, torch.rand(2, 3, 16, 16, generator=g) * 2 - 1) for _ in range(2)]
    out = infinity_val_loss(
        model, vae, batches, ValLossOptions(reweight_by_scale=True), schedule_for=lambda r: schedule
    )
    assert out["batches"] == 2 and out["samples"] == 4
    assert len(out["loss_per_scale"]) == 3 and out["schedules"] == [[[1, 1], [2, 2], [4, 4]]]
    assert 0 < out["loss_bit_mean"] < 5 and 0 <= out["acc_bit_mean"] <= 100
    assert out["loss_reweight_by_scale"] != pytest.approx(out["loss_bit_mean"])
    again = infinity_val_loss(
        model, vae, batches, ValLossOptions(reweight_by_scale=True), schedule_for=lambda r: schedule
    )
    assert again["loss_bit_mean"] == out["loss_bit_mean"]


@pytest.mark.slow
def test_val_loss_cli_loads_saved_tiny_models_and_writes_the_summary(tmp_path):
    import json

    from infinity_eval.cli import main
    from PIL import Image

    tiny = pytest.importorskip("infinity_model.tiny")
    from infinity_model import save_infinity

    t5 = tiny.write_tiny_t5(tmp_path / "t5", d_model=32)
    save_infinity(_tiny_infinity(), tmp_path / "model")
    torch.manual_seed(0)
    vae = bsq.BSQVAE(bsq.VAEConfig(codebook_dim=8, ch=32, ch_mult=(1, 1, 1, 1, 1), patch_size=16)).eval()
    bsq.save_vae(vae, tmp_path / "vae")
    rng = np.random.default_rng(0)
    with open(tmp_path / "val.jsonl", "w") as f:
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
            f.write(json.dumps({"image": f"{i}.png", "prompt": "a photo of a red cat"}) + "\n")
    args = [
        "val-loss", "--model", str(tmp_path / "model"), "--vae", str(tmp_path / "vae"),
        "--text-encoder", str(t5), "--manifest", str(tmp_path / "val.jsonl"), "--out", str(tmp_path / "run"),
        "--pn", "0.06M", "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["samples"] == 3 and summary["batches"] == 2
    assert summary["header"]["options"]["noise_apply_layers"] == 20
    assert len(summary["loss_per_scale"]) == len(summary["schedules"][0])
    assert (tmp_path / "run/per_scale.csv").read_text().startswith("scale,loss,acc_bit,acc_token")
