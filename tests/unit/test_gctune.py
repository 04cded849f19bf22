"""`sender run` freezes start-up objects and widens the collector's thresholds."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sender.runtime.gctune import SERVING_THRESHOLDS, tune_for_serving


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_tuning_freezes_what_is_alive_and_sets_the_serving_thresholds() -> None:
    gc.unfreeze()

    tune_for_serving()

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == SERVING_THRESHOLDS
