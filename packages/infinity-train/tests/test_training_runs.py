"""End-to-end DeepSpeed runs on CPU with the real teammates' modules (tiny configs, generated shapes data).

One interpreter runs the ZeRO 0/2/3, non-finite, tokenizer and first-half-of-resume scenarios (``main``), a
second one resumes; the 2-process run goes through the ``deepspeed`` launcher and the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("train_runs")


@pytest.fixture(scope="module")
def main_run(work, assets, run_scenario):
    return run_scenario("main", work, assets)


def _falls(losses: list[float]) -> bool:
    k = max(2, len(losses) // 4)
    return sum(losses[-k:]) / k < sum(losses[:k]) / k


def test_zero_0_2_3_single_process_losses_fall_and_agree(main_run, work):
    out = main_run["stages"]
    for stage in (0, 2, 3):
        assert len(out[f"zero{stage}"]) == 8
        assert _falls(out[f"zero{stage}"]), out[f"zero{stage}"]
    # periodic validation (every 4 steps) wrote val records with a finite loss
    records = [
        json.loads(line) for line in (work / "stages" / "zero2" / "metrics.jsonl").read_text().splitlines()
    ]
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in val] == [4, 8] and all(0 < r["loss"] < 1 for r in val)
    # bf16 autocast trains with fp32 parameters and stays close to the fp32 run
    assert out["bf16_param_dtype"] == "torch.float32" and len(out["bf16"]) == 3
    assert out["bf16"] == pytest.approx(out["zero2"][:3], abs=2e-2)
    # same seed, same data, fp32: the three sharding strategies compute the same training
    for a, b in zip(out["zero0"], out["zero3"], strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)


def test_cached_latents_encode_each_image_once_and_train_as_fresh_encodes(main_run):
    out = main_run["latent_cache"]
    # 15 batches of 2 from 24 images: without the cache 30 encodes, with it each image once
    assert out["encoded0"] == 30 and out["cache_size0"] == 0
    assert out["encoded1"] == 24 and out["cache_size1"] == 24
    assert out["losses1"] == pytest.approx(out["losses0"], rel=1e-4, abs=1e-5)


def test_math_attention_backend_keeps_fused_kernels_out_of_the_forward_and_trains_alike(main_run):
    out = main_run["fast_kernels"]
    assert out["attn_auto_flash_enabled"] == [True] and out["attn_math_flash_enabled"] == [False]
    assert out["attn_math"] == pytest.approx(out["attn_auto"], rel=1e-4, abs=1e-5)


def test_channels_last_tokenizer_trains_alike_keeps_nhwc_weights_and_exports(main_run):
    out = main_run["fast_kernels"]
    # the same first step (same weights and batch: only the convolution kernels differ, and a latent near 0 may
    # take the other sign bit); later steps drift apart a little, as Adam's first updates are ±lr for gradients
    # near zero, whose sign float rounding can flip
    assert out["vae_nhwc1"][0] == pytest.approx(out["vae_nhwc0"][0], rel=1e-4)
    assert out["vae_nhwc1"] == pytest.approx(out["vae_nhwc0"], rel=5e-2)
    assert out["vae_nhwc1"][-1] < 0.9 * out["vae_nhwc1"][0]
    assert out["vae_nhwc1_conv_is_nhwc"] and not out["vae_nhwc0_conv_is_nhwc"]
    assert out["vae_nhwc1_conv_trained"] and out["vae_nhwc0_conv_trained"]
    assert out["vae_nhwc1_export_equal"] and out["vae_nhwc0_export_equal"]
    assert "channels_last needs deepspeed.zero_stage = 0" in out["nhwc_zero2_error"]


def test_nonfinite_loss_is_skipped_logged_counted_and_stops_after_limit_in_a_row(main_run, work):
    out = main_run["stages"]
    assert "3 non-finite losses in a row" in out["nan_error"]
    # micro batches: ok, NaN (skipped), ok, NaN, NaN, NaN -> stop; two optimizer steps were made
    assert out["nan_skipped_total"] == 4 and out["nan_step"] == 2
    lines = (work / "stages" / "nan" / "metrics.jsonl").read_text().splitlines()
    assert sum('"split": "skip"' in line for line in lines) == 4
    # a non-finite gradient with a finite loss: ZeRO-2 (DeepSpeed) skips that update, logged and counted, and
    # training goes on; ZeRO-0 stops with a clear error before the poisoned update. Parameters stay finite.
    assert out["nangrad2_error"] == "" and out["nangrad2_step"] == 4 and out["nangrad2_skipped"] == 1
    assert "non-finite gradients" in out["nangrad0_error"] and out["nangrad0_step"] == 1
    assert out["nangrad2_params_finite"] and out["nangrad0_params_finite"]


def test_export_of_zero3_checkpoint_loads_in_infinity_model_with_the_same_logits(main_run, work):
    from bsq_tokenizer.schedules import custom_schedule
    from infinity_model import TextCondition, load_infinity
    from infinity_train.export import export_checkpoint

    assert main_run["stages"]["zero3"]
    ref = torch.load(work / "stages" / "zero3_logits.pt", weights_only=True)
    out = export_checkpoint(work / "stages" / "zero3", work / "exported")
    model = load_infinity(out).eval()
    schedule = custom_schedule([(1, 1), (2, 2), (4, 4)])
    with torch.no_grad():
        logits = model(TextCondition(ref["features"], ref["lengths"]), ref["inputs"], schedule)
    torch.testing.assert_close(logits, ref["logits"], rtol=0, atol=1e-5)

    # --ema exports the EMA weights (and the buffers of the model)
    from bsq_tokenizer.safetensors_io import load_safetensors

    ema = load_safetensors(work / "stages" / "zero3" / "checkpoints" / "step00000008" / "ema.safetensors")
    ema_model = load_infinity(
        export_checkpoint(work / "stages" / "zero3", work / "exported_ema", use_ema=True)
    )
    state = ema_model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ema.items())
    assert not torch.equal(state["head.weight"], model.state_dict()["head.weight"])


def test_run_stopped_after_k_steps_and_resumed_reproduces_the_uninterrupted_losses(
    main_run, work, assets, run_scenario
):
    a = main_run["resume_a"]
    b = run_scenario("resume_b", work / "resume", assets)
    assert a["part"] == a["full"][:3]
    assert b["start"] == 3
    # The first resumed step is bitwise equal. Model, optimizer, EMA, RNG and loader position are restored; a
    # wrong batch, RNG stream or optimizer state moves these losses in the third digit. Later steps may still
    # differ in the last bits: with some data, the new process rounds one update differently (seen after the
    # shapes world changed in fb08d1a; the cause is not found yet).
    assert b["resumed"][0] == a["full"][3]
    assert b["resumed"] == pytest.approx(a["full"][3:], rel=1e-6, abs=0)
    assert "different model" in b["wrong_size_error"]


def test_tokenizer_training_reduces_reconstruction_error_resumes_and_exports_raw_and_ema(main_run):
    out = main_run["tokenizer"]
    rec = out["rec_l1"]
    assert sum(rec[-3:]) / 3 < 0.8 * sum(rec[:3]) / 3, rec
    assert out["val_after"]["rec_l1"] < out["val_before"]["rec_l1"]
    # the discriminator switches on at disc_start = 8
    assert all(d is None for d in out["disc_loss"][:8]) and all(d is not None for d in out["disc_loss"][8:])
    # resume restores the VAE engine (and the discriminator engine, loaded from <tag>/extra/disc) and LeCam EMAs
    assert out["resumed_step"] == 16 and out["resumed_equal"] and all(v != 0.0 for v in out["lecam"])
    assert out["export_equal"]  # infinity-train export -> bsq_tokenizer.load_vae gives the trained weights
    # export --ema (the shapes recipe's tokenizer): the EMA's parameters with the trained buffers
    assert out["ema_export_keys"] and out["ema_export_is_shadow"] and out["ema_export_differs"]
    assert out["ema_export_buffers_equal"]


def _cli_env() -> dict[str, str]:
    from train_procs import child_env

    return child_env()


def test_two_process_gloo_run_through_torchrun_and_the_cli_trains(tmp_path, assets):
    from train_procs import run_group
    from train_scenarios import transformer_config

    cfg = transformer_config(tmp_path / "run", assets, max_steps=6, checkpoint={"save_every": 3})
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "infinity_train.cli", "transformer", "--config", str(path)]
    code, output = run_group(cmd, _cli_env(), tmp_path / "torchrun.log")
    assert code == 0, output[-6000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    assert len(losses) == 6 and _falls(losses), losses
    ckpt = tmp_path / "run" / "checkpoints"
    assert (ckpt / "latest").read_text() == "step00000006"
    for name in ("trainer_state_rank0.pt", "trainer_state_rank1.pt", "run_config.json", "COMPLETE"):
        assert (ckpt / "step00000006" / name).is_file()


def test_one_rank_raising_makes_every_rank_exit_with_that_error(tmp_path, assets):
    """Rank 1 raises inside its third step while rank 0 goes on into the step's collectives (2 gloo ranks,
    torchrun). The failing rank must not wait at a barrier for ranks that never come (that held the job until
    the 30-minute collective timeout); the run ends with the error shown and no process left behind."""
    from train_procs import descendants, process_group
    from train_scenarios import transformer_config

    cfg = transformer_config(tmp_path / "run", assets, max_steps=20)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(Path(__file__).with_name("rank_fault.py")), "1", "2", "transformer", "--config", str(path)]
    log = tmp_path / "fault.log"
    with process_group(cmd, _cli_env(), log) as proc:
        try:
            # a hang guard only: the run fails after two steps, a hung one would sit here for 30 minutes
            code = proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            code = None
        left = descendants(proc.pid)
    output = log.read_text(errors="replace")
    assert code is not None, "the ranks hung after one of them raised:\n" + output[-4000:]
    assert code != 0 and left == []
    assert "rank 1 of 2 failed: InjectedFailure: injected failure on rank 1 at step 2" in output, output[
        -4000:
    ]
    assert "InjectedFailure: injected failure on rank 1 at step 2" in output.split("rank 1 of 2 failed")[1]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records if r["split"] == "train") <= 3


def test_two_process_deepspeed_launcher_run_killed_resumes_and_exports_for_infinity_generate(
    tmp_path, assets
):
    """The acceptance path: deepspeed launcher (2 CPU ranks, gloo) → kill -9 mid-run → rerun resumes from the
    last complete checkpoint and reproduces the steps the killed run had logged → export → `infinity generate`.

    Nothing here is timed: the first run is killed once its checkpoint of step 6 is published (an event), and
    every run is bounded by its step count; every process tree is killed when its block ends, pass or fail."""
    from train_procs import kill_tree, process_group, run_group
    from train_scenarios import transformer_config

    run_dir = tmp_path / "run"
    # far more steps than the kill needs; the test never waits for them (the bound if the kill misses)
    cfg = transformer_config(run_dir, assets, max_steps=60, checkpoint={"save_every": 3, "keep_last": 2})
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg))
    env = _cli_env()
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port"]
    launcher += [str(29500 + os.getpid() % 1000), "--module", "infinity_train.cli", "transformer", "--config"]
    metrics = run_dir / "metrics.jsonl"
    latest_file = run_dir / "checkpoints" / "latest"

    def train_records() -> list[dict]:
        if not metrics.is_file():
            return []
        lines = metrics.read_text().splitlines()
        return [json.loads(x) for x in lines if x.endswith("}") and '"split": "train"' in x]

    def latest_step() -> int:
        text = latest_file.read_text() if latest_file.is_file() else ""
        return int(text.removeprefix("step")) if text.startswith("step") else 0

    log = tmp_path / "first.log"
    with process_group([*launcher, str(path)], env, log) as first:
        while first.poll() is None and latest_step() < 6:
            time.sleep(0.2)  # polling an event (the published checkpoint), not a deadline
        finished = first.poll() is not None
        kill_tree(first)  # kill -9: the launcher and both ranks, mid-run
    assert not finished, "the first run ended before its step-6 checkpoint:\n" + log.read_text()[-4000:]
    killed = {r["step"]: r["loss"] for r in train_records()}
    latest = latest_step()
    assert latest >= 6 and latest % 3 == 0 and latest < 60

    cfg["max_steps"] = latest + 3
    path.write_text(json.dumps(cfg))
    code, output = run_group([*launcher, str(path)], env, tmp_path / "second.log")
    assert code == 0, output[-6000:]
    records = train_records()
    resumed = {r["step"]: r["loss"] for r in records[len(killed) :]}
    assert sorted(resumed) == [latest + 1, latest + 2, latest + 3]
    for step, loss in resumed.items():
        if step in killed:
            assert loss == killed[step]  # the killed run had logged it: the resumed run reproduces it exactly
    losses = [killed[s] for s in sorted(killed) if s <= latest] + [resumed[s] for s in sorted(resumed)]
    assert _falls(losses), losses

    exported = tmp_path / "exported"
    cli = [sys.executable, "-m", "infinity_train.cli", "export", str(run_dir), str(exported)]
    code, output = run_group(cli, env, tmp_path / "export.log")
    assert code == 0, output[-4000:]
    image = tmp_path / "out.png"
    gen = [sys.executable, "-m", "infinity_model.cli", "generate", "a photo of a red circle"]
    gen += ["--model", str(exported), "--vae", assets["vae"], "--text-encoder", assets["t5"]]
    gen += ["--scales", "1x1,2x2,4x4", "--device", "cpu", "-o", str(image)]
    code, output = run_group(gen, env, tmp_path / "generate.log")
    assert code == 0, output[-4000:]
    from PIL import Image

    assert Image.open(image).size == (64, 64)
