"""A small, deterministic T5 encoder for closed vocabularies (the default model's text encoder).

It is a genuine ``transformers`` T5 encoder and tokenizer saved with ``save_pretrained``, so the pipeline reads
it exactly like a flan-t5-xl folder. Its weights are not trained but set: every attention head looks at one
fixed neighbour (previous / next token, one or two steps away) through T5's relative position bias, with zero
query/key weights, and value/output/feed-forward weights are seeded random. Each output row therefore mixes a
token with its neighbours, so word order and attribute binding ("red circle and blue square" versus "blue
circle and red square") survive in the features, which a random T5 at its usual initialisation barely keeps
(its attention is almost uniform and its rows are little more than the token embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["NEIGHBOUR_OFFSETS", "write_neighbour_t5"]

# Relative position (key minus query) that each head attends to.
NEIGHBOUR_OFFSETS: tuple[int, ...] = (-1, 1, -2, 2)
_NUM_BUCKETS = 16  # bidirectional: offsets -3..3 each get their own bucket
_MAX_DISTANCE = 32
_FOCUS = 20.0  # bias of the attended bucket; softmax weight of any other token is below e^-20


def _tokenizer_vocab(words: Sequence[str]) -> list[tuple[str, float]]:
    """Unigram vocabulary: specials, whole words (more likely than their spelling), then single letters."""
    seen: list[str] = []
    for word in words:
        if not word or any(c.isspace() for c in word):
            raise ValueError(f"vocabulary entry {word!r} must be one non-empty word without spaces")
        if word not in seen:
            seen.append(word)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -2.0 - 0.01 * i) for i, w in enumerate(seen)]
    vocab += [("\u2581", -4.0)] + [(c, -6.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.-'"]
    return vocab


def write_neighbour_t5(
    folder: str | Path,
    words: Sequence[str],
    *,
    d_model: int = 64,
    num_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write the encoder and tokenizer to ``folder`` (same arguments → byte-identical weights); returns it.

    ``words`` become whole-word tokens; any other word is spelled with single characters, so every lower-case
    ASCII prompt encodes. Each layer has one head per entry of :data:`NEIGHBOUR_OFFSETS`.
    """
    from transformers import T5Config, T5EncoderModel, T5Tokenizer
    from transformers.models.t5.modeling_t5 import T5Attention

    num_heads = len(NEIGHBOUR_OFFSETS)
    if d_model % num_heads:
        raise ValueError(f"d_model={d_model} must be divisible by the {num_heads} neighbour heads")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer_vocab(words)
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(folder)
    config = T5Config(
        vocab_size=len(vocab),
        d_model=d_model,
        d_kv=d_model // num_heads,
        num_heads=num_heads,
        num_layers=num_layers,
        d_ff=2 * d_model,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=_NUM_BUCKETS,
        relative_attention_max_distance=_MAX_DISTANCE,
        dropout_rate=0.0,
    )
    torch.manual_seed(seed)
    model = T5EncoderModel(config).eval()
    buckets = T5Attention._relative_position_bucket(
        torch.tensor(NEIGHBOUR_OFFSETS),
        bidirectional=True,
        num_buckets=_NUM_BUCKETS,
        max_distance=_MAX_DISTANCE,
    )
    if len(set(buckets.tolist())) != num_heads:
        raise AssertionError(f"neighbour offsets {NEIGHBOUR_OFFSETS} share buckets {buckets.tolist()}")
    with torch.no_grad():
        for block in model.encoder.block:
            attention = block.layer[0].SelfAttention
            attention.q.weight.zero_()
            attention.k.weight.zero_()
        bias = (
            model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
        )  # (buckets, heads)
        bias.zero_()
        for head, bucket in enumerate(buckets.tolist()):
            bias[bucket, head] = _FOCUS
    model.save_pretrained(folder)
    return folder
