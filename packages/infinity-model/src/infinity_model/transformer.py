"""The Infinity transformer: text conditioning, next-scale blocks, bitwise head (spec infinity-architecture.md).

Two entry points share every layer:
* `Infinity.forward` — teacher forcing over a whole schedule with the block-causal mask (training, validation);
* `Infinity.forward_scale` — one scale at a time over a KV cache (sampling); queries see all cached keys.
The fp32 path is the reference numerics; under bf16 autocast the text path, embeddings, AdaLN projections,
RoPE and head stay fp32 while the block Linears and attention run in bf16 (as in the reference training).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import torch
from bsq_tokenizer import ScaleSchedule
from bsq_tokenizer.quantizer import bits_to_codes, depth_to_space_bits, space_to_depth, trilinear_resize
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from infinity_model.attention import LayerKV, TextAttentivePool, TextMemory, block_causal_bias, fp32_region
from infinity_model.blocks import AdaLNBeforeHead, BlockChunk, CrossAttnBlock
from infinity_model.condition import TextCondition, packed_positions
from infinity_model.config import InfinityConfig
from infinity_model.rope import rope_cos_sin

__all__ = ["Conditioning", "Infinity", "KVCache", "RMSNorm", "default_cfg_uncond"]

AttnBackend = Literal["auto", "sdpa"]


def default_cfg_uncond(text_maxlen: int, text_channels: int) -> Tensor:
    """The constructor value of `cfg_uncond`: trunc-normal(std 1.2, +-2) from a CPU generator seeded 0, / sqrt(Ct5)."""
    rng = torch.Generator(device="cpu")
    rng.manual_seed(0)
    table = torch.empty(text_maxlen, text_channels, device="cpu")
    nn.init.trunc_normal_(table, std=1.2, a=-2.0, b=2.0, generator=rng)
    return table / math.sqrt(text_channels)


class RMSNorm(nn.Module):
    """y = x * rsqrt(mean(x^2) + eps) * weight, computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


class _Embedding(nn.Embedding):
    """nn.Embedding whose default init is skipped on the meta device (normal_ on meta imports torch._refs)."""

    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()


@dataclass
class Conditioning:
    """Per-prompt quantities computed once per sampler call (`Infinity.prepare`)."""

    cond_BD: Tensor  # (B, D) pooled text: SOS content and AdaLN input
    ada: Tensor  # (B, 1, 6, C) shared AdaLN projection of cond_BD
    memory: TextMemory  # packed cross-attention rows text_proj_for_ca(text_norm(t5)), (sum_len, D)

    @property
    def batch_size(self) -> int:
        return int(self.cond_BD.shape[0])

    def narrow(self, rows: int) -> Conditioning:
        """The first ``rows`` prompts only (e.g. the conditional half of a guided batch)."""
        m = self.memory
        lengths = m.lengths[:rows]
        memory = TextMemory(
            rows=m.rows[: int(lengths.sum())],
            lengths=lengths,
            cu_seqlens=m.cu_seqlens[: rows + 1],
            max_len=int(lengths.max()),
            allow_flash=m.allow_flash,
        )
        return Conditioning(cond_BD=self.cond_BD[:rows], ada=self.ada[:rows], memory=memory)


class KVCache:
    """Self-attention keys/values of every block for the scales run so far, plus cached text K/V, and what
    ``Infinity.forward_scale`` computes once per sampler call (each block's
    :class:`~infinity_model.attention.StepConstants`, the head's AdaLN scale and shift)."""

    def __init__(self, depth: int) -> None:
        self.layers = [LayerKV() for _ in range(depth)]
        self.conditioning: Conditioning | None = None
        self.next_scale = 0
        self.head: tuple[Tensor, Tensor] | None = None  # (1 + scale, shift) of head_nm, (B, 1, C)

    @property
    def seq_len(self) -> int:
        k = self.layers[0].k
        return 0 if k is None else int(k.shape[2])

    def narrow(self, rows: int) -> Conditioning:
        """Keep the first ``rows`` samples (keys, values, text keys/values, conditioning); returns the narrowed
        conditioning, which later ``forward_scale`` calls on this cache must use (sampling without the
        unconditional half at the last scales)."""
        if self.conditioning is None:
            raise ValueError("KVCache.narrow before any scale was run; run scale 0 first")
        cond = self.conditioning.narrow(rows)
        text_rows = int(cond.memory.rows.shape[0])
        for layer in self.layers:
            layer.narrow(rows, text_rows)
        self.conditioning = cond
        self.head = None
        return cond


