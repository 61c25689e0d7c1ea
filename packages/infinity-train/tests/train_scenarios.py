"""Training scenarios run in a fresh interpreter by the tests: ``python train_scenarios.py NAME WORKDIR ASSETS_JSON``.

Each writes ``WORKDIR/NAME.json`` with what the test asserts on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TINY_MODEL = {
    "depth": 2,
    "embed_dim": 64,
    "num_heads": 2,
    "text_channels": 32,
    "text_maxlen": 64,
    "pool_heads": 2,
    "block_chunks": 1,
    "d_vae": 32,
}
SCALES = [[1, 1], [2, 2], [4, 4]]  # 64x64 images, 4x4 latent


def tiny_vae_config():
    from bsq_tokenizer import VAEConfig

    return VAEConfig.preset("d32").replace(ch=32, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1)


def transformer_config(run_dir: Path, assets: dict[str, str], **sections: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "task": "transformer",
        "run_dir": str(run_dir),
        "seed": 0,
        "max_steps": 6,
        "data": {"shards": assets["shards"], "batch_size": 2, "scales": SCALES, "short_caption_prob": 0.0},
        "optim": {"lr": 3e-3, "grad_clip": 5.0, "max_iters": 100},
        "deepspeed": {"zero_stage": 2, "precision": "fp32"},
        "checkpoint": {"save_every": 0, "keep_last": 2},
        "logging": {"log_every": 1, "tensorboard": False},
        "transformer_model": {
            "preset": "layer12",
            "overrides": TINY_MODEL,
            "vae_path": assets["vae"],
            "text_encoder_path": assets["t5"],
        },
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            cfg[name] = {**cfg.get(name, {}), **values}
        else:
            cfg[name] = values
    return cfg


def tokenizer_config(run_dir: Path, assets: dict[str, str], **sections: dict[str, Any]) -> dict[str, Any]:
    vae = tiny_vae_config()
    cfg: dict[str, Any] = {
        "task": "tokenizer",
        "run_dir": str(run_dir),
        "seed": 0,
        "max_steps": 16,
        "data": {"shards": assets["shards"], "batch_size": 4, "scales": SCALES},
        "optim": {"lr": 2e-3, "betas": [0.9, 0.95], "grad_clip": 1.0, "weight_decay": 0.0, "max_iters": 100},
        "deepspeed": {"zero_stage": 2, "precision": "fp32"},
        "checkpoint": {"save_every": 0},
        "logging": {"log_every": 1, "tensorboard": False},
        "tokenizer_model": {
            "preset": "d32",
            "overrides": {"ch": vae.ch, "ch_mult": list(vae.ch_mult), "num_res_blocks": vae.num_res_blocks},
            "disc_channels": 16,
            "disc_layers": 2,
        },
        "tokenizer_loss": {"disc_start": 8, "perceptual_weight": 0.5},
    }
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values} if isinstance(values, dict) else values
    return cfg


def _trainer(cfg_dict: dict[str, Any], dist):
    from infinity_train.config import config_from_dict
    from infinity_train.data import build_loader

    cfg = config_from_dict(cfg_dict)
    loader = build_loader(cfg, cfg.data.shards, dist.rank, dist.world_size)
    val = (
        build_loader(cfg, cfg.data.val_shards, dist.rank, dist.world_size, seed_offset=1, validation=True)
        if cfg.data.val_shards
        else None
    )
    if cfg.task == "transformer":
        from infinity_train.transformer_trainer import TransformerTrainer

        return TransformerTrainer(cfg, dist, loader, val)
    from infinity_train.tokenizer_trainer import TokenizerTrainer

    return TokenizerTrainer(cfg, dist, loader, val)


def _losses(history: list[dict[str, Any]], key: str = "loss") -> list[float]:
    return [h[key] for h in history]


def scenario_stages(work: Path, assets: dict[str, str]) -> dict[str, Any]:
    """ZeRO 0/2/3 in one process: each trains 8 steps; ZeRO-3 also dumps logits of a fixed input for export."""
    import torch
    from infinity_train.distributed import init_distributed

    dist = init_distributed()
    out: dict[str, Any] = {}
    for stage in (0, 2, 3):
        cfg = transformer_config(
            work / f"zero{stage}", assets, max_steps=8, deepspeed={"zero_stage": stage, "precision": "fp32"}
        )
        if stage == 3:  # EMA under ZeRO-3 (parameters gathered one at a time)
            cfg["transformer"] = {"ema_decay": 0.9}
        if stage == 2:  # periodic validation loss on held-out shards
            cfg["data"]["val_shards"] = assets["val_shards"]
            cfg["logging"]["val_every"] = 4
        trainer = _trainer(cfg, dist)
        out[f"zero{stage}"] = _losses(trainer.run())
        if stage == 3:
            trainer.save()
            from bsq_tokenizer.schedules import custom_schedule

            schedule = custom_schedule([tuple(s) for s in SCALES])
            text = trainer.text_encoder.encode(["a red circle", "two blue squares"])
            g = torch.Generator().manual_seed(5)
            inputs = torch.randn(2, schedule.seq_len - 1, 32, generator=g) * 0.2
            trainer.engine.eval()
            with torch.no_grad():
                logits = trainer.engine(text, inputs, schedule)
            torch.save(
                {"features": text.features, "lengths": text.lengths, "inputs": inputs, "logits": logits},
                work / "zero3_logits.pt",
            )
        trainer.close()
    # bf16 = fp32 parameters + bf16 autocast (the reference recipe), also on CPU
    cfg = transformer_config(
        work / "bf16", assets, max_steps=3, deepspeed={"zero_stage": 2, "precision": "bf16"}
    )
    trainer = _trainer(cfg, dist)
    out["bf16"] = _losses(trainer.run())
    out["bf16_param_dtype"] = str(next(trainer.engine.module.parameters()).dtype)
    trainer.close()
    # non-finite gradients with a finite loss: ZeRO-2 skips the update (logged), ZeRO-0 stops before updating
    import math

    from infinity_train.loop import NonFiniteGradientError

    for stage in (2, 0):
        cfg = transformer_config(
            work / f"nangrad{stage}", assets, max_steps=4, deepspeed={"zero_stage": stage}
        )
        trainer = _trainer(cfg, dist)
        head = trainer.engine.module.head.weight
        seen = {"n": 0}

        def poison(grad, seen=seen):
            seen["n"] += 1
            return grad * float("nan") if seen["n"] == 2 else grad

        head.register_hook(poison)
        try:
            trainer.run()
            out[f"nangrad{stage}_error"] = ""
        except NonFiniteGradientError as exc:
            out[f"nangrad{stage}_error"] = str(exc)
        out[f"nangrad{stage}_step"] = trainer.step
        out[f"nangrad{stage}_skipped"] = trainer.skipped_total
        out[f"nangrad{stage}_params_finite"] = all(
            math.isfinite(float(p.detach().double().sum())) for p in trainer.engine.module.parameters()
        )
        trainer.close()
    # non-finite losses: one skipped micro batch, then a stop after 3 in a row
    from infinity_train.loop import NonFiniteLossError

    cfg = transformer_config(
        work / "nan",
        assets,
        max_steps=10,
        deepspeed={"zero_stage": 0},
        transformer={"max_nonfinite_in_a_row": 3},
    )
    trainer = _trainer(cfg, dist)
    real = trainer.forward_loss
    calls = {"n": 0}

    def flaky(batch, generator, train, **kwargs):
        res, tokens = real(batch, generator, train, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2 or calls["n"] >= 4:
            object.__setattr__(res, "loss", res.loss * float("nan"))
        return res, tokens

    trainer.forward_loss = flaky
    try:
        trainer.run()
        out["nan_error"] = ""
    except NonFiniteLossError as exc:
        out["nan_error"] = str(exc)
    out["nan_skipped_total"] = trainer.skipped_total
    out["nan_step"] = trainer.step
    trainer.close()
    return out


# The interrupted run, its resumption and the uninterrupted reference must share these settings exactly.
_RESUME_COMMON: dict[str, Any] = {
    "optim": {"schedule": "cos", "warmup_iters": 2, "max_iters": 6, "end_factor": 0.1, "grad_accum": 2},
    "transformer": {"ema_decay": 0.9, "cond_drop_rate": 0.5},
    "checkpoint": {"save_every": 3},
}


def scenario_resume_a(work: Path, assets: dict[str, str]) -> dict[str, Any]:
    """Uninterrupted 6 steps, and an 'interrupted' run that stops after 3 steps (checkpoint at 3)."""
    from infinity_train.distributed import init_distributed

    dist = init_distributed()
    full = _trainer(transformer_config(work / "full", assets, max_steps=6, **_RESUME_COMMON), dist)
    losses_full = _losses(full.run())
    full.close()
    part = _trainer(transformer_config(work / "part", assets, max_steps=3, **_RESUME_COMMON), dist)
    losses_part = _losses(part.run())
    part.close()
    return {"full": losses_full, "part": losses_part}


def scenario_resume_b(work: Path, assets: dict[str, str]) -> dict[str, Any]:
    """A new process resumes the interrupted run (``work/part`` of resume_a) to 6 steps."""
    from infinity_train.distributed import init_distributed

    dist = init_distributed()
    trainer = _trainer(transformer_config(work / "part", assets, max_steps=6, **_RESUME_COMMON), dist)
    start = trainer.step
    losses = _losses(trainer.run())
    trainer.close()
    # a checkpoint of another model size must be refused with a clear error
    other = transformer_config(work / "part", assets, max_steps=7, **_RESUME_COMMON)
    other["transformer_model"]["overrides"] = {**TINY_MODEL, "embed_dim": 128}
    try:
        _trainer(other, dist)
        wrong = ""
    except ValueError as exc:
        wrong = str(exc)
    return {"start": start, "resumed": losses, "wrong_size_error": wrong}


def scenario_tokenizer(work: Path, assets: dict[str, str]) -> dict[str, Any]:
    import torch
    from bsq_tokenizer import load_vae
    from infinity_train.distributed import init_distributed
    from infinity_train.export import export_checkpoint

    dist = init_distributed()
    cfg = tokenizer_config(
        work / "vae", assets, data={"val_shards": assets["val_shards"]}, transformer={"ema_decay": 0.9}
    )
    trainer = _trainer(cfg, dist)
    before = trainer.run_validation()
    history = trainer.run()
    after = trainer.run_validation()
    trainer.save()
    trained = {k: v.detach().clone() for k, v in trainer.vae_engine.module.state_dict().items()}
    shadow = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
    trainer.close()
    # resume: both engines (VAE + discriminator) and the LeCam state come back
    resumed = _trainer(cfg, dist)
    resumed_equal = all(torch.equal(trained[k], v) for k, v in resumed.vae_engine.module.state_dict().items())
    lecam = [resumed.lecam_real, resumed.lecam_fake]
    resumed.close()
    exported = load_vae(export_checkpoint(work / "vae", work / "vae_export"))
    export_equal = all(torch.equal(trained[k], v) for k, v in exported.state_dict().items())
    # --ema: the EMA's parameters, the trained buffers (the quantizer's int64 mask among them)
    ema = load_vae(export_checkpoint(work / "vae", work / "vae_export_ema", use_ema=True))
    ema_state = ema.state_dict()
    buffers = {k for k, _ in ema.named_buffers()} & set(ema_state)
    buffers_equal = bool(buffers) and all(torch.equal(trained[k], ema_state[k]) for k in buffers)
    return {
        "ema_export_is_shadow": all(torch.equal(ema_state[k], v) for k, v in shadow.items()),
        "ema_export_differs": any(not torch.equal(trained[k], v) for k, v in shadow.items()),
        "ema_export_buffers_equal": buffers_equal,
        "ema_export_keys": set(ema_state) == set(trained),
        "rec_l1": _losses(history, "rec_l1"),
        "disc_loss": [h.get("disc_loss") for h in history],
        "val_before": before,
        "val_after": after,
        "resumed_step": resumed.step,
        "resumed_equal": resumed_equal,
        "lecam": lecam,
        "export_equal": export_equal,
    }


def scenario_latent_cache(work: Path, assets: dict[str, str]) -> dict[str, Any]:
    """15 steps (24 images in batches of 2: past one epoch) with and without ``data.cache_latents``, counting
    the images that go through the VAE encoder."""
    from infinity_train.distributed import init_distributed

    dist = init_distributed()
    out: dict[str, Any] = {}
    for cached in (False, True):
        cfg = transformer_config(
            work / f"cache{int(cached)}",
            assets,
            max_steps=15,
            data={"cache_latents": cached},
            deepspeed={"zero_stage": 0, "precision": "fp32"},
        )
        trainer = _trainer(cfg, dist)
        encode, encoded = trainer.vae.encode, []

        def counting(images, encode=encode, encoded=encoded):
            encoded.append(int(images.shape[0]))
            return encode(images)

        trainer.vae.encode = counting
        out[f"losses{int(cached)}"] = _losses(trainer.run())
        out[f"encoded{int(cached)}"] = sum(encoded)
        out[f"cache_size{int(cached)}"] = len(trainer._latent_cache)
        trainer.close()
    return out


def scenario_fast_kernels(work: Path, assets: dict[str, str]) -> dict[str, Any]:
    """The CPU speed options against the default path, fp32 ZeRO-0: ``transformer.attention_backend = "math"``
    (which SDPA kernels the forward may use, and the losses) and ``tokenizer_model.channels_last`` (the losses,
    the parameters' strides after training, the export)."""
    import torch
    from bsq_tokenizer import load_vae
    from infinity_train.distributed import init_distributed
    from infinity_train.export import export_checkpoint

    dist = init_distributed()
    out: dict[str, Any] = {}
    stage0 = {"zero_stage": 0, "precision": "fp32"}
    for backend in ("auto", "math"):
        cfg = transformer_config(
            work / f"attn_{backend}",
            assets,
            max_steps=4,
            deepspeed=stage0,
            transformer={"attention_backend": backend},
        )
        trainer = _trainer(cfg, dist)
        module, flash_enabled = trainer.engine.module, []
        forward = module.forward

        def recording(*args, forward=forward, flash_enabled=flash_enabled, **kwargs):
            flash_enabled.append(torch.backends.cuda.flash_sdp_enabled())
            return forward(*args, **kwargs)

        module.forward = recording
        out[f"attn_{backend}"] = _losses(trainer.run())
        out[f"attn_{backend}_flash_enabled"] = sorted(set(flash_enabled))
        trainer.close()
    for nhwc in (False, True):
        cfg = tokenizer_config(
            work / f"vae_nhwc{int(nhwc)}",
            assets,
            max_steps=6,
            deepspeed=stage0,
            tokenizer_model={"channels_last": nhwc},
        )
        trainer = _trainer(cfg, dist)
        conv = trainer.vae_engine.module.encoder.conv_in.conv.weight
        initial = conv.detach().clone()
        out[f"vae_nhwc{int(nhwc)}"] = _losses(trainer.run(), "rec_l1")
        trainer.save()
        trained = {k: v.detach().clone() for k, v in trainer.vae_engine.module.state_dict().items()}
        out[f"vae_nhwc{int(nhwc)}_conv_is_nhwc"] = conv.is_contiguous(
            memory_format=torch.channels_last
        ) and not (conv.is_contiguous())
        out[f"vae_nhwc{int(nhwc)}_conv_trained"] = not torch.equal(conv.detach(), initial)
        trainer.close()
        exported = load_vae(
            export_checkpoint(work / f"vae_nhwc{int(nhwc)}", work / f"vae_nhwc{int(nhwc)}_export")
        )
        out[f"vae_nhwc{int(nhwc)}_export_equal"] = all(
            torch.equal(trained[k], v) for k, v in exported.state_dict().items()
        )
    try:
        _trainer(
            tokenizer_config(work / "vae_nhwc_zero2", assets, tokenizer_model={"channels_last": True}), dist
        )
        out["nhwc_zero2_error"] = ""
    except ValueError as exc:
        out["nhwc_zero2_error"] = str(exc)
    return out


def scenario_main(work: Path, assets: dict[str, str]) -> dict[str, Any]:
    """Everything that can share one interpreter (imports and process-group setup are the slow part)."""
    return {
        "stages": scenario_stages(work / "stages", assets),
        "resume_a": scenario_resume_a(work / "resume", assets),
        "tokenizer": scenario_tokenizer(work / "tokenizer", assets),
        "latent_cache": scenario_latent_cache(work / "latent_cache", assets),
        "fast_kernels": scenario_fast_kernels(work / "fast_kernels", assets),
    }


def main() -> None:
    name, work, assets = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    from infinity_train.distributed import shutdown_distributed

    try:
        result = globals()[f"scenario_{name}"](work, assets)
    finally:
        shutdown_distributed()
    (work / f"{name}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
