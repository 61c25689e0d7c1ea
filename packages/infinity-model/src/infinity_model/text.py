"""T5 text path (official `tools/run_infinity.py`, `encode_prompt`): prompts -> packed fp32 T5 features as a :class:`TextCondition`.

The released models use the encoder of google/flan-t5-xl (width 2048). Weights and tokenizer are read from a
local folder; nothing is downloaded unless the caller passes a hub id *and* ``allow_download=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .condition import TextCondition

__all__ = ["TextEncoder"]

logger = logging.getLogger(__name__)

T5_MAX_LENGTH = 512
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")


def _check_local_folder(folder: Path) -> None:
    """Raise FileNotFoundError naming what a T5 folder lacks (config, weights or tokenizer)."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in folder.iterdir()):
        missing.append("model weights (*.safetensors or *.bin)")
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        missing.append("a tokenizer (tokenizer.json or spiece.model)")
    if missing:
        raise FileNotFoundError(
            f"text encoder folder {folder} is missing {', '.join(missing)}; it must hold a T5 encoder and its "
            "tokenizer as written by save_pretrained (for the released models: google/flan-t5-xl)"
        )


class TextEncoder:
    """A frozen T5 encoder plus its tokenizer that turns prompts into a packed :class:`TextCondition`.

    Every prompt is tokenized with ``max_length`` (512), padding to ``max_length``, truncation, and encoded with
    its attention mask; the features are cast to fp32 and each sample keeps its first ``len_i`` rows
    (``len_i`` = number of non-pad tokens, including the closing ``</s>``).
    """

    def __init__(self, model: nn.Module, tokenizer, max_length: int = T5_MAX_LENGTH) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        allow_download: bool = False,
        max_length: int = T5_MAX_LENGTH,
    ) -> TextEncoder:
        """Load a T5 encoder and tokenizer from a local folder (or, only with ``allow_download``, a hub id).

        ``dtype`` defaults to fp16 on CUDA (as the reference runs flan-t5-xl) and fp32 elsewhere. A hub id is
        first looked up in the local Hugging Face cache; the network is used only when ``allow_download=True``.
        """
        device = torch.device(device)
        if dtype is None:
            dtype = torch.float16 if device.type == "cuda" else torch.float32
        folder = Path(path).expanduser()
        if folder.is_dir():
            _check_local_folder(folder)
            from .t5_encoder import load_local_t5  # plain torch, same bits, no transformers import (start-up)

            local = load_local_t5(folder, dtype)
            if local is not None:
                logger.info("loaded T5 encoder from %s (plain-torch path, %s, %s)", folder, dtype, device)
                return cls(local[0].to(device), local[1], max_length=max_length)
            source, local_only = str(folder), True
        elif folder.exists():
            raise NotADirectoryError(
                f"text encoder path {folder} is a file; pass the folder that holds config.json, the weights "
                "and the tokenizer of the T5 encoder"
            )
        else:
            source, local_only = str(path), not allow_download
        from transformers import AutoTokenizer, T5EncoderModel

        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, legacy=True)
            model: nn.Module = T5EncoderModel.from_pretrained(
                source, local_files_only=local_only, dtype=dtype
            )
        except OSError as err:
            if local_only and not folder.is_dir():
                raise FileNotFoundError(
                    f"text encoder {path!r} is neither a local folder nor in the local Hugging Face cache; pass "
                    "the folder of a downloaded google/flan-t5-xl, or allow_download=True (CLI: "
                    "--allow-download) to fetch that hub id"
                ) from err
            raise
        tokenizer.model_max_length = max_length
        logger.info("loaded T5 encoder from %s (%s, %s)", source, dtype, device)
        return cls(model.to(device), tokenizer, max_length=max_length)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        """Feature width Ct5 (2048 for flan-t5-xl)."""
        config: Any = self.model.config  # a transformers T5Config
        return int(config.d_model)

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, both ``(B, max_length)`` int64."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not a single string; wrap it in a list")
        if len(prompts) == 0:
            raise ValueError("prompts is empty; pass at least one prompt")
        batch = self.tokenizer(
            list(prompts),
            max_length=self.max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        return batch["input_ids"], batch["attention_mask"]

    @torch.no_grad()
    def encode_padded(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 features ``(B, max_length, Ct5)`` and the attention mask ``(B, max_length)`` on the model device."""
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        features = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return features.float(), mask

    def encode(self, prompts: Sequence[str]) -> TextCondition:
        """Packed :class:`TextCondition` of the prompts (rows of sample i = its len_i non-pad tokens)."""
        features, mask = self.encode_padded(prompts)
        return TextCondition.from_padded(features, mask)

    __call__ = encode
