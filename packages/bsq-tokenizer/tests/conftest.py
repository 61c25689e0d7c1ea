"""Shared helpers for the bsq_tokenizer tests (fixtures live in tests/fixtures, never read from /work/shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
