"""Weight resolution order: explicit path -> $INFINITY_EVAL_WEIGHTS_DIR -> local HF cache; never downloads.

The cache is a fake folder laid out like huggingface_hub's: models--org--model/{refs/main, snapshots/<rev>/}."""

import hashlib
import socket

import pytest
from infinity_eval.weights import WeightFile, WeightsChecksumError, WeightsNotFoundError, resolve_weight_file

SPEC = WeightFile("model.pt", "the Hugging Face repo org/model", hf_repos=("org/model",))


@pytest.fixture
def places(tmp_path, monkeypatch):
    env, hf = tmp_path / "env", tmp_path / "hf"
    env.mkdir()
    monkeypatch.setenv("INFINITY_EVAL_WEIGHTS_DIR", str(env))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(hf))  # what HF_HUB_CACHE sets at import
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


def test_hf_cache_other_revisions_are_found_when_main_lacks_the_file(places, tmp_path):
    _, snap = places
    other = snap.parent / "def456"
    other.mkdir()
    (other / "model.pt").write_bytes(b"old revision")  # a revision downloaded by hash, not refs/main
    assert resolve_weight_file(SPEC) == other / "model.pt"
    (snap / "model.pt").write_bytes(b"main")
    assert resolve_weight_file(SPEC) == snap / "model.pt"  # refs/main wins


def test_hf_cache_lookup_never_goes_online(places, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # offline whatever the variable says
    with pytest.raises(WeightsNotFoundError, match="local Hugging Face cache of org/model"):
        resolve_weight_file(SPEC)


def test_missing_hf_cache_folder_is_not_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("INFINITY_EVAL_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "absent"))
    with pytest.raises(WeightsNotFoundError, match=r"model\.pt not found"):
        resolve_weight_file(SPEC)
