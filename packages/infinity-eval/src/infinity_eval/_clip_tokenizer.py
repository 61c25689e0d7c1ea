"""open_clip's byte-level BPE tokenizer ("SimpleTokenizer", clean="lower"), written without open_clip.

Vocabulary: `bpe_simple_vocab_16e6.txt.gz` (first line a header, then merges; 48,894 merges are used):
256 byte symbols, the same with "</w>", one token per merge, then <start_of_text>, <end_of_text> -> 49,408 ids.
Text: ftfy.fix_text -> html.unescape twice -> strip -> collapse whitespace -> lower-case; split with
open_clip's pattern (needs the `regex` package for \\p{L}/\\p{N}); BPE per piece; wrap in start/end markers;
truncate to the context length keeping <end_of_text> last; pad with 0.
"""

from __future__ import annotations

import gzip
import html
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import torch

__all__ = ["CLIPBPETokenizer"]

_NUM_MERGES = 49152 - 256 - 2
_START, _END = "<start_of_text>", "<end_of_text>"


@lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes), strict=True))


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


def _ftfy_fix_text() -> Callable[[str], str]:
    try:
        import ftfy
    except ImportError as exc:
        raise ImportError(
            "the HPS tokenizer applies ftfy.fix_text like open_clip; install it with "
            "`pip install 'infinity-eval[hps]'` (or pass fix_text=False to skip it, which deviates from the reference)"
        ) from exc
    return ftfy.fix_text


class CLIPBPETokenizer:
    """Byte-level BPE with open_clip's cleaning; `__call__` gives [B, context_length] int64 token ids."""

    def __init__(
        self, merges: Sequence[tuple[str, str]], *, context_length: int = 77, fix_text: bool = True
    ) -> None:
        try:
            import regex
        except ImportError as exc:
            raise ImportError(
                "the HPS tokenizer needs the `regex` package (Unicode classes); `pip install 'infinity-eval[hps]'`"
            ) from exc
        byte_symbols = list(_byte_to_unicode().values())
        vocab = byte_symbols + [s + "</w>" for s in byte_symbols]
        vocab += ["".join(m) for m in merges]
        vocab += [_START, _END]
        self.encoder = {token: index for index, token in enumerate(vocab)}
        self.vocab_size = len(vocab)
        self.bpe_ranks = {tuple(m): rank for rank, m in enumerate(merges)}
        self.start_id = self.encoder[_START]
        self.end_id = self.encoder[_END]
        self.context_length = context_length
        self.fix_text = fix_text
        self._fix_text = _ftfy_fix_text() if fix_text else None
        self._pattern = regex.compile(
            r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
            regex.IGNORECASE,
        )
        self._whitespace = regex.compile(r"\s+")
        self._cache: dict[str, list[str]] = {_START: [_START], _END: [_END]}

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, context_length: int = 77, fix_text: bool = True
    ) -> CLIPBPETokenizer:
        """Read open_clip's `bpe_simple_vocab_16e6.txt.gz` (gzip) or the same text uncompressed."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise FileNotFoundError(f"{p}: cannot read the CLIP BPE vocabulary ({exc})") from exc
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        lines = raw.decode("utf-8").split("\n")
        while lines and not lines[-1]:
            lines.pop()  # a final newline (the official file has far more lines than the merges used)
        lines = lines[1 : _NUM_MERGES + 1]
        merges: list[tuple[str, str]] = []
        for number, line in enumerate(lines, start=2):
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{p}: line {number} is not a BPE merge ('a b'): {line!r}")
            merges.append((parts[0], parts[1]))
        return cls(merges, context_length=context_length, fix_text=fix_text)

    def _clean(self, text: str) -> str:
        if self._fix_text is not None:
            text = self._fix_text(text)
        text = html.unescape(html.unescape(text)).strip()
        return self._whitespace.sub(" ", text).strip().lower()

    def _bpe(self, token: str) -> list[str]:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = (*token[:-1], token[-1] + "</w>")
        pairs = _pairs(word)
        while pairs:
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        result = list(word)
        self._cache[token] = result
        return result

    def encode(self, text: str) -> list[int]:
        """Token ids of the cleaned text, without start/end markers."""
        table = _byte_to_unicode()
        ids: list[int] = []
        for piece in self._pattern.findall(self._clean(text)):
            symbols = "".join(table[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self._bpe(symbols))
        return ids

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """[B, context_length] ids: <start> ids <end>, cut to length with <end> kept last, zero-padded."""
        out = torch.zeros((len(texts), self.context_length), dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.start_id, *self.encode(text), self.end_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.end_id
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out
