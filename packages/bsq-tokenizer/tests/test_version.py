"""The package's __version__ is the installed distribution's version (pyproject.toml), not a second copy."""

from importlib.metadata import version

import bsq_tokenizer


def test_version_is_the_installed_distributions():
    assert bsq_tokenizer.__version__ == version("bsq-tokenizer")
