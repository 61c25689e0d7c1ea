"""Attention layers: cosine self-attention with 2D RoPE, varlen cross-attention, the text attention pool.

Self-attention always runs through `F.scaled_dot_product_attention` (explicit block-causal mask in training,
no mask over the KV cache at inference). Cross-attention and the pool use flash-attn's varlen kernel only when
it is importable, the tensors are on CUDA and already in fp16/bf16 (e.g. under autocast); otherwise SDPA on a
zero-padded key/value batch with a key-padding mask, which gives the same result.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infinity_model.condition import packed_positions
from infinity_model.rope import apply_rope

__all__ = [
    "COS_ATTN_MAX_LOG_SCALE",
    "CrossAttention",
    "LayerKV",
    "SelfAttention",
    "StepConstants",
    "TextAttentivePool",
    "TextMemory",
    "block_causal_bias",
    "block_causal_mask",
    "fp32_region",
    "varlen_attention",
]

# float32 ln(100) taken as a Python float: the clamp bound of the learned per-head log-scale.
COS_ATTN_MAX_LOG_SCALE = 4.605170249938965


def block_causal_mask(scales: list[tuple[int, int]] | tuple[tuple[int, int], ...], device=None) -> Tensor:
    """(L, L) bool: token q of scale a may attend to token k of scale b iff b <= a."""
    sizes = torch.tensor([h * w for h, w in scales])
    scale_id = torch.repeat_interleave(torch.arange(len(scales)), sizes).to(device)
    return scale_id[None, :] <= scale_id[:, None]


def block_causal_bias(
    scales: list[tuple[int, int]] | tuple[tuple[int, int], ...], dtype: torch.dtype, device=None
) -> Tensor:
    """The block-causal mask as an additive (L, L) bias (0 visible, -inf hidden) in the attention dtype.

    Built once per forward so SDPA does not convert a boolean mask in every layer; the row stride is padded to
    a multiple of 16 elements, the alignment the memory-efficient CUDA kernel wants.
    """
    allowed = block_causal_mask(scales, device)
    length = allowed.shape[0]
    storage = torch.zeros(length, -(-length // 16) * 16, dtype=dtype, device=device)
    bias = storage[:, :length]
    return bias.masked_fill_(~allowed, float("-inf"))


def fp32_region(device_type: str) -> contextlib.AbstractContextManager[object]:
    """Autocast switched off on ``device_type`` when it is on there; a no-op context otherwise (cheaper)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


@dataclass
class TextMemory:
    """Packed text rows for cross-attention plus the indices both attention backends need."""

    rows: Tensor  # (sum_len, D) text_proj_for_ca output (or the normed T5 rows for the pool)
    lengths: Tensor  # (B,) int64, CPU
    cu_seqlens: Tensor  # (B + 1,) int32 on the device of rows
    max_len: int
    allow_flash: bool = True
    # derived once: flat (sample * max_len + position) index of every packed row, and the key-padding mask
    pad_index: Tensor = field(init=False, repr=False)
    key_mask: Tensor | None = field(init=False, repr=False)  # (B, 1, 1, max_len) bool; None if no padding

    def __post_init__(self) -> None:
        self.lengths = self.lengths.to(torch.int64).cpu()
        sample, pos = packed_positions(self.lengths, self.rows.device)
        self.pad_index = sample * self.max_len + pos
        if bool((self.lengths == self.max_len).all()):
            self.key_mask = None
        else:
            mask = torch.zeros(self.batch_size * self.max_len, dtype=torch.bool, device=self.rows.device)
            mask[self.pad_index] = True
            self.key_mask = mask.view(self.batch_size, 1, 1, self.max_len)

    @property
    def batch_size(self) -> int:
        return int(self.lengths.numel())

    def pad(self, packed: Tensor) -> Tensor:
        """(sum_len, *rest) -> zero-padded (B, max_len, *rest) (a view when every prompt has max_len rows)."""
        rest = packed.shape[1:]
        if self.key_mask is None:
            return packed.view(self.batch_size, self.max_len, *rest)
        out = packed.new_zeros((self.batch_size * self.max_len, *rest))
        out.index_copy_(0, self.pad_index, packed)  # index_copy_: ~100x faster than advanced-index assignment
        return out.view(self.batch_size, self.max_len, *rest)


