"""BERT WordPiece tokenizer (uncased), as BLIP/ImageReward use it, without `transformers`.

Behaviour of the reference `BertTokenizer("bert-base-uncased")` + BLIP's two added special tokens
([DEC] as BOS, [ENC] as extra special token): clean text -> split CJK characters -> NFC -> whitespace split ->
lower-case + strip accents -> split punctuation -> greedy longest-match WordPiece ("##" continuation,
words over 100 characters become [UNK]). Special tokens written in the text are kept whole (case-sensitive).
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["BertWordPieceTokenizer"]

_BASE_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_ADDED_SPECIAL = ("[DEC]", "[ENC]")  # BLIP's init_tokenizer: bos_token [DEC], additional_special_tokens [ENC]
_MAX_CHARS_PER_WORD = 100

_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def _clean(text: str) -> str:
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        out.append(" " if _is_whitespace(ch) else ch)
    return "".join(out)


def _space_cjk(text: str) -> str:
    return "".join(f" {ch} " if _is_cjk(ord(ch)) else ch for ch in text)


def _strip_accents(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")


def _split_punctuation(word: str) -> list[str]:
    pieces: list[str] = []
    current = ""
    for ch in word:
        if _is_punctuation(ch):
            if current:
                pieces.append(current)
                current = ""
            pieces.append(ch)
        else:
            current += ch
    if current:
        pieces.append(current)
    return pieces


class BertWordPieceTokenizer:
    """Uncased WordPiece tokenizer with BLIP's [DEC]/[ENC] tokens appended to the vocabulary.

    `vocab` is the list of `vocab.txt` lines (id = line index). [DEC] and [ENC] get the next two ids unless the
    vocabulary already holds them (bert-base-uncased: 30,522 lines -> [DEC] 30522, [ENC] 30523).
    """

    def __init__(self, vocab: Sequence[str], *, lower_case: bool = True) -> None:
        tokens = list(vocab)
        for special in _BASE_SPECIAL:
            if special not in tokens:
                raise ValueError(
                    f"the WordPiece vocabulary lacks the special token {special}; use bert-base-uncased's vocab.txt"
                )
        for special in _ADDED_SPECIAL:
            if special not in tokens:
                tokens.append(special)
        self.vocab: dict[str, int] = {}
        for index, token in enumerate(tokens):
            self.vocab.setdefault(token, index)
        self.size = len(tokens)
        self.lower_case = lower_case
        self.special_tokens = (*_BASE_SPECIAL, *_ADDED_SPECIAL)
        self._special_pattern = re.compile("(" + "|".join(re.escape(t) for t in self.special_tokens) + ")")
        self.pad_id = self.vocab["[PAD]"]
        self.unk_id = self.vocab["[UNK]"]
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BertWordPieceTokenizer:
        """Read a `vocab.txt` (one token per line, UTF-8)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise FileNotFoundError(f"{p}: cannot read the WordPiece vocabulary ({exc})") from exc
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls([line.rstrip("\r") for line in lines])

    def _basic_tokens(self, text: str) -> list[str]:
        text = unicodedata.normalize("NFC", _space_cjk(_clean(text)))
        words: list[str] = []
        for word in text.split():
            if self.lower_case:
                word = _strip_accents(word.lower())
            words.extend(_split_punctuation(word))
        return " ".join(words).split()

    def _wordpiece(self, word: str) -> list[str]:
        if len(word) > _MAX_CHARS_PER_WORD:
            return ["[UNK]"]
        pieces: list[str] = []
        start = 0
        while start < len(word):
            end = len(word)
            match = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    match = piece
                    break
                end -= 1
            if match is None:
                return ["[UNK]"]
            pieces.append(match)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Text -> WordPiece tokens (no [CLS]/[SEP]); special tokens written in the text stay whole."""
        tokens: list[str] = []
        for chunk in self._special_pattern.split(text):
            if not chunk:
                continue
            if chunk in self.special_tokens:
                tokens.append(chunk)
                continue
            for word in self._basic_tokens(chunk):
                tokens.extend(self._wordpiece(word))
        return tokens

    def encode(self, text: str) -> list[int]:
        """Token ids without [CLS]/[SEP]."""
        return [self.vocab.get(t, self.unk_id) for t in self.tokenize(text)]

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """[CLS] ids [SEP], truncated to `max_length` and padded with [PAD] -> (input_ids, attention_mask), [B, max_length]."""
        if max_length < 2:
            raise ValueError(f"max_length={max_length} leaves no room for [CLS] and [SEP]")
        ids = torch.full((len(texts), max_length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), max_length), dtype=torch.long)
        for row, text in enumerate(texts):
            body = self.encode(text)[: max_length - 2]
            seq = [self.cls_id, *body, self.sep_id]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return ids, mask
