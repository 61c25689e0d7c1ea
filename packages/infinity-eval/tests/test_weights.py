"""Weight resolution order: explicit path -> $INFINITY_EVAL_WEIGHTS_DIR -> local HF cache; never downloads."""

import hashlib

import pytest
from infinity_eval.weights import WeightFile, WeightsChecksumError, WeightsNotFoundError, resolve_weight_file

SPEC = WeightFile("model.pt", "the Hugging Face repo org/model", hf_repos=("org/model",))


@pytest.fixture
def places(tmp_path, monkeypatch):
    env, hf = tmp_path / "env", tmp_path / "hf"
    env.mkdir()
    monkeypatch.setenv("INFINITY_EVAL_WEIGHTS_DIR", str(env))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    snap = hf / "models--org--model" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (hf / "models--org--model" / "refs").mkdir()
    (hf / "models--org--model" / "refs" / "main").write_text("abc123")
    return env, snap


def test_explicit_path_beats_env_folder_beats_hf_cache(tmp_path, places):
    env, snap = places
    (snap / "model.pt").write_bytes(b"hf")
    assert resolve_weight_file(SPEC) == snap / "model.pt"
    (env / "model.pt").write_bytes(b"env")
    assert resolve_weight_file(SPEC) == env / "model.pt"
    explicit = tmp_path / "mine.pt"
    explicit.write_bytes(b"mine")
    assert resolve_weight_file(SPEC, explicit) == explicit
    assert resolve_weight_file(SPEC, env) == env / "model.pt"  # a folder holding the official name


def test_missing_file_error_names_file_places_and_source(places):
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weight_file(SPEC)
    msg = str(err.value)
    assert "model.pt not found" in msg and "org/model" in msg and "INFINITY_EVAL_WEIGHTS_DIR" in msg
    with pytest.raises(WeightsNotFoundError, match="explicit path"):
        resolve_weight_file(SPEC, "/nonexistent/model.pt")


def test_known_checksum_is_verified(places):
    env, _ = places
    (env / "model.pt").write_bytes(b"payload")
    good = WeightFile("model.pt", "src", sha256=hashlib.sha256(b"payload").hexdigest())
    assert resolve_weight_file(good) == env / "model.pt"
    with pytest.raises(WeightsChecksumError, match="re-download"):
        resolve_weight_file(WeightFile("model.pt", "src", sha256="0" * 64))
