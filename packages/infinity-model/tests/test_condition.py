"""TextCondition packs variable-length prompts losslessly and validates its shapes."""

from __future__ import annotations

import pytest
import torch
from infinity_model.condition import TextCondition, pack_padded, unpack_to_padded


def test_from_padded_and_to_padded_round_trip() -> None:
    feats = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    text = TextCondition.from_padded(feats, mask)
    assert text.lengths.tolist() == [2, 5, 1] and text.max_len == 5 and text.batch_size == 3
    assert text.cu_seqlens.tolist() == [0, 2, 7, 8] and text.cu_seqlens.dtype == torch.int32
    padded, back_mask = text.to_padded()
    assert torch.equal(back_mask, mask)
    assert torch.equal(padded[mask], feats[mask]) and padded[~mask].abs().sum() == 0
    assert torch.equal(pack_padded(padded, text.lengths), text.features)
    out, m = unpack_to_padded(text.features, text.lengths, 5)
    assert torch.equal(out, padded) and torch.equal(m, mask)


def test_concat_split_select() -> None:
    a = TextCondition(torch.randn(5, 4), torch.tensor([2, 3]))
    b = TextCondition(torch.randn(1, 4), torch.tensor([1]))
    both = TextCondition.concat(a, b)
    assert both.lengths.tolist() == [2, 3, 1]
    parts = both.split()
    assert [p.lengths.tolist() for p in parts] == [[2], [3], [1]]
    assert torch.equal(parts[1].features, a.features[2:])
    picked = both.select([2, 0])
    assert torch.equal(picked.features, torch.cat([b.features, a.features[:2]]))


def test_invalid_conditions_are_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="lengths sum to 4 but features has 5 rows"):
        TextCondition(torch.randn(5, 4), torch.tensor([1, 3]))
    with pytest.raises(ValueError, match="every prompt needs >= 1 row"):
        TextCondition(torch.randn(3, 4), torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="from_padded"):
        TextCondition(torch.randn(2, 3, 4), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="1-D integer tensor"):
        TextCondition(torch.randn(3, 4), torch.tensor([3.0]))
