"""Checkpoint I/O: official layout loads strictly, mismatches are named, pickles are refused, safetensors interoperate."""

from __future__ import annotations

import json
import os

import pytest
import safetensors.torch as st
import torch
from bsq_tokenizer import (
    BSQVAE,
    CheckpointError,
    VAEConfig,
    load_official_vae,
    load_vae,
    read_state_dict,
    save_vae,
)
from bsq_tokenizer.io import check_state_dict, detect_preset, infer_vae_config
from bsq_tokenizer.safetensors_io import load_safetensors, load_safetensors_metadata, save_safetensors

TINY = VAEConfig(codebook_dim=8, ch=32, ch_mult=(1, 1, 2), patch_size=4)


@pytest.fixture
def tiny_vae() -> BSQVAE:
    torch.manual_seed(0)
    return BSQVAE(TINY).eval()


def _image() -> torch.Tensor:
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _assert_same_weights(a: BSQVAE, b: BSQVAE) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_official_layout_checkpoint_loads_strictly_and_reproduces_outputs(tiny_vae, tmp_path):
    path = tmp_path / "infinity_vae_tiny.pth"
    torch.save({"vae": tiny_vae.state_dict()}, path)
    loaded = load_official_vae(path, TINY)
    _assert_same_weights(tiny_vae, loaded)
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    scales = [(1, 1), (2, 2), (4, 4)]
    with torch.no_grad():
        ours = loaded.decode(loaded.encode_to_bits(_image(), scales).codes)
        assert torch.equal(ours, tiny_vae.decode(tiny_vae.encode_to_bits(_image(), scales).codes))
    # The config can also be inferred from the shapes.
    assert load_official_vae(path).config == TINY


def test_ema_weights_are_selected_explicitly(tiny_vae, tmp_path):
    ema = {k: (v + 1 if v.is_floating_point() else v) for k, v in tiny_vae.state_dict().items()}
    path = tmp_path / "with_ema.pth"
    torch.save({"vae": tiny_vae.state_dict(), "ema": ema}, path)
    assert torch.equal(
        load_official_vae(path, TINY, use_ema=True).encoder.conv_in.conv.bias,
        ema["encoder.conv_in.conv.bias"],
    )
    torch.save({"vae": tiny_vae.state_dict()}, path)
    with pytest.raises(CheckpointError, match="no 'ema' weights"):
        load_official_vae(path, TINY, use_ema=True)


def test_altered_checkpoint_fails_naming_the_keys(tiny_vae, tmp_path):
    sd = dict(tiny_vae.state_dict())
    sd["encoder.conv_in.weight"] = sd.pop("encoder.conv_in.conv.weight")
    sd["decoder.conv_out.conv.bias"] = torch.zeros(5)
    sd["extra.buffer"] = torch.zeros(1)
    path = tmp_path / "altered.pth"
    torch.save({"vae": sd}, path)
    with pytest.raises(CheckpointError) as info:
        load_official_vae(path, TINY)
    msg = str(info.value)
    assert str(path) in msg
    assert "missing keys (1): encoder.conv_in.conv.weight" in msg
    assert "unexpected keys (2):" in msg and "encoder.conv_in.weight" in msg and "extra.buffer" in msg
    assert "decoder.conv_out.conv.bias (5,) vs expected (3,)" in msg


def test_checkpoint_of_another_variant_names_the_right_preset():
    with torch.device("meta"):
        d16 = BSQVAE(VAEConfig.preset("d16")).state_dict()
        patch = BSQVAE(VAEConfig.preset("d14_patchify")).state_dict()
    assert detect_preset(d16) == ["d16"]
    assert detect_preset(patch) == ["d14_patchify"]
    assert infer_vae_config(patch) == VAEConfig.preset("d14_patchify")
    with pytest.raises(
        CheckpointError, match=r"(?s)infinity_vae_d16\.pth does not match.*looks like preset 'd16'"
    ):
        check_state_dict(d16, VAEConfig.preset("d32"), "infinity_vae_d16.pth")
    with torch.device("meta"):
        d32 = BSQVAE(VAEConfig.preset("d32")).state_dict()
    with pytest.raises(CheckpointError, match=r"looks like preset 'd32' / 'd32reg'"):
        check_state_dict(d32, VAEConfig.preset("d64"), "x.pth")


