"""A T5 encoder in plain torch for small local folders (transformers' ``modeling_t5.py``, ``T5EncoderModel``).

Importing ``transformers`` costs about a second of start-up (it pulls in torch's compiler and distributed
packages), more than the whole default model's work. A T5 *encoder* is small: embeddings, pre-norm blocks of
self-attention with a relative position bias (shared from the first block) and a (gated) feed-forward, a final
RMS norm. This module computes it with the same operations in the same order as transformers' SDPA path, so
the features are bit-identical (checked by ``tests/test_t5_encoder.py``), and tokenizes with the ``tokenizers``
library from the folder's ``tokenizer.json``. :meth:`TextEncoder.from_pretrained` uses it when a local folder
holds exactly what it supports, and transformers otherwise.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["FastT5Tokenizer", "T5Encoder", "T5EncoderConfig", "load_local_t5"]

_ACTIVATIONS = ("gelu_new", "relu")


@dataclass(frozen=True)
class T5EncoderConfig:
    """The fields of a transformers ``T5Config`` that the encoder uses."""

    vocab_size: int
    d_model: int
    d_kv: int
    num_heads: int
    num_layers: int
    d_ff: int
    gated: bool
    activation: str
    num_buckets: int
    max_distance: int
    eps: float

    @classmethod
    def from_hf(cls, data: dict[str, Any]) -> T5EncoderConfig | None:
        """The config of a ``config.json`` dict, or None when it is not a T5 this module computes exactly."""
        proj = str(data.get("feed_forward_proj", "relu"))
        gated = proj.startswith("gated-")
        # transformers maps only "gated-gelu" to gelu_new; a plain "gelu" is the exact GELU (not computed here)
        activation = "gelu_new" if proj == "gated-gelu" else proj.split("-")[-1]
        if data.get("model_type") != "t5" or activation not in _ACTIVATIONS or data.get("is_decoder", False):
            return None
        return cls(
            vocab_size=int(data["vocab_size"]),
            d_model=int(data["d_model"]),
            d_kv=int(data["d_kv"]),
            num_heads=int(data["num_heads"]),
            num_layers=int(data["num_layers"]),
            d_ff=int(data["d_ff"]),
            gated=gated,
            activation=activation,
            num_buckets=int(data.get("relative_attention_num_buckets", 32)),
            max_distance=int(data.get("relative_attention_max_distance", 128)),
            eps=float(data.get("layer_norm_epsilon", 1e-6)),
        )


class _RMSNorm(nn.Module):
    """T5's layer norm: scale only, variance without the mean, accumulated in fp32."""

    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


def _gelu_new(x: Tensor) -> Tensor:
    """transformers' ``NewGELUActivation`` (the tanh approximation, written out as there)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def _embedding(rows: int, width: int) -> nn.Embedding:
    """An embedding without its random init: the weights are always loaded (and normal_ on the meta device
    would import torch's compiler stack, a second of start-up)."""
    return nn.Embedding(rows, width, _weight=torch.empty(rows, width))


class _Attention(nn.Module):
    def __init__(self, config: T5EncoderConfig, has_bias: bool) -> None:
        super().__init__()
        inner = config.num_heads * config.d_kv
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        if has_bias:
            self.relative_attention_bias = _embedding(config.num_buckets, config.num_heads)
        self.d_kv = config.d_kv

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        shape = (*x.shape[:-1], -1, self.d_kv)
        q, k, v = (proj(x).view(shape).transpose(1, 2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)  # T5 does not scale q.k
        return self.o(out.transpose(1, 2).reshape(*x.shape[:-1], -1).contiguous())


class _SelfAttentionLayer(nn.Module):
    def __init__(self, config: T5EncoderConfig, has_bias: bool) -> None:
        super().__init__()
        self.SelfAttention = _Attention(config, has_bias)
        self.layer_norm = _RMSNorm(config.d_model, config.eps)


class _DenseLayers(nn.Module):
    def __init__(self, config: T5EncoderConfig) -> None:
        super().__init__()
        if config.gated:
            self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
            self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        else:
            self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.gated = config.gated
        self.act = _gelu_new if config.activation == "gelu_new" else torch.relu

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
        return self.wo(hidden)


class _FeedForwardLayer(nn.Module):
    def __init__(self, config: T5EncoderConfig) -> None:
        super().__init__()
        self.DenseReluDense = _DenseLayers(config)
        self.layer_norm = _RMSNorm(config.d_model, config.eps)


class _Block(nn.Module):
    def __init__(self, config: T5EncoderConfig, has_bias: bool) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_SelfAttentionLayer(config, has_bias), _FeedForwardLayer(config)])

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        attn, ff = cast(_SelfAttentionLayer, self.layer[0]), cast(_FeedForwardLayer, self.layer[1])
        x = x + attn.SelfAttention(attn.layer_norm(x), bias)
        return x + ff.DenseReluDense(ff.layer_norm(x))


class _Stack(nn.Module):
    def __init__(self, config: T5EncoderConfig) -> None:
        super().__init__()
        self.block = nn.ModuleList([_Block(config, i == 0) for i in range(config.num_layers)])
        self.final_layer_norm = _RMSNorm(config.d_model, config.eps)


