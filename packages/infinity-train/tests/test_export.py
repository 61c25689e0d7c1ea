"""``infinity-train export`` adopts the consolidated tensors into a meta-device model (no second random model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


def fake_zero0_run(run_dir: Path, task: str, model: torch.nn.Module, config_json: tuple[str, str]) -> None:
    """A run directory as DeepSpeed ZeRO-0 + the trainer write it: model states (with an AdamW state beside the
    module, as DeepSpeed stores it), run_config.json, the model config, COMPLETE and latest."""
    from infinity_train.config import RunConfig, config_to_dict

    ckpt = run_dir / "checkpoints" / "step00000001"
    ckpt.mkdir(parents=True)
    module = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = {
        k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in module.items() if v.is_floating_point()
    }
    torch.save({"module": module, "optimizer": optimizer}, ckpt / "mp_rank_00_model_states.pt")
    cfg = config_to_dict(RunConfig(task=task, deepspeed={"zero_stage": 0}))  # type: ignore[arg-type]
    cfg["deepspeed"] = {"zero_stage": 0, "precision": "fp32", "extra": {}}
    (ckpt / "run_config.json").write_text(json.dumps(cfg))
    (ckpt / config_json[0]).write_text(config_json[1])
    (ckpt / "COMPLETE").write_text("step00000001\n")
    (run_dir / "checkpoints" / "latest").write_text("step00000001")


def test_export_builds_the_transformer_on_the_meta_device_and_writes_the_trained_tensors(
    tmp_path, monkeypatch
):
    import infinity_model
    from infinity_model import Infinity, InfinityConfig, load_infinity
    from infinity_train.export import export_checkpoint
    from train_scenarios import TINY_MODEL

    config = InfinityConfig.preset("layer12", **TINY_MODEL)
    torch.manual_seed(0)
    trained = Infinity(config)
    fake_zero0_run(
        tmp_path / "run", "transformer", trained, ("model_config.json", json.dumps(config.to_dict()))
    )
    built_on: list[str] = []
    real_init = Infinity.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        built_on.append(next(self.parameters()).device.type)

    monkeypatch.setattr(infinity_model.Infinity, "__init__", recording_init)
    out = export_checkpoint(tmp_path / "run", tmp_path / "out")
    assert built_on == ["meta"]  # no randomly initialised full-precision model beside the state dict
    monkeypatch.undo()
    loaded = load_infinity(out).state_dict()
    expected = trained.state_dict()
    assert set(loaded) == set(expected) and all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_export_of_a_vae_fills_the_aliased_quantizer_names_on_the_meta_model(tmp_path):
    from bsq_tokenizer import BSQVAE, load_vae
    from infinity_train.export import export_checkpoint
    from train_scenarios import tiny_vae_config

    torch.manual_seed(0)
    vae = BSQVAE(tiny_vae_config())
    fake_zero0_run(
        tmp_path / "run", "tokenizer", vae, ("vae_config.json", json.dumps(tiny_vae_config().to_dict()))
    )
    out = export_checkpoint(tmp_path / "run", tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]  # as save_infinity
    loaded = load_vae(out).state_dict()
    expected = vae.state_dict()
    assert set(loaded) == set(expected) and all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_meta_export_refuses_a_state_dict_with_a_missing_tensor(tmp_path):
    from infinity_model import Infinity, InfinityConfig
    from infinity_train.export import _adopt
    from train_scenarios import TINY_MODEL

    config = InfinityConfig.preset("layer12", **TINY_MODEL)
    state = Infinity(config).state_dict()
    state.pop("head.weight")
    with torch.device("meta"):
        model = Infinity(config)
    with pytest.raises(RuntimeError, match=r"head\.weight"):
        _adopt(model, state)