@functools.cache
def _flash_varlen_kvpacked() -> Callable[..., Tensor] | None:
    """flash-attn's varlen kv-packed kernel, or None when flash-attn is not installed (imported lazily)."""
    try:
        from flash_attn import flash_attn_varlen_kvpacked_func
    except ImportError:
        return None
    return flash_attn_varlen_kvpacked_func


def _use_flash(q: Tensor, kv: Tensor, memory: TextMemory) -> bool:
    return (
        memory.allow_flash
        and q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and kv.dtype == q.dtype
        and _flash_varlen_kvpacked() is not None
    )


def varlen_attention(q: Tensor, kv: Tensor, memory: TextMemory, scale: float) -> Tensor:
    """Each sample's queries attend to that sample's own text rows only.

    q: (B, Lq, H, hd); kv: (sum_len, 2, H, hd) packed like `memory`; returns (B, Lq, H, hd).
    """
    batch, lq, heads, hd = q.shape
    if _use_flash(q, kv, memory):
        flash = _flash_varlen_kvpacked()
        assert flash is not None  # _use_flash checked it
        cu_q = torch.arange(0, (batch + 1) * lq, lq, dtype=torch.int32, device=q.device)
        out = flash(
            q.reshape(batch * lq, heads, hd).contiguous(),
            kv,
            cu_q,
            memory.cu_seqlens,
            lq,
            memory.max_len,
            dropout_p=0.0,
            softmax_scale=scale,
        )
        return out.view(batch, lq, heads, hd)
    k, v = padded_kv(kv, memory)
    return padded_attention(q, k, v, memory, scale)


def padded_kv(kv: Tensor, memory: TextMemory) -> tuple[Tensor, Tensor]:
    """Packed text keys/values (sum_len, 2, H, hd) -> zero-padded keys and values, each (B, H, N, hd)."""
    k, v = memory.pad(kv).permute(2, 0, 3, 1, 4).unbind(0)
    return k, v


def padded_attention(q: Tensor, k: Tensor, v: Tensor, memory: TextMemory, scale: float) -> Tensor:
    """SDPA of q (B, Lq, H, hd) over padded text keys/values (``padded_kv``), pads masked: (B, Lq, H, hd)."""
    if q.dtype != v.dtype:
        q = q.to(v.dtype)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=memory.key_mask, scale=scale)
    return out.transpose(1, 2)


def _linear_plus(linear: nn.Linear, x: Tensor, bias: Tensor) -> Tensor:
    """linear(x) + bias, calling the module (so ZeRO-3 gathers its weight); bias in the output dtype."""
    y = linear(x)
    return y + bias.to(y.dtype)


@dataclass
class StepConstants:
    """One block's tensors that stay the same at every scale of a sampler call (the fast cached step).

    ``gamma1/gamma2`` scale the attention and FFN branches, ``scale1/scale2`` are ``1 + scale`` of the two
    AdaLN modulations (added once instead of at every scale), ``shift1/shift2`` their shifts: all ``(B, 1, C)``
    from ``ada + ada_gss``. ``qkv_bias`` is the self-attention's (q_bias, 0, v_bias), ``q_mul`` the clamped,
    exponentiated per-head log-scale ``(1, H, 1, 1)``.
    """

    gamma1: Tensor
    gamma2: Tensor
    scale1: Tensor
    scale2: Tensor
    shift1: Tensor
    shift2: Tensor
    qkv_bias: Tensor
    q_mul: Tensor