@dataclass
class T5EncoderOutput:
    """What callers of transformers' encoder read: ``last_hidden_state`` ``(B, L, d_model)``."""

    last_hidden_state: Tensor


def _relative_buckets(relative: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """Bidirectional T5 buckets of ``key - query`` positions (``T5Attention._relative_position_bucket``)."""
    num_buckets //= 2
    buckets = (relative > 0).to(torch.long) * num_buckets
    relative = torch.abs(relative)
    max_exact = num_buckets // 2
    large = max_exact + (
        torch.log(relative.float() / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    ).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(relative < max_exact, relative, large)


class T5Encoder(nn.Module):
    """A T5 encoder whose parameter names are transformers' (``shared``, ``encoder.block.N...``)."""

    def __init__(self, config: T5EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.shared = _embedding(config.vocab_size, config.d_model)
        self.encoder = _Stack(config)

    def position_bias(self, length: int, mask: Tensor) -> Tensor:
        """Additive attention mask ``(B, H, L, L)``: the first block's relative bias, dtype-min at padding keys."""
        positions = torch.arange(length, dtype=torch.long, device=mask.device)
        relative = positions[None, :] - positions[:, None]
        buckets = _relative_buckets(relative, self.config.num_buckets, self.config.max_distance)
        first = cast(_SelfAttentionLayer, cast(_Block, self.encoder.block[0]).layer[0]).SelfAttention
        bias = first.relative_attention_bias(buckets).permute([2, 0, 1]).unsqueeze(0)
        keep = mask.bool()[:, None, None, :].expand(-1, 1, length, -1)
        return torch.where(keep, bias, torch.finfo(bias.dtype).min).contiguous()

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> T5EncoderOutput:
        x = self.shared(input_ids)
        bias = self.position_bias(input_ids.shape[1], attention_mask)
        for block in self.encoder.block:
            x = block(x, bias)
        return T5EncoderOutput(self.encoder.final_layer_norm(x))


class FastT5Tokenizer:
    """``tokenizer.json`` through the ``tokenizers`` library, called like transformers' tokenizer by TextEncoder."""

    def __init__(self, path: Path, pad_id: int) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.pad_id = pad_id
        pad_token = self.tokenizer.id_to_token(pad_id)
        if pad_token is None:
            raise ValueError(
                f"{path}: the pad id {pad_id} of config.json is not in the tokenizer's vocabulary"
            )
        self.pad_token = pad_token
        eos = self.tokenizer.token_to_id("</s>")
        if eos is None:
            raise ValueError(f"{path}: the tokenizer has no </s> token, which every T5 prompt ends with")
        self.eos_token_id = eos
        self.model_max_length = (
            512  # TextEncoder sets its own; transformers' attribute, for callers that read it
        )

    @property
    def pad_token_id(self) -> int:
        return self.pad_id

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        """The token strings of ``ids`` (as transformers' tokenizer method of that name)."""
        return [self.tokenizer.id_to_token(i) or "" for i in ids]

    def tokenize(self, text: str) -> list[str]:
        """The token strings of ``text`` without ``</s>`` (as transformers' tokenizer method of that name)."""
        return list(self.tokenizer.encode(text, add_special_tokens=False).tokens)

    def __call__(
        self, prompts: list[str], *, max_length: int, padding: str, truncation: bool, return_tensors: str
    ) -> dict[str, Tensor]:
        if padding != "max_length" or not truncation or return_tensors != "pt":
            raise ValueError(
                "FastT5Tokenizer pads to max_length with truncation and returns torch tensors only"
            )
        # what transformers' tokenizers-backed tokenizer sets for these arguments
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(length=max_length, pad_id=self.pad_id, pad_token=self.pad_token)
        encodings = self.tokenizer.encode_batch(prompts)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask}


def load_local_t5(folder: Path, dtype: torch.dtype) -> tuple[T5Encoder, FastT5Tokenizer] | None:
    """The encoder (weights memory-mapped and assigned, no random init) and tokenizer of a local T5 folder, or
    None when the folder is not one this module computes exactly (then the caller uses transformers).

    Supported: fp32, ``config.json`` of a bidirectional T5 with relu or gelu_new (gated or not), one
    ``model.safetensors``, a ``tokenizer.json`` whose post-processor appends ``</s>``.
    """
    weights, tokenizer_file, config_file = (
        folder / "model.safetensors",
        folder / "tokenizer.json",
        folder / "config.json",
    )
    if dtype != torch.float32 or not (
        weights.is_file() and tokenizer_file.is_file() and config_file.is_file()
    ):
        return None
    data = json.loads(config_file.read_text())
    config = T5EncoderConfig.from_hf(data)
    if config is None:
        return None
    from safetensors.torch import load_file

    state = load_file(str(weights))  # memory-mapped by safetensors
    if "encoder.embed_tokens.weight" in state:  # tied to shared.weight in transformers
        state.pop("encoder.embed_tokens.weight")
    from .checkpoint import assign_state_dict

    with torch.device("meta"):
        model = T5Encoder(config)
    assign_state_dict(model, state, str(weights))
    return model.eval(), FastT5Tokenizer(tokenizer_file, int(data.get("pad_token_id", 0)))
