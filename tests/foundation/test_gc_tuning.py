"""The collector settings ``phx node`` applies once serving (``_foundation/gc_tuning.py``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from phoenix_cluster._foundation.gc_tuning import (
    OLDER_THRESHOLD,
    YOUNG_THRESHOLD,
    tune_for_serving,
)


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_tuning_raises_the_thresholds_and_freezes_what_is_alive() -> None:
    before = gc.get_threshold()
    alive = [object() for _ in range(10)]
    assert tune_for_serving() == before
    assert gc.get_threshold() == (YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
    assert gc.get_freeze_count() > 0
    assert alive  # kept alive across the freeze
