"""2D RoPE uses exactly the reference "star" positions (scale-schedules.json) and rotates adjacent pairs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from bsq_tokenizer import get_schedule
from bsq_tokenizer.schedules import H_DIV_W_TEMPLATES
from infinity_model.rope import apply_rope, rope_cos_sin, rope_inv_freq, star_positions, token_positions

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "rope_positions_star.json").read_text())


@pytest.mark.parametrize("template", H_DIV_W_TEMPLATES)
def test_rope_positions_equal_rope_positions_star_for_every_template(template: float) -> None:
    ref = FIXTURE["rope_positions_star"][f"{template:.3f}"]
    schedule = get_schedule(template, "1M")
    assert list(schedule.rope_grid) == ref["final_grid_1M"]
    assert [[s["h"], s["w"]] for s in ref["scales"]] == [list(s) for s in schedule.scales]
    grid_h, grid_w = schedule.rope_grid
    for entry in ref["scales"]:
        assert star_positions(entry["h"], grid_h).tolist() == entry["rows"]
        assert star_positions(entry["w"], grid_w).tolist() == entry["cols"]
    rows, cols = token_positions(schedule.scales, schedule.rope_grid)
    expect_rows = [r for s in ref["scales"] for r in s["rows"] for _ in s["cols"]]
    expect_cols = [c for s in ref["scales"] for _ in s["rows"] for c in s["cols"]]
    assert rows.tolist() == expect_rows and cols.tolist() == expect_cols


def test_smaller_pixel_budgets_use_the_same_positions_as_1m() -> None:
    for template in (1.0, 0.333, 2.5):
        full = token_positions(get_schedule(template, "1M").scales, get_schedule(template, "1M").rope_grid)
        small = get_schedule(template, "0.06M")
        part = token_positions(small.scales, small.rope_grid)
        n = small.seq_len
        assert torch.equal(part[0], full[0][:n]) and torch.equal(part[1], full[1][:n])


def test_rope_rotates_adjacent_pairs_rows_first_then_columns() -> None:
    hd = 16
    inv = rope_inv_freq(hd)
    assert torch.allclose(
        inv, torch.tensor([1.0, 1 / 10000 ** (2 / 8), 1 / 10000 ** (4 / 8), 1 / 10000 ** (6 / 8)])
    )
    cos, sin = rope_cos_sin([(1, 1), (2, 2)], (64, 64), hd)  # positions (0,0) (0,0) (0,32) (32,0) (32,32)
    x = torch.randn(3, 5, hd, dtype=torch.float64).float()
    y = apply_rope(x, cos, sin)
    rows = [0, 0, 0, 32, 32]
    cols = [0, 0, 32, 0, 32]
    for t in range(5):
        for p in range(hd // 2):
            theta = (rows[t] if p < hd // 4 else cols[t]) * float(inv[p % (hd // 4)])
            a, b = x[:, t, 2 * p].double(), x[:, t, 2 * p + 1].double()
            exp0 = math.cos(theta) * a - math.sin(theta) * b
            exp1 = math.sin(theta) * a + math.cos(theta) * b
            assert torch.allclose(y[:, t, 2 * p].double(), exp0, atol=1e-5)
            assert torch.allclose(y[:, t, 2 * p + 1].double(), exp1, atol=1e-5)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)  # a rotation
