"""Our fp32 logits equal a literal, loop-based float64 transcription of the spec computed from the state dict.

The reference below reads tensors by their official key names and follows infinity-architecture.md step by step
(no code shared with the package), so a wrong split order, missing bias, wrong RoPE pairing or mask shows here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bsq_tokenizer import ScaleSchedule
from bsq_tokenizer.schedules import custom_schedule
from infinity_model.condition import TextCondition
from infinity_model.config import InfinityConfig
from infinity_model.transformer import Infinity

EPS = 1e-6


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def layer_norm(x):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + EPS)


def star(n: int, n_final: int) -> list[int]:
    factor = np.float32(n_final / n)
    return [int(np.round(np.float32(i) * factor)) for i in range(n)]  # numpy rounds half to even


def reference_logits(sd, cfg: InfinityConfig, prompts: list[torch.Tensor], inputs, schedule: ScaleSchedule):
    sd = {k: v.double() for k, v in sd.items()}
    C, H = cfg.embed_dim, cfg.num_heads
    hd = C // H
    B = len(prompts)

    def lin(x, name, bias=True):
        y = x @ sd[name + ".weight"].T
        return y + sd[name + ".bias"] if bias else y

    # text path, one prompt at a time
    pooled, ca_rows = [], []
    hp = sd["text_proj_for_sos.ca.mat_q"].shape[1]
    dp = C // hp
    for t in prompts:
        t = t.double()
        normed = t / torch.sqrt((t * t).mean(-1, keepdim=True) + EPS) * sd["text_norm.weight"]
        kv = normed @ sd["text_proj_for_sos.ca.mat_kv.weight"].T
        k, v = kv[:, :C], kv[:, C:] + sd["text_proj_for_sos.ca.v_bias"]
        heads = []
        for j in range(hp):
            q = sd["text_proj_for_sos.ca.mat_q"][0, j]
            kj, vj = k[:, j * dp : (j + 1) * dp], v[:, j * dp : (j + 1) * dp]
            w = torch.softmax(kj @ q / math.sqrt(dp), 0)
            heads.append((w[:, None] * vj).sum(0))
        pooled.append(lin(torch.cat(heads), "text_proj_for_sos.ca.proj"))
        ca_rows.append(lin(gelu_tanh(lin(normed, "text_proj_for_ca.0")), "text_proj_for_ca.2"))
    cond = torch.stack(pooled)  # (B, C)
    silu = cond * torch.sigmoid(cond)
    ada = lin(silu, "shared_ada_lin.1").view(B, 6, C)

    # token sequence
    scale_of, rows, cols = [], [], []
    for k, (h, w) in enumerate(schedule.scales):
        rs, cs = star(h, schedule.rope_grid[0]), star(w, schedule.rope_grid[1])
        for i in range(h):
            for j in range(w):
                scale_of.append(k)
                rows.append(rs[i])
                cols.append(cs[j])
    L = len(scale_of)
    x = torch.cat([(cond + sd["pos_start"][0, 0])[:, None], lin(inputs.double(), "word_embed")], 1)
    x = x + sd["lvl_embed.weight"][torch.tensor(scale_of)]

    # rotation angles per token and pair: pairs 0..hd/4-1 use the row, the rest the column
    quarter = hd // 4
    inv = [1.0 / 10000 ** (2 * j / (hd // 2)) for j in range(quarter)]
    theta = torch.tensor(
        [
            [(rows[t] if p < quarter else cols[t]) * inv[p % quarter] for p in range(hd // 2)]
            for t in range(L)
        ],
        dtype=torch.float64,
    )
    rot = torch.polar(torch.ones_like(theta), theta)  # e^{i theta}

    def rope(z):  # (..., L, hd) real -> rotated, pairs (2p, 2p+1) as complex numbers
        c = torch.view_as_complex(z.reshape(*z.shape[:-1], hd // 2, 2).contiguous())
        return torch.view_as_real(c * rot).reshape(z.shape)

    visible = torch.tensor([[scale_of[kk] <= scale_of[qq] for kk in range(L)] for qq in range(L)])
    per = cfg.depth // cfg.block_chunks
    for n in range(cfg.depth):
        p = f"block_chunks.{n // per}.module.{n % per}." if cfg.block_chunks > 1 else f"blocks.{n}."
        g1, g2, s1, s2, b1, b2 = (ada + sd[p + "ada_gss"][0, 0]).unbind(1)  # each (B, C)
        h = layer_norm(x) * (1 + s1[:, None]) + b1[:, None]
        qkv = h @ sd[p + "sa.mat_qkv.weight"].T
        qkv = qkv + torch.cat([sd[p + "sa.q_bias"], torch.zeros(C, dtype=torch.float64), sd[p + "sa.v_bias"]])
        qkv = qkv.view(B, L, 3, H, hd)
        out = torch.empty(B, L, H, hd, dtype=torch.float64)
        for head in range(H):
            scale = math.exp(min(float(sd[p + "sa.scale_mul_1H11"][0, head, 0, 0]), math.log(100)))
            q = qkv[:, :, 0, head]
            k = qkv[:, :, 1, head]
            q = rope(q / q.norm(dim=-1, keepdim=True) * scale)
            k = rope(k / k.norm(dim=-1, keepdim=True))
            att = (q @ k.transpose(1, 2)).masked_fill(~visible, float("-inf")).softmax(-1)
            out[:, :, head] = att @ qkv[:, :, 2, head]
        x = x + lin(out.reshape(B, L, C), p + "sa.proj") * g1[:, None]
        # cross attention, each sample on its own rows
        hc = layer_norm(x) * sd[p + "ca_norm.weight"] + sd[p + "ca_norm.bias"]
        ca_out = torch.empty(B, L, C, dtype=torch.float64)
        for b in range(B):
            q = lin(hc[b], p + "ca.mat_q").view(L, H, hd)
            kv = ca_rows[b] @ sd[p + "ca.mat_kv.weight"].T
            k, v = kv[:, :C].view(-1, H, hd), (kv[:, C:] + sd[p + "ca.v_bias"]).view(-1, H, hd)
            att = torch.einsum("lhd,nhd->hln", q, k).div(math.sqrt(hd)).softmax(-1)
            ca_out[b] = torch.einsum("hln,nhd->lhd", att, v).reshape(L, C)
        x = x + lin(ca_out, p + "ca.proj")
        h = layer_norm(x) * (1 + s2[:, None]) + b2[:, None]
        x = x + lin(gelu_tanh(lin(h, p + "ffn.fc1")), p + "ffn.fc2") * g2[:, None]
    scale_shift = lin(silu, "head_nm.ada_lin.1").view(B, 2, C)
    h = layer_norm(x) * (1 + scale_shift[:, 0, None]) + scale_shift[:, 1, None]
    return lin(h, "head").view(B, L, cfg.d_vae, 2)


@pytest.mark.parametrize("chunks", [1, 2])
def test_fp32_logits_equal_a_literal_transcription_of_the_spec(chunks: int) -> None:
    cfg = InfinityConfig(
        depth=2,
        embed_dim=64,
        num_heads=4,
        d_vae=8,
        block_chunks=chunks,
        text_channels=32,
        text_maxlen=16,
        pool_heads=4,
    )
    torch.manual_seed(0)
    model = Infinity(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    schedule = custom_schedule([(1, 1), (2, 2), (2, 4), (3, 6)], template=0.5)  # star positions on (45, 90)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randn(3, 32, generator=g), torch.randn(6, 32, generator=g)]
    inputs = torch.randn(2, schedule.seq_len - 1, 8, generator=g) * 0.2
    with torch.no_grad():
        ours = model(TextCondition(torch.cat(prompts), torch.tensor([3, 6])), inputs, schedule)
    ref = reference_logits(model.state_dict(), cfg, prompts, inputs, schedule)
    assert ref.abs().max() > 1.0  # non-trivial logits
    torch.testing.assert_close(ours.double(), ref, atol=2e-5, rtol=1e-5)
