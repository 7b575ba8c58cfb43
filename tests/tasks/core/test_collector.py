"""The garbage collector's thresholds for one-shot processes."""

from __future__ import annotations

import gc

import pytest

from tasks.core import collector


@pytest.fixture
def thresholds():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_tune_raises_the_first_threshold_from_cpythons_default(thresholds):
    gc.set_threshold(*collector.DEFAULT_THRESHOLDS)
    collector.tune()
    assert gc.get_threshold() == collector.THRESHOLDS
    assert gc.isenabled()


def test_tune_keeps_thresholds_a_process_set_itself(thresholds):
    gc.set_threshold(5000, 20, 20)
    collector.tune()
    assert gc.get_threshold() == (5000, 20, 20)