class LayerKV:
    """One block's inference cache: self-attention keys (after RoPE) and values of all scales run so far,
    plus the block's cross-attention keys/values of the text (computed once per sampler call).

    ``constants`` holds the block's :class:`StepConstants` for the fast step (``CrossAttnBlock.step``), which
    also keeps the text keys/values padded and split (``cross_k``, ``cross_v``). Keys/values grow by
    concatenation: preallocating them for the whole schedule was slower on CPU (fresh buffers every sampler
    call fault their pages in; ``benchmarks/floor.py``).
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.cross_kv: Tensor | None = None
        self.constants: StepConstants | None = None
        self.cross_k: Tensor | None = None
        self.cross_v: Tensor | None = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append (B, H, l, hd) keys/values along the sequence; return the full cached keys/values."""
        if self.k is None or self.v is None:
            self.k, self.v = k, v
        else:
            if k.shape[0] != self.k.shape[0]:
                raise ValueError(
                    f"KV cache holds batch {self.k.shape[0]} but got batch {k.shape[0]}; use a new cache "
                    "(Infinity.new_cache()) for every sampler call"
                )
            self.k = torch.cat([self.k, k], dim=2)
            self.v = torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def narrow(self, rows: int, text_rows: int) -> None:
        """Keep the first ``rows`` samples and ``text_rows`` packed text rows; the step constants are
        recomputed at the next step (from the narrowed conditioning)."""
        self.k = None if self.k is None else self.k[:rows]
        self.v = None if self.v is None else self.v[:rows]
        self.cross_kv = None if self.cross_kv is None else self.cross_kv[:text_rows]
        self.cross_k = self.cross_v = None
        self.constants = None


class SelfAttention(nn.Module):
    """Cosine self-attention: q, k L2-normalised, q scaled by exp(min(s_h, ln 100)), 2D RoPE, scale 1."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0)))  # init ln 4
        self.q_bias = nn.Parameter(torch.zeros(embed_dim))
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.zero_k_bias: Tensor  # a buffer: the reference has no key bias
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.mat_qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=False)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        attn_mask: Tensor | None = None,
        cache: LayerKV | None = None,
    ) -> Tensor:
        """x: (B, L, C); cos/sin: (L, hd/2) for these tokens; attn_mask: (L, L_keys) bool or None."""
        return self._attend(x, self.qkv_bias(), self.log_scale(), cos, sin, attn_mask, cache)

    def step(self, x: Tensor, cos: Tensor, sin: Tensor, layer: LayerKV, constants: StepConstants) -> Tensor:
        """``forward`` over a KV cache with the per-call constants precomputed (same operations, same bits)."""
        return self._attend(x, constants.qkv_bias, constants.q_mul, cos, sin, None, layer)

    def _attend(
        self,
        x: Tensor,
        bias: Tensor,
        q_mul: Tensor,
        cos: Tensor,
        sin: Tensor,
        attn_mask: Tensor | None,
        cache: LayerKV | None,
    ) -> Tensor:
        batch, length, width = x.shape
        qkv = _linear_plus(self.mat_qkv, x, bias).view(batch, length, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, hd)
        with fp32_region(x.device.type):
            q = F.normalize(q.float(), dim=-1, eps=1e-12) * q_mul
            k = F.normalize(k.float(), dim=-1, eps=1e-12)
            q = apply_rope(q, cos, sin).to(v.dtype)
            k = apply_rope(k, cos, sin).to(v.dtype)
        if cache is not None:
            k, v = cache.append(k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=1.0)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))

    def qkv_bias(self) -> Tensor:
        """The fused projection's bias (q_bias, 0, v_bias): the reference has no key bias."""
        return torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))

    def log_scale(self) -> Tensor:
        """exp(min(s_h, ln 100)) in fp32, (1, H, 1, 1): the factor of the normalised queries."""
        with fp32_region(self.scale_mul_1H11.device.type):
            return self.scale_mul_1H11.float().clamp_max(COS_ATTN_MAX_LOG_SCALE).exp()


