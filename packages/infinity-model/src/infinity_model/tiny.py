"""Tiny random T5 encoders written to disk, for tests and examples that must not download anything.

The tokenizer is a Unigram model built from a small word list (transformers' ``T5Tokenizer(vocab=...)``),
saved with ``save_pretrained`` so that it is loaded back exactly like a real flan-t5 folder.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["TINY_T5_WORDS", "write_tiny_t5"]

TINY_T5_WORDS: tuple[str, ...] = (
    "a", "an", "the", "of", "on", "in", "and", "with", "photo", "painting", "cat", "dog", "bird", "car",
    "tree", "house", "red", "blue", "green", "yellow", "big", "small", "sky", "sea", "mountain", "city",
    "night", "sun", "two", "three",
)  # fmt: skip


def write_tiny_t5(folder: str | Path, d_model: int = 32, *, seed: int = 0, num_layers: int = 2) -> Path:
    """Write a random T5 encoder of width ``d_model`` and its tokenizer to ``folder``; returns the folder.

    Unknown words fall back to single letters (every a-z is in the vocabulary), so any ASCII prompt encodes.
    """
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -2.0 - 0.01 * i) for i, w in enumerate(TINY_T5_WORDS)]
    vocab += [("\u2581", -4.0)] + [(c, -6.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    tokenizer.save_pretrained(folder)
    config = T5Config(
        vocab_size=len(vocab),
        d_model=d_model,
        d_kv=8,
        num_heads=2,
        num_layers=num_layers,
        d_ff=2 * d_model,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
    )
    torch.manual_seed(seed)
    T5EncoderModel(config).save_pretrained(folder)
    return folder