def test_plain_flux_naming_is_not_silently_renamed(tiny_vae, tmp_path):
    sd = {k.replace(".conv.", ".").replace(".norm.", "."): v for k, v in tiny_vae.state_dict().items()}
    path = tmp_path / "flux_names.pth"
    torch.save({"vae": sd}, path)
    with pytest.raises(CheckpointError, match="wrapper level"):
        load_official_vae(path, TINY)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("encoder.conv_in.conv.weight", "encoder.conv_in.weight"),  # a key infer_vae_config reads
        ("encoder.conv_out.conv.weight", "encoder.conv_out.conv.kernel"),
        ("decoder.up.1.block.0.conv2.conv.weight", "decoder.up.1.block.0.conv_2.conv.weight"),
    ],
)
def test_one_renamed_key_is_listed_as_missing_and_unexpected(tiny_vae, tmp_path, old, new):
    sd = {(new if k == old else k): v for k, v in tiny_vae.state_dict().items()}
    path = tmp_path / "renamed.pth"
    torch.save({"vae": sd}, path)
    for config in (None, TINY):  # inferred from the shapes, or given
        with pytest.raises(CheckpointError) as caught:
            load_official_vae(path, config)
        message = str(caught.value)
        assert f"missing keys (1): {old}" in message
        assert f"unexpected keys (1): {new}" in message
        assert "renamed or missing" in message
        assert "not a BSQ-VAE" not in message and "Flux" not in message


def test_a_state_dict_of_something_else_is_not_taken_for_a_vae(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"vae": {"encoder.conv_in.conv.weight": torch.zeros(4, 3, 3, 3)}}, path)
    with pytest.raises(CheckpointError, match=r"other\.pth.*not a BSQ-VAE state dict") as caught:
        load_official_vae(path)
    assert "Flux" not in str(caught.value)


def test_wrong_mask_buffer_is_rejected(tiny_vae, tmp_path):
    sd = dict(tiny_vae.state_dict())
    sd["quantize.lfq.mask"] = torch.arange(8)
    path = tmp_path / "mask.pth"
    torch.save({"vae": sd}, path)
    with pytest.raises(CheckpointError, match=r"quantize\.lfq\.mask"):
        load_official_vae(path, TINY)


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save(
        {"vae": {"encoder.conv_in.conv.weight": torch.zeros(1)}, "payload": _Exploit(str(marker))}, path
    )
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_official_vae(path, TINY)
    assert not marker.exists()


def test_legacy_non_zip_checkpoint_still_loads_weights_only(tiny_vae, tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"vae": tiny_vae.state_dict()}, path, _use_new_zipfile_serialization=False)
    _assert_same_weights(tiny_vae, load_official_vae(path, TINY))


def test_not_a_checkpoint_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_official_vae(missing, TINY)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pth"):
        load_official_vae(junk, TINY)
    other = tmp_path / "other.pth"
    torch.save({"model": {}}, other)
    with pytest.raises(CheckpointError, match="no 'vae' entry"):
        read_state_dict(other)


def test_save_vae_writes_a_folder_like_save_infinity_and_load_vae_reads_it(tiny_vae, tmp_path):
    folder = save_vae(tiny_vae, tmp_path / "tiny")
    assert folder == tmp_path / "tiny"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert VAEConfig.from_json(folder / "config.json") == TINY
    meta = load_safetensors_metadata(folder / "model.safetensors")
    assert VAEConfig.from_dict(json.loads(meta["bsq_tokenizer.config"])) == TINY
    loaded = load_vae(folder)
    _assert_same_weights(tiny_vae, loaded)
    assert loaded.config == TINY
    # The official loader and read_state_dict accept the folder too; the safetensors library reads the weights.
    _assert_same_weights(tiny_vae, load_official_vae(folder))
    assert set(read_state_dict(folder)) == set(tiny_vae.state_dict())
    assert set(st.load_file(folder / "model.safetensors")) == set(tiny_vae.state_dict())
    with pytest.raises(ValueError, match="writes a folder"):
        save_vae(tiny_vae, tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing"):
        load_vae(tmp_path)


def test_the_single_file_form_is_deprecated_for_writing_and_still_read(tiny_vae, tmp_path):
    path = tmp_path / "tiny.safetensors"
    with pytest.warns(DeprecationWarning, match="give a folder"):
        assert save_vae(tiny_vae, path) == path
    assert json.loads(path.with_suffix(".json").read_text())["codebook_dim"] == 8
    assert load_safetensors_metadata(path)["bsq_tokenizer.config"]
    _assert_same_weights(tiny_vae, load_vae(path))
    assert load_vae(path).config == TINY
    _assert_same_weights(tiny_vae, load_official_vae(path))


def test_load_vae_falls_back_to_the_config_json_beside(tiny_vae, tmp_path):
    path = tmp_path / "plain.safetensors"
    save_safetensors(dict(tiny_vae.state_dict()), path)
    with pytest.raises(CheckpointError, match=r"no 'bsq_tokenizer.config' metadata and no plain\.json"):
        load_vae(path)
    path.with_suffix(".json").write_text(json.dumps(TINY.to_dict()))
    _assert_same_weights(tiny_vae, load_vae(path))


def _sample_tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(3, 4, generator=gen),
        "f64": torch.randn(2, generator=gen, dtype=torch.float64),
        "f16": torch.randn(5, 1, generator=gen).half(),
        "bf16": torch.randn(2, 3, generator=gen).bfloat16(),
        "i64": torch.arange(-3, 4),
        "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "i8": torch.tensor([-1, 2], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
        "strided": torch.arange(12.0).reshape(3, 4).t(),
    }