class CrossAttention(nn.Module):
    """Image tokens (queries) attend to their own prompt's text rows; softmax scale 1/sqrt(hd), no RoPE."""

    def __init__(self, embed_dim: int, cond_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.v_bias = nn.Parameter(torch.zeros(embed_dim))
        self.zero_k_bias: Tensor  # a buffer: the reference has no key bias
        self.register_buffer("zero_k_bias", torch.zeros(embed_dim))
        self.mat_q = nn.Linear(embed_dim, embed_dim)
        self.mat_kv = nn.Linear(cond_dim, 2 * embed_dim, bias=False)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def project_kv(self, memory: TextMemory) -> Tensor:
        """(sum_len, 2, H, hd) keys/values of the packed text rows (cacheable across scales)."""
        bias = torch.cat((self.zero_k_bias, self.v_bias))
        return _linear_plus(self.mat_kv, memory.rows, bias).view(-1, 2, self.num_heads, self.head_dim)

    def forward(self, x: Tensor, memory: TextMemory, cache: LayerKV | None = None) -> Tensor:
        """x: (B, L, C) -> (B, L, C); with a cache the text keys/values are projected once and reused."""
        batch, length, width = x.shape
        q, kv = self._q_kv(x, memory, cache)
        out = varlen_attention(q, kv, memory, scale=1.0 / math.sqrt(self.head_dim))
        return self.proj(out.reshape(batch, length, width))

    def step(self, x: Tensor, memory: TextMemory, layer: LayerKV) -> Tensor:
        """``forward`` over a KV cache that also keeps the padded text keys/values (same bits)."""
        batch, length, width = x.shape
        q, kv = self._q_kv(x, memory, layer)
        scale = 1.0 / math.sqrt(self.head_dim)
        if _use_flash(q, kv, memory):
            return self.proj(varlen_attention(q, kv, memory, scale).reshape(batch, length, width))
        if layer.cross_k is None or layer.cross_k.dtype != kv.dtype:
            layer.cross_k, layer.cross_v = padded_kv(kv, memory)
        assert layer.cross_v is not None
        out = padded_attention(q, layer.cross_k, layer.cross_v, memory, scale)
        return self.proj(out.reshape(batch, length, width))

    def _q_kv(self, x: Tensor, memory: TextMemory, cache: LayerKV | None) -> tuple[Tensor, Tensor]:
        """Queries (B, L, H, hd) and the packed text keys/values in their dtype (projected once per cache)."""
        if cache is not None and cache.cross_kv is not None:
            kv = cache.cross_kv
        else:
            kv = self.project_kv(memory)
            if cache is not None:
                cache.cross_kv = kv
        q = self.mat_q(x).view(x.shape[0], x.shape[1], self.num_heads, self.head_dim)
        return q, kv if kv.dtype == q.dtype else kv.to(q.dtype)


class _PoolAttention(nn.Module):
    """One learned query per head attending to a prompt's rows (keys `text_proj_for_sos.ca.*`)."""

    def __init__(self, text_channels: int, cond_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = cond_dim // num_heads
        self.mat_q = nn.Parameter(torch.empty(1, num_heads, self.head_dim))
        self.v_bias = nn.Parameter(torch.zeros(cond_dim))
        self.zero_k_bias: Tensor  # a buffer: the reference has no key bias
        self.register_buffer("zero_k_bias", torch.zeros(cond_dim))
        self.mat_kv = nn.Linear(text_channels, 2 * cond_dim, bias=False)
        self.proj = nn.Linear(cond_dim, cond_dim)
        if not self.mat_q.is_meta:
            nn.init.trunc_normal_(self.mat_q, std=math.sqrt(1 / (3 * cond_dim)))

    def forward(self, memory: TextMemory) -> Tensor:
        """memory.rows: (sum_len, Ct5) normed T5 rows -> (B, D) pooled vectors."""
        batch = memory.batch_size
        bias = torch.cat((self.zero_k_bias, self.v_bias))
        kv = _linear_plus(self.mat_kv, memory.rows, bias).view(-1, 2, self.num_heads, self.head_dim)
        q = self.mat_q.to(kv.dtype).expand(batch, -1, -1).unsqueeze(1)  # (B, 1, Hp, hd)
        out = varlen_attention(q, kv, memory, scale=1.0 / math.sqrt(self.head_dim))
        return self.proj(out.reshape(batch, self.num_heads * self.head_dim))


class TextAttentivePool(nn.Module):
    """Attention pool of the prompt rows into the single vector cond_BD (SOS content and AdaLN input)."""

    def __init__(self, text_channels: int, cond_dim: int, num_heads: int) -> None:
        super().__init__()
        self.ca = _PoolAttention(text_channels, cond_dim, num_heads)

    def forward(self, memory: TextMemory) -> Tensor:
        return self.ca(memory)
