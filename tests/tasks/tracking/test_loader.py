"""Loading a registered version: shared copies only for callers that only predict."""

import pytest

from tasks.tracking import loader
from tasks.tracking.loader import load_registered
from tests.tasks.tracking.test_registry import _deploy


def test_reuse_shares_one_copy_and_the_registry_is_still_asked(reg_settings, logged_models,
                                                                monkeypatch):
    monkeypatch.setattr(loader, "_loaded", type(loader._loaded)())
    version = _deploy(reg_settings, "reg_loader", logged_models["good"])["version"]
    first = load_registered("reg_loader", version, reg_settings, reuse=True)
    assert load_registered("reg_loader", version, reg_settings, reuse=True) is first
    fresh = load_registered("reg_loader", version, reg_settings)  # serving, infra validation
    assert fresh is not first and fresh.model is not first.model
    assert fresh.run_id == first.run_id == logged_models["good"].run_id
    with pytest.raises(Exception, match="(?i)not found|does not exist|no such"):
        load_registered("reg_loader", "99", reg_settings, reuse=True)


def test_at_most_the_last_versions_are_kept(reg_settings, logged_models, monkeypatch):
    monkeypatch.setattr(loader, "_loaded", type(loader._loaded)())
    monkeypatch.setattr(loader, "CACHED_VERSIONS", 1)
    a = _deploy(reg_settings, "reg_loader_lru", logged_models["good"], "20260301T000000Z")
    b = _deploy(reg_settings, "reg_loader_lru", logged_models["weak"], "20260302T000000Z")
    first = load_registered("reg_loader_lru", a["version"], reg_settings, reuse=True)
    load_registered("reg_loader_lru", b["version"], reg_settings, reuse=True)
    assert len(loader._loaded) == 1
    assert load_registered("reg_loader_lru", a["version"], reg_settings, reuse=True) is not first

