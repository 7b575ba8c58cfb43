"""The distribution strategy is configuration: MLP_DISTRIBUTE, MLP_TRAIN_WORKERS, TF_CONFIG."""

import json

import pytest

from tasks.steps import distribute


def _tf_config(index, chief=False):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    if chief:
        cluster["chief"] = ["127.0.0.1:3"]
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def test_default_is_one_process_that_logs(monkeypatch):
    monkeypatch.delenv(distribute.ENV, raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.mode() == "default"
    assert distribute.is_chief() and distribute.local_workers() == 0


def test_multi_worker_without_tf_config_starts_local_workers(monkeypatch):
    monkeypatch.setenv(distribute.ENV, "multi-worker")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setenv(distribute.WORKERS_ENV, "3")
    assert distribute.local_workers() == 3


def test_with_tf_config_only_worker_0_is_chief_unless_a_chief_is_named(monkeypatch):
    monkeypatch.setenv(distribute.ENV, "multi_worker")
    monkeypatch.setenv("TF_CONFIG", _tf_config(0))
    assert distribute.is_chief() and distribute.local_workers() == 0
    monkeypatch.setenv("TF_CONFIG", _tf_config(1))
    assert not distribute.is_chief()
    monkeypatch.setenv("TF_CONFIG", _tf_config(0, chief=True))
    assert not distribute.is_chief()


def test_an_unknown_strategy_is_refused(monkeypatch):
    monkeypatch.setenv(distribute.ENV, "horovod")
    with pytest.raises(ValueError, match="MLP_DISTRIBUTE='horovod'"):
        distribute.mode()
