"""Use-case discovery by module name."""

import pytest

from tasks.spec.catalog import UnknownUseCase, get, names


def test_catalog_finds_use_cases_by_module_name():
    assert "mnist" in names()
    assert get("mnist").gate.metric == "test_accuracy"


def test_unknown_use_case_lists_the_known_ones_and_suggests_a_close_name():
    with pytest.raises(KeyError, match="unknown use case"):
        get("nope")
    with pytest.raises(UnknownUseCase, match="did you mean 'mnist'"):
        get("mnsit")
