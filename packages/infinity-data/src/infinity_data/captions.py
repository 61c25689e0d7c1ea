"""Caption choice per sample, as the reference trainer does it (official `infinity/dataset/dataset_t2i_iterable.py`).

With ``dynamic_length`` (and a caption type other than "user_prompt") a random-length prefix of the long
caption's sentences is used, or the short caption with probability ``short_prob``. Without it, the short
caption is used with probability ``short_prob`` when there is one. Anything after a ``--`` is then cut.
"""

from __future__ import annotations

import numpy as np

__all__ = ["choose_caption"]

USER_PROMPT = "user_prompt"


def _join(sentences: list[str]) -> str:
    return ". ".join(sentences) + "."


def choose_caption(
    long_caption: str,
    short_caption: str | None,
    caption_type: str,
    rng: np.random.Generator,
    short_prob: float = 0.0,
    dynamic_length: bool = False,
) -> str:
    """Pick the text a sample is trained with; deterministic given ``rng``.

    Sentences are the non-empty '.'-separated parts of the long caption (re-joined with ". ", ending in
    "."). ``n_short`` = 1 if the first sentence has >= 15 words else 2; the short caption defaults to the
    first ``n_short`` sentences; otherwise the long caption's first ``m`` sentences, m uniform in
    [n_short + 1, #sentences], or the whole caption when it has no more than ``n_short`` sentences.
    """
    if dynamic_length and caption_type != USER_PROMPT:
        sentences = [s.strip() for s in long_caption.split(".") if s.strip()]
        if not sentences:
            text = long_caption
        else:
            n_short = 1 if len(sentences[0].split()) >= 15 else 2
            short = short_caption or _join(sentences[:n_short])
            if rng.random() < short_prob:
                text = short
            elif len(sentences) <= n_short:
                text = long_caption
            else:
                m = int(rng.integers(n_short + 1, len(sentences) + 1))
                text = _join(sentences[:m])
    elif short_caption and rng.random() < short_prob:
        text = short_caption
    else:
        text = long_caption
    head, sep, _ = text.partition("--")
    if sep and head.strip():
        text = head.strip()
    return text
