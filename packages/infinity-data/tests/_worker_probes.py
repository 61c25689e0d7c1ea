"""Stand-ins for the converter's chunk function that run inside pool workers.

Workers are started by a fork server, so they import modules afresh and never see a test's monkeypatch:
tests put this folder on ``sys.path`` and patch ``infinity_data.convert._process_chunk`` with one of these
(pickled by name, imported again by the worker).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from infinity_data import convert

POISON = "img0013.jpg"  # the source that kills its worker in crash_on_poison
MARKER = "fresh import"  # a test changes it in its own process; only a forked copy of that process sees it
_process_chunk = convert._process_chunk  # the real one (this module is imported before any patch)


def crash_on_poison(items: list, config: convert.ConvertConfig) -> list:
    """Die like a decoder segfault on POISON; convert everything else normally."""
    if any(item.source == POISON for item in items):
        os._exit(11)
    return _process_chunk(items, config)


def report_marker(items: list, config: convert.ConvertConfig) -> list:
    """Write this worker's view of MARKER to ``<source folder>/../probes/<pid>.json``, then convert."""
    folder = Path(items[0].image_path).parent.parent / "probes"
    folder.mkdir(exist_ok=True)
    (folder / f"{os.getpid()}.json").write_text(json.dumps({"marker": MARKER}), encoding="utf-8")
    return _process_chunk(items, config)


def sleep_after_marker(marker: str, seconds: float) -> None:
    """Create the file ``marker``, then sleep: a busy worker that reads no stop sentinel meanwhile."""
    import time

    Path(marker).touch()
    time.sleep(seconds)
