"""The plain-torch T5 encoder path (start-up without transformers) gives transformers' exact ids and features."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from infinity_model.default_model import load_default_model
from infinity_model.t5_encoder import T5Encoder, load_local_t5
from infinity_model.text import TextEncoder

PROMPTS = ["a red circle and a blue square", "Two  BIG green triangles!", "xyz qq " * 300, "a", "héllo 12,3"]


def _reference(folder: Path) -> tuple[object, torch.nn.Module]:
    from transformers import AutoTokenizer, T5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, legacy=True)
    model = T5EncoderModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    return tokenizer, model.eval()


def _assert_same(folder: Path) -> None:
    tokenizer, reference = _reference(folder)
    loaded = load_local_t5(folder, torch.float32)
    assert loaded is not None, f"{folder} should take the plain-torch path"
    model, fast = loaded
    options = dict(max_length=512, padding="max_length", truncation=True, return_tensors="pt")
    want, got = tokenizer(PROMPTS, **options), fast(PROMPTS, **options)
    assert torch.equal(want["input_ids"], got["input_ids"])
    assert torch.equal(want["attention_mask"], got["attention_mask"])
    assert int(got["attention_mask"][2].sum()) == 512  # the long prompt was truncated, ending in </s>
    with torch.no_grad():
        a = reference(input_ids=want["input_ids"], attention_mask=want["attention_mask"]).last_hidden_state
        b = model(input_ids=want["input_ids"], attention_mask=want["attention_mask"]).last_hidden_state
    assert torch.equal(a, b), f"features differ by up to {float((a - b).abs().max())}"


def test_default_model_encoder_is_bit_identical_to_transformers() -> None:
    _assert_same(Path(load_default_model(None).text_encoder))


def _random_t5_folder(folder: Path, feed_forward_proj: str) -> Path:
    from transformers import T5Config, T5EncoderModel

    source = Path(load_default_model(None).text_encoder)
    config = T5Config(vocab_size=72, d_model=32, d_kv=8, num_heads=4, num_layers=3, d_ff=48,
                      feed_forward_proj=feed_forward_proj, relative_attention_num_buckets=32,
                      dropout_rate=0.0)  # fmt: skip
    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((source / name).read_bytes())
    return folder


@pytest.mark.parametrize(
    "feed_forward_proj", ["relu", "gated-gelu"]
)  # T5 v1.0, and v1.1 / flan-T5 (Infinity's)
def test_random_t5_is_bit_identical_to_transformers(tmp_path: Path, feed_forward_proj: str) -> None:
    _assert_same(_random_t5_folder(tmp_path / "t5", feed_forward_proj))


def test_exact_gelu_t5_is_left_to_transformers(tmp_path: Path) -> None:
    # "gelu" without "gated-" is the exact GELU in transformers, which this module does not compute
    assert load_local_t5(_random_t5_folder(tmp_path / "t5", "gelu"), torch.float32) is None


def test_unsupported_folders_fall_back_to_transformers() -> None:
    folder = Path(load_default_model(None).text_encoder)
    assert load_local_t5(folder, torch.float16) is None  # only fp32 is computed exactly
    encoder = TextEncoder.from_pretrained(folder)
    assert isinstance(encoder.model, T5Encoder)
    assert encoder.hidden_size == 64


@pytest.mark.slow
def test_generate_on_the_default_model_does_not_import_transformers(tmp_path: Path) -> None:
    code = (
        "import sys; from infinity_model.cli import main; main(['generate', 'a red circle', '-o', sys.argv[1]]); "
        "bad = [m for m in ('transformers', 'torch._dynamo', 'scipy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "out.png")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out.png").is_file()
