"""Typed run config: strict parsing, round trip, clear errors."""

import json
import re

import pytest
from infinity_train.config import ConfigError, RunConfig, config_from_dict, config_to_dict, load_run_config


def test_toml_round_trips_through_json(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'task = "transformer"\nrun_dir = "x"\nmax_steps = 5\n'
        "[optim]\nlr = 1e-3\nbetas = [0.9, 0.95]\n"
        '[deepspeed]\nzero_stage = 3\nprecision = "fp32"\n[deepspeed.extra]\nzero_optimization = {reduce_bucket_size = 1000}\n'
        "[transformer.bsc]\nnoise_apply_strength = 0.2\n"
    )
    cfg = load_run_config(toml)
    assert cfg.optim.betas == (0.9, 0.95) and cfg.deepspeed.zero_stage == 3
    assert cfg.transformer.bsc.noise_apply_strength == 0.2
    js = tmp_path / "run.json"
    js.write_text(json.dumps(config_to_dict(cfg)))
    assert load_run_config(js) == cfg


def test_unknown_key_error_names_the_dotted_key_and_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[optim]\nlearning_rate = 1.0\n")
    with pytest.raises(ConfigError, match=r"bad\.toml.*'optim\.learning_rate'"):
        load_run_config(path)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"max_steps": "10"}, "max_steps"),
        ({"max_steps": 1.5}, "max_steps"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"optim": {"betas": [0.9]}}, "optim.betas"),
        ({"deepspeed": {"zero_stage": 4}}, "deepspeed.zero_stage"),
        ({"deepspeed": {"precision": "fp8"}}, "deepspeed.precision"),
        ({"transformer": {"reweight_loss_by_scale": 1}}, "transformer.reweight_loss_by_scale"),
        ({"data": 3}, "data"),
    ],
)
def test_wrong_type_error_names_the_key(data, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        config_from_dict(data, "cfg.toml")


def test_defaults_are_the_reference_recipe():
    cfg = RunConfig()
    assert cfg.optim.betas == (0.9, 0.97) and cfg.optim.grad_clip == 5.0 and cfg.optim.weight_decay == 0.005
    assert cfg.transformer.cond_drop_rate == 0.1
    assert (cfg.transformer.bsc.noise_apply_layers, cfg.transformer.bsc.noise_apply_strength) == (13, 0.3)


def test_cli_style_overrides_are_type_checked(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("max_steps = 3\n")
    assert load_run_config(path, {"optim.lr": 0.5}).optim.lr == 0.5
    with pytest.raises(ConfigError, match=r"'optim\.lr'"):
        load_run_config(path, {"optim.lr": "x"})


# --------------------------------------------------------------------------- errors before DeepSpeed starts
def _tiny_assets(tmp_path):
    """A shards folder (only its existence is checked here) and a VAE file stand-in."""
    (tmp_path / "shards").mkdir()
    (tmp_path / "vae.safetensors").write_bytes(b"")
    return {"shards": str(tmp_path / "shards"), "vae": str(tmp_path / "vae.safetensors")}


def _write_run(tmp_path, assets, **changes):
    from train_scenarios import transformer_config

    cfg = transformer_config(tmp_path / "run", {**assets, "t5": str(tmp_path / "t5")})
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize(
    ("changes", "key", "fragment"),
    [
        ({"data__shards": None}, "data.shards", "is empty"),
        ({"data__shards": "missing_folder"}, "data.shards", "does not exist"),
        ({"data__val_shards": "missing_val"}, "data.val_shards", "does not exist"),
        (
            {"transformer_model__vae_path": "missing.safetensors"},
            "transformer_model.vae_path",
            "does not exist",
        ),
        ({"transformer_model__vae_path": None}, "transformer_model.vae_path", "is empty"),
        ({"transformer_model__overrides": {"depht": 2}}, "transformer_model.overrides.depht", "not a"),
        ({"transformer_model__preset": "layer999"}, "transformer_model.preset", "unknown"),
        ({"data__batch_size": 0}, "data.batch_size", ">= 1"),
        ({"checkpoint__save_every": -1}, "checkpoint.save_every", ">= 0"),
        ({"optim__grad_accum": 0}, "optim.grad_accum", ">= 1"),
        ({"transformer__ema_decay": 1.0}, "transformer.ema_decay", "[0, 1)"),
    ],
)
def test_config_errors_stop_the_cli_before_training_starts_naming_file_and_key(
    tmp_path, monkeypatch, capsys, changes, key, fragment
):
    import infinity_train.runner
    from infinity_train.cli import main

    def never(config):
        raise AssertionError("training (process group, DeepSpeed) started despite a bad config")

    monkeypatch.setattr(infinity_train.runner, "train", never)
    path = _write_run(tmp_path, _tiny_assets(tmp_path), **changes)
    assert main(["transformer", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"'{key}'" in err and fragment in err, err


def test_tokenizer_override_error_and_object_store_shards_are_accepted_as_given(
    tmp_path, monkeypatch, capsys
):
    import infinity_train.runner
    from infinity_train.cli import main
    from train_scenarios import tokenizer_config

    started = []
    monkeypatch.setattr(infinity_train.runner, "train", lambda config: started.append(config))
    cfg = tokenizer_config(tmp_path / "run", {"shards": "s3://bucket/shards"})
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(cfg))
    assert main(["tokenizer", "--config", str(path)]) == 0  # a URL is not checked for existence
    assert started and started[0].data.shards == "s3://bucket/shards"
    cfg["tokenizer_model"]["overrides"]["chanels"] = 3
    path.write_text(json.dumps(cfg))
    assert main(["tokenizer", "--config", str(path)]) == 2
    assert "'tokenizer_model.overrides.chanels'" in capsys.readouterr().err


def test_saved_config_of_an_old_run_is_read_without_range_checks():
    data = {"checkpoint": {"save_every": -1}}
    with pytest.raises(ConfigError, match=r"'checkpoint\.save_every'"):
        config_from_dict(data, "cfg.toml")
    assert config_from_dict(data, "cfg.toml", check_ranges=False).checkpoint.save_every == -1


def test_toml_config_loads_with_the_tomli_backport_when_tomllib_is_missing(tmp_path, monkeypatch, capsys):
    """Python 3.10 has no ``tomllib``: the package falls back to ``tomli`` (simulated here on a newer Python)."""
    import sys

    import infinity_train.runner
    import tomllib
    from infinity_train.cli import main

    monkeypatch.setitem(sys.modules, "tomllib", None)  # `import tomllib` now raises ModuleNotFoundError
    monkeypatch.setitem(sys.modules, "tomli", tomllib)  # the backport has the same API
    with pytest.raises(ModuleNotFoundError):
        import tomllib as _  # noqa: F401
    path = tmp_path / "run.toml"
    path.write_text("max_steps = 3\n[optim]\nlr = 0.5\n")
    assert load_run_config(path).optim.lr == 0.5
    # the CLI reads the raw file again to tell an explicit `task` from the default one
    started = []
    monkeypatch.setattr(infinity_train.runner, "train", lambda config: started.append(config))
    monkeypatch.setattr("infinity_train.preflight.check_run_config", lambda config, source: None)
    assert main(["tokenizer", "--config", str(path)]) == 0, capsys.readouterr().err
    assert started[0].task == "tokenizer"