def test_our_atomic_writer_keeps_every_dtype_layout_and_metadata(tmp_path):
    tensors = _sample_tensors()
    path = tmp_path / "ours.safetensors"
    save_safetensors(tensors, path, metadata={"note": "hello", "format": "pt"})
    theirs = st.load_file(path)
    assert set(theirs) == set(tensors)
    for k, v in tensors.items():
        assert theirs[k].dtype == v.dtype and torch.equal(theirs[k], v), k
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"note": "hello", "format": "pt"}


def test_files_written_by_the_library_load_with_metadata(tmp_path):
    tensors = {k: v.contiguous() for k, v in _sample_tensors().items()}
    path = tmp_path / "theirs.safetensors"
    st.save_file(tensors, path, metadata={"a": "b"})
    ours = load_safetensors(path)
    assert set(ours) == set(tensors)
    for k, v in tensors.items():
        assert ours[k].dtype == v.dtype and torch.equal(ours[k], v), k
    assert load_safetensors_metadata(path) == {"a": "b"}


def test_corrupt_safetensors_are_rejected_with_the_file_name(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_safetensors({"x": torch.zeros(4)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:-4])
    with pytest.raises(ValueError, match=r"bad\.safetensors is not a valid safetensors file"):
        load_safetensors(path)
    path.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match=r"bad\.safetensors is not a valid safetensors file"):
        load_safetensors(path)
    path.write_bytes((2).to_bytes(8, "little") + b"[]")
    with pytest.raises(ValueError, match=r"bad\.safetensors is not a valid safetensors file"):
        load_safetensors(path)
    with pytest.raises(ValueError, match=r"bad\.safetensors is not a valid safetensors file"):
        load_safetensors_metadata(path)
    with pytest.raises(TypeError, match="str to str"):
        save_safetensors({"x": torch.zeros(1)}, path, metadata={"n": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="meta device"):
        save_safetensors({"x": torch.zeros(1, device="meta")}, path)


def test_safetensors_overlapping_offsets_are_rejected(tmp_path):
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path = tmp_path / "overlap.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(12))
    with pytest.raises(ValueError, match=r"overlap\.safetensors is not a valid safetensors file"):
        load_safetensors(path)


def test_tied_and_strided_tensors_are_saved_each_under_its_name(tiny_vae, tmp_path):
    """The VAE's two mask names share one buffer; the library refuses shared storage, so each name gets a copy."""
    state = tiny_vae.state_dict()
    assert state["quantizer.lfq.mask"].data_ptr() == state["quantize.lfq.mask"].data_ptr()
    weight = torch.arange(12.0).reshape(3, 4)
    tensors = {**state, "w": weight, "w_t": weight.t(), "w_row": weight[1]}
    path = tmp_path / "tied.safetensors"
    save_safetensors(tensors, path)
    loaded = st.load_file(path)
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor), name


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_safetensors({"x": torch.ones(3)}, path, metadata={"v": "1"})
    with pytest.raises(TypeError, match=r"expected a torch\.Tensor"):
        save_safetensors({"x": torch.zeros(3), "y": [1, 2]}, path)  # type: ignore[dict-item]
    assert torch.equal(load_safetensors(path)["x"], torch.ones(3))  # the old file is intact
    save_safetensors({"x": torch.full((3,), 2.0)}, path, metadata={"v": "2"})
    assert torch.equal(load_safetensors(path)["x"], torch.full((3,), 2.0))
    assert load_safetensors_metadata(path) == {"v": "2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.safetensors"]


def test_save_that_fails_inside_the_library_removes_its_temporary_file(tmp_path, monkeypatch):
    import bsq_tokenizer.safetensors_io as io_module

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(io_module, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_safetensors({"x": torch.ones(3)}, tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []
