"""The package's __version__ is the installed distribution's version (pyproject.toml), not a second copy."""

from importlib.metadata import version

import infinity_train


def test_version_is_the_installed_distributions():
    assert infinity_train.__version__ == version("infinity-train")