class Infinity(nn.Module):
    """Bitwise next-scale text-to-image transformer; state_dict() equals the official manifests."""

    def __init__(self, config: InfinityConfig, attn_backend: AttnBackend = "auto") -> None:
        super().__init__()
        if attn_backend not in ("auto", "sdpa"):
            raise ValueError(f"attn_backend must be 'auto' or 'sdpa', got {attn_backend!r}")
        self.config = config
        self.attn_backend = attn_backend
        self.gradient_checkpointing = False
        # RoPE cos/sin per (h, w, grid, head_dim, base, device): derived constants, never written in place
        self._rope_tables: dict[tuple[object, ...], tuple[Tensor, Tensor]] = {}
        c, d_cond, ct5 = config.embed_dim, config.embed_dim, config.text_channels
        self.cfg_uncond = nn.Parameter(torch.empty(config.text_maxlen, ct5))
        self.pos_start = nn.Parameter(torch.empty(1, 1, c))
        self.text_norm = RMSNorm(ct5, eps=config.norm_eps)
        self.text_proj_for_sos = TextAttentivePool(ct5, d_cond, config.pool_num_heads)
        self.text_proj_for_ca = nn.Sequential(
            nn.Linear(ct5, d_cond), nn.GELU(approximate="tanh"), nn.Linear(d_cond, d_cond)
        )
        self.lvl_embed = _Embedding(config.num_levels, c)
        self.word_embed = nn.Linear(config.d_vae, c)
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(d_cond, 6 * c))
        self.head_nm = AdaLNBeforeHead(c, d_cond, config.norm_eps)
        self.head = nn.Linear(c, 2 * config.d_vae)
        rates = torch.linspace(0, config.drop_path_rate, config.depth, device="cpu").tolist()
        blocks = [
            CrossAttnBlock(c, config.num_heads, config.ffn_dim, d_cond, rates[i], config.norm_eps)
            for i in range(config.depth)
        ]
        if config.block_chunks > 1:
            per = config.blocks_per_chunk
            self.block_chunks = nn.ModuleList(
                BlockChunk(blocks[i * per : (i + 1) * per]) for i in range(config.block_chunks)
            )
        else:
            self.blocks = nn.ModuleList(blocks)
        if not self.pos_start.is_meta:
            with torch.no_grad():
                self.cfg_uncond.copy_(default_cfg_uncond(config.text_maxlen, ct5))
                nn.init.trunc_normal_(self.pos_start, std=math.sqrt(1 / (3 * c)))

    # ------------------------------------------------------------------------------------ structure
    @property
    def block_list(self) -> list[CrossAttnBlock]:
        """All blocks in order, whatever the chunking of the state-dict names."""
        if self.config.block_chunks > 1:
            blocks = [blk for chunk in self.block_chunks for blk in cast(BlockChunk, chunk).module]
        else:
            blocks = list(self.blocks)
        return cast("list[CrossAttnBlock]", blocks)

    @property
    def device(self) -> torch.device:
        return self.pos_start.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pos_start.dtype

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in backward (non-reentrant activation checkpointing) while training."""
        self.gradient_checkpointing = enabled

    # ------------------------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(
        self,
        init_std: float | None = None,
        aln: float = 1e-3,
        aln_gamma: float = 5e-6,
        head_scale: float = 0.02,
        rescale_proj: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        """Training-from-scratch init of the official `train.py` / `Infinity.init_weights` (train.sh values as defaults; init_std None -> sqrt(1/(3C))).

        Linear/Embedding weights trunc-normal(init_std, +-2), biases 0, LayerNorm 1/0; then the special init:
        head AdaLN x aln, head x head_scale, SA/CA/FFN output projections x 1/sqrt(2 depth), ada_gss gammas
        x aln_gamma and scales/shifts x aln. Raw parameters (cfg_uncond, pos_start, pool query, ...) keep
        their constructor values.
        """
        std = math.sqrt(1 / (3 * self.config.embed_dim)) if init_std is None else init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(module.weight, std=std, a=-2.0, b=2.0, generator=generator)
                bias = getattr(module, "bias", None)
                if isinstance(bias, Tensor):
                    bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                if module.weight is not None:
                    module.weight.fill_(1.0)
                if module.bias is not None:
                    module.bias.zero_()
        head_ada = self.head_nm.ada_lin[1]
        assert isinstance(head_ada, nn.Linear)
        head_ada.weight.mul_(aln)
        head_ada.bias.zero_()
        self.head.weight.mul_(head_scale)
        self.head.bias.zero_()
        proj_scale = 1 / math.sqrt(2 * self.config.depth)
        for block in self.block_list:
            if rescale_proj:
                block.sa.proj.weight.mul_(proj_scale)
                block.ca.proj.weight.mul_(proj_scale)
                block.ffn.fc2.weight.mul_(proj_scale)
            block.ada_gss[:, :, 0:2, :].mul_(aln_gamma)
            block.ada_gss[:, :, 2:6, :].mul_(aln)

    # ------------------------------------------------------------------------------ conditioning
    def uncond_text(self, lengths: Tensor | Sequence[int]) -> TextCondition:
        """The unconditional prompt rows cfg_uncond[:len_b] for every length (detached)."""
        lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu()
        too_long = lengths > self.config.text_maxlen
        if bool(too_long.any()):
            raise ValueError(
                f"prompt lengths {lengths.tolist()} exceed text_maxlen={self.config.text_maxlen} rows of cfg_uncond"
            )
        rows = self.cfg_uncond.detach()
        return TextCondition(torch.cat([rows[: int(n)] for n in lengths.tolist()], 0), lengths)

    def _text_features(self, text: TextCondition, cond_drop: Tensor | None) -> Tensor:
        """(sum_len, Ct5) features on the model device, with dropped samples replaced by cfg_uncond[:len]."""
        feats = text.features.to(device=self.device, dtype=self.dtype)
        if feats.shape[1] != self.config.text_channels:
            raise ValueError(
                f"text features have {feats.shape[1]} channels but the model expects "
                f"text_channels={self.config.text_channels}"
            )
        if cond_drop is None:
            return feats
        cond_drop = torch.as_tensor(cond_drop, dtype=torch.bool)
        if cond_drop.shape != (text.batch_size,):
            raise ValueError(
                f"cond_drop must be a bool tensor of shape ({text.batch_size},), got {cond_drop.shape}"
            )
        if text.max_len > self.config.text_maxlen:
            raise ValueError(f"prompt of {text.max_len} rows exceeds text_maxlen={self.config.text_maxlen}")
        sample, pos = packed_positions(text.lengths, self.device)
        dropped = cond_drop.to(self.device)[sample]
        return torch.where(dropped[:, None], self.cfg_uncond[pos], feats)

    def _memory(self, rows: Tensor, text: TextCondition) -> TextMemory:
        return TextMemory(
            rows=rows,
            lengths=text.lengths.cpu(),
            cu_seqlens=text.cu_seqlens.to(rows.device),
            max_len=text.max_len,
            allow_flash=self.attn_backend == "auto",
        )

    def _condition(self, text: TextCondition, features: Tensor) -> Conditioning:
        with fp32_region(self.device.type):
            normed = self.text_norm(features)
            cond_BD = self.text_proj_for_sos(self._memory(normed, text))
            ca_rows = self.text_proj_for_ca(normed)
            ada = self.shared_ada_lin(cond_BD).view(-1, 1, 6, self.config.embed_dim)
        return Conditioning(cond_BD=cond_BD, ada=ada, memory=self._memory(ca_rows, text))

    def prepare(self, text: TextCondition) -> Conditioning:
        """text_norm, pooled cond_BD, cross-attention rows and the shared AdaLN output (no condition dropout)."""
        return self._condition(text, self._text_features(text, None))

    # ------------------------------------------------------------------------------------ pieces
    def _embed_bits(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.config.d_vae:
            raise ValueError(
                f"scale inputs have {x.shape[-1]} channels, the model expects d_vae={self.config.d_vae}"
            )
        with fp32_region(self.device.type):
            return self.word_embed(x.to(device=self.device, dtype=self.dtype))

    def _head(self, x: Tensor, cond_BD: Tensor) -> Tensor:
        """(B, l, C) hidden -> (B, l, d, 2) logits, fp32 path (autocast disabled)."""
        with fp32_region(self.device.type):
            constants = self.head_nm.step_constants(cond_BD.to(self.dtype))
        return self._head_step(x, constants)

    def _head_step(self, x: Tensor, constants: tuple[Tensor, Tensor]) -> Tensor:
        """:meth:`_head` with the head's AdaLN constants (``AdaLNBeforeHead.step_constants``) given."""
        with fp32_region(self.device.type):
            logits = self.head(self.head_nm.step(x.to(self.dtype), constants))
        return logits.view(*x.shape[:2], self.config.d_vae, 2)

    def _run_block(self, block: CrossAttnBlock, *args, **kwargs) -> Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False, **kwargs)
        return block(*args, **kwargs)

    # ------------------------------------------------------------------------- teacher forcing
    def forward(
        self,
        text: TextCondition,
        scale_inputs: Tensor,
        schedule: ScaleSchedule,
        cond_drop: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced logits (B, L, d, 2) for every token of `schedule`.

        scale_inputs: (B, L - 1, d) inputs of scales 1..K-1 (see `scale_inputs_from_bits`); the SOS token
        (pooled text + pos_start) is prepended. cond_drop: (B,) bool, samples whose prompt rows are replaced
        by cfg_uncond[:len] before text_norm (classifier-free-guidance training).
        """
        seq_len = schedule.seq_len
        batch = text.batch_size
        if scale_inputs.shape[:2] != (batch, seq_len - 1):
            raise ValueError(
                f"scale_inputs must be (B={batch}, L-1={seq_len - 1}, d) for schedule {schedule.scales}, "
                f"got {tuple(scale_inputs.shape)}"
            )
        self._check_schedule(schedule)
        features = self._text_features(text, cond_drop)
        cond = self._condition(text, features)
        if cond_drop is not None:
            # keep cfg_uncond in the autograd graph even when no sample was dropped (DDP/FSDP unused params)
            cond.memory.rows = cond.memory.rows + 0 * self.cfg_uncond[0, 0]
        with fp32_region(self.device.type):
            sos = cond.cond_BD.unsqueeze(1) + self.pos_start
            x = torch.cat([sos, self._embed_bits(scale_inputs)], dim=1)
            sizes = torch.tensor([h * w for h, w in schedule.scales])
            levels = torch.repeat_interleave(torch.arange(schedule.num_scales), sizes).to(self.device)
            x = x + self.lvl_embed(levels)
        cos, sin = rope_cos_sin(
            schedule.scales, schedule.rope_grid, self.config.head_dim, self.config.rope_base, self.device
        )
        device_type = self.device.type
        attn_dtype = (
            torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else self.dtype
        )
        mask = block_causal_bias(schedule.scales, attn_dtype, self.device)
        for block in self.block_list:
            x = self._run_block(block, x, cond.ada, cond.memory, cos, sin, mask)
        return self._head(x, cond.cond_BD)

    # ------------------------------------------------------------------------------- inference
    def new_cache(self) -> KVCache:
        return KVCache(self.config.depth)

    def forward_scale(
        self,
        cond: Conditioning,
        x: Tensor | None,
        k: int,
        schedule: ScaleSchedule,
        cache: KVCache,
        after_block: Callable[[int, Tensor], Tensor] | None = None,
    ) -> Tensor:
        """Logits (B, h_k*w_k, d, 2) of scale k given its input bits-code x (B, h_k*w_k, d) (None for k = 0).

        Appends this scale's keys/values to `cache`; scales must be run in order 0, 1, ... with one cache per
        sampler call. after_block(i, hidden) may replace the hidden state after block i (CFG on features).
        What does not change from scale to scale (AdaLN modulations, biases, the attention log-scales, the
        head's AdaLN, padded text keys/values, RoPE tables) is computed once per call (RoPE once per model),
        so this is :meth:`forward_scale_reference` with the same operations on the same numbers: the same bits,
        less work per scale (tests/test_fast_step.py).
        """
        hidden = self._scale_input(cond, x, k, schedule, cache)
        blocks = self.block_list
        if cache.head is None:
            for block, layer in zip(blocks, cache.layers, strict=True):
                layer.constants = block.step_constants(cond.ada)
            with fp32_region(self.device.type):
                cache.head = self.head_nm.step_constants(cond.cond_BD.to(self.dtype))
        cos, sin = self._rope_table(schedule, k)
        for i, (block, layer) in enumerate(zip(blocks, cache.layers, strict=True)):
            hidden = block.step(hidden, cond.memory, cos, sin, layer)
            if after_block is not None:
                hidden = after_block(i, hidden)
        cache.next_scale = k + 1
        return self._head_step(hidden, cache.head)

    def forward_scale_reference(
        self,
        cond: Conditioning,
        x: Tensor | None,
        k: int,
        schedule: ScaleSchedule,
        cache: KVCache,
        after_block: Callable[[int, Tensor], Tensor] | None = None,
    ) -> Tensor:
        """:meth:`forward_scale` written plainly: every block's ``forward`` over its cache, every per-call
        constant recomputed at each scale. The readable reference that tests compare ``forward_scale`` with."""
        hidden = self._scale_input(cond, x, k, schedule, cache)
        h, w = schedule.scales[k]
        cos, sin = rope_cos_sin(
            [(h, w)], schedule.rope_grid, self.config.head_dim, self.config.rope_base, self.device
        )
        for i, block in enumerate(self.block_list):
            hidden = block(hidden, cond.ada, cond.memory, cos, sin, None, cache.layers[i])
            if after_block is not None:
                hidden = after_block(i, hidden)
        cache.next_scale = k + 1
        return self._head(hidden, cond.cond_BD)

    def _scale_input(
        self, cond: Conditioning, x: Tensor | None, k: int, schedule: ScaleSchedule, cache: KVCache
    ) -> Tensor:
        """Checks of a cached step, then the embedded input of scale k plus its level embedding."""
        if cache.next_scale != k:
            raise ValueError(
                f"forward_scale(k={k}) but the KV cache holds scales 0..{cache.next_scale - 1}; run scales in "
                "order with a fresh Infinity.new_cache() per sampler call"
            )
        if cache.conditioning is None:
            cache.conditioning = cond
        elif cache.conditioning is not cond:
            raise ValueError("this KV cache was started with another Conditioning; use a fresh cache")
        if not 0 <= k < schedule.num_scales:
            raise ValueError(f"scale index {k} outside schedule of {schedule.num_scales} scales")
        self._check_schedule(schedule)
        h, w = schedule.scales[k]
        with fp32_region(self.device.type):
            if k == 0:
                if x is not None:
                    raise ValueError("scale 0 is the SOS token: pass x=None")
                hidden = cond.cond_BD.unsqueeze(1) + self.pos_start
            else:
                if x is None or x.shape[:2] != (cond.batch_size, h * w):
                    got = None if x is None else tuple(x.shape)
                    raise ValueError(f"scale {k} input must be (B={cond.batch_size}, {h * w}, d), got {got}")
                hidden = self._embed_bits(x)
            return hidden + self.lvl_embed(torch.full((1,), k, dtype=torch.long, device=self.device))

    def _rope_table(self, schedule: ScaleSchedule, k: int) -> tuple[Tensor, Tensor]:
        """RoPE cos/sin of scale k, built once per (scale, grid, device) and kept on the model (read only)."""
        h, w = schedule.scales[k]
        key = (h, w, tuple(schedule.rope_grid), self.device)
        table = self._rope_tables.get(key)
        if table is None:
            table = rope_cos_sin(
                [(h, w)], schedule.rope_grid, self.config.head_dim, self.config.rope_base, self.device
            )
            self._rope_tables[key] = table
        return table

    def _check_schedule(self, schedule: ScaleSchedule) -> None:
        if tuple(schedule.scales[0]) != (1, 1):
            raise ValueError(
                f"the first scale must be the 1x1 start-of-sequence scale, got {schedule.scales[0]} in {schedule.scales}"
            )
        if schedule.num_scales > self.config.num_levels:
            raise ValueError(
                f"schedule has {schedule.num_scales} scales but lvl_embed has {self.config.num_levels} rows "
                "(num_levels); use a shorter schedule"
            )

    # ------------------------------------------------------------------------------ inputs
    def scale_inputs_from_bits(self, bits: Sequence[Tensor], schedule: ScaleSchedule) -> Tensor:
        """Teacher-forcing input (B, L-1, d) from per-scale bits: trilinear down of the accumulated code.

        bits[k]: (B, h_k, w_k, d) transformer-token bits (for the patchified 8B either (B, h_k, w_k, 56) or
        the VAE-side (B, 2h_k, 2w_k, 14)); only scales 0..K-2 are used (K-1 or K entries accepted). fp32.
        """
        scales = schedule.scales
        num = schedule.num_scales
        if len(bits) not in (num - 1, num):
            raise ValueError(f"need {num - 1} or {num} scales of bits for schedule {scales}, got {len(bits)}")
        cfg = self.config
        vae_scales = schedule.vae_scales(cfg.patchify)
        full = vae_scales[-1]
        accumulated: Tensor | None = None
        inputs = []
        for k in range(num - 1):
            # everything kept contiguous: F.interpolate's channels-last kernel rounds differently (an ulp)
            code = bits_to_codes(self._vae_side_bits(bits[k], scales[k], vae_scales[k], k)).contiguous()
            up = trilinear_resize(code, full)
            accumulated = up.contiguous() if accumulated is None else (accumulated + up).contiguous()
            nxt = trilinear_resize(accumulated, vae_scales[k + 1]).squeeze(2)  # (B, c, h', w')
            if cfg.patchify:
                nxt = space_to_depth(nxt)
            inputs.append(nxt.flatten(2).transpose(1, 2))
        if not inputs:
            batch = bits[0].shape[0] if bits else 0
            return torch.zeros(batch, 0, cfg.d_vae)
        return torch.cat(inputs, dim=1)

    def _vae_side_bits(
        self, bits: Tensor, token_hw: tuple[int, int], vae_hw: tuple[int, int], k: int
    ) -> Tensor:
        cfg = self.config
        shape = tuple(bits.shape[1:])
        if shape == (*vae_hw, cfg.vae_channels):
            return bits
        if cfg.patchify and shape == (*token_hw, cfg.d_vae):
            return depth_to_space_bits(bits)
        raise ValueError(
            f"bits of scale {k} have shape {tuple(bits.shape)}; expected (B, {token_hw[0]}, {token_hw[1]}, "
            f"{cfg.d_vae})"
            + (f" or (B, {vae_hw[0]}, {vae_hw[1]}, {cfg.vae_channels})" if cfg.patchify else "")
        )
