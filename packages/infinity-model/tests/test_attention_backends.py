"""The flash-attn varlen call path packs its arguments right: with a reference kernel it equals SDPA."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from bsq_tokenizer.schedules import custom_schedule
from infinity_model import attention
from infinity_model.condition import TextCondition
from infinity_model.config import InfinityConfig
from infinity_model.transformer import Infinity

SCHEDULE = custom_schedule([(1, 1), (2, 2), (3, 3)])


def reference_varlen_kvpacked(
    q, kv, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=False
):
    """flash_attn_varlen_kvpacked_func semantics: q (Tq, H, hd), kv (Tk, 2, H, hd), per-sequence softmax."""
    assert dropout_p == 0.0 and not causal
    assert q.dtype == kv.dtype and cu_q.dtype == torch.int32 and cu_k.dtype == torch.int32
    scale = softmax_scale if softmax_scale is not None else 1 / math.sqrt(q.shape[-1])
    out = torch.empty_like(q)
    for b in range(cu_q.numel() - 1):
        qs, qe, ks, ke = int(cu_q[b]), int(cu_q[b + 1]), int(cu_k[b]), int(cu_k[b + 1])
        assert qe - qs <= max_q and ke - ks <= max_k
        qb = q[qs:qe].transpose(0, 1).double()
        kb, vb = kv[ks:ke, 0].transpose(0, 1).double(), kv[ks:ke, 1].transpose(0, 1).double()
        att = (qb @ kb.transpose(-1, -2) * scale).softmax(-1)
        out[qs:qe] = (att @ vb).transpose(0, 1).to(q.dtype)
    return out


@pytest.fixture
def fake_flash(monkeypatch):
    calls = []

    def kernel(*args, **kwargs):
        calls.append(args[0].shape)
        return reference_varlen_kvpacked(*args, **kwargs)

    monkeypatch.setattr(attention, "_flash_varlen_kvpacked", lambda: kernel)
    monkeypatch.setattr(attention, "_use_flash", lambda q, kv, memory: memory.allow_flash)
    return calls


def make_model(backend: str) -> Infinity:
    torch.manual_seed(0)
    cfg = InfinityConfig(
        depth=2, embed_dim=64, num_heads=4, d_vae=8, text_channels=32, text_maxlen=16, pool_heads=4
    )
    model = Infinity(cfg, attn_backend=backend)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


@torch.no_grad()
def test_flash_varlen_path_equals_sdpa_path(fake_flash) -> None:
    flash_model, sdpa_model = make_model("auto"), make_model("sdpa")
    g = torch.Generator().manual_seed(1)
    text = TextCondition(torch.randn(9, 32, generator=g), torch.tensor([2, 7]))
    inputs = torch.randn(2, SCHEDULE.seq_len - 1, 8, generator=g)
    got = flash_model(text, inputs, SCHEDULE)
    n_flash = len(fake_flash)
    assert n_flash == 1 + 2  # the pool and one cross-attention per block
    ref = sdpa_model(text, inputs, SCHEDULE)
    assert len(fake_flash) == n_flash  # attn_backend="sdpa" never takes the flash path
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_flash_is_only_chosen_for_half_precision_cuda_tensors() -> None:
    rows = torch.randn(3, 8)
    memory = attention.TextMemory(rows, torch.tensor([3]), torch.tensor([0, 3], dtype=torch.int32), 3)
    q = torch.randn(1, 2, 2, 4)
    assert not attention._use_flash(q, q, memory)  # CPU fp32: SDPA
    assert not attention._use_flash(q.bfloat16(), q.bfloat16(), memory)  # CPU bf16: SDPA
    assert "flash_attn" not in sys.modules or attention._flash_varlen_kvpacked() is not None
