"""Shared helpers for the bsq_tokenizer tests (fixtures live in tests/fixtures, never read from /work/shared)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    """Tiny convolutions run fastest on one thread; several threads on busy shared cores mostly spin."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
