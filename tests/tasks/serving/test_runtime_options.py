"""Runtime extras' settings: defaults, flags over variables, one-line errors."""

import json

import pytest

from tasks.serving.options import OptionError
from tasks.serving.runtime_options import BatchingParameters, RuntimeOptions, parse_rates


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("MLP_SERVE_")]:
        monkeypatch.delenv(key)


def test_defaults_metrics_on_batching_on_logs_off_shadow_all():
    o = RuntimeOptions.from_env()
    assert o.metrics and o.batching == BatchingParameters()
    assert o.batching.max_batch_size == 64 and o.batching.batch_timeout_micros == 0
    assert o.rate(o.log_sample, "mnist") == 0.0
    assert o.rate(o.shadow_sample, "mnist") == 1.0


def test_rates_per_model_with_a_default(monkeypatch):
    assert parse_rates("0.1", "x") == {"*": 0.1}
    assert parse_rates("mnist=1, faces=0.05", "x") == {"mnist": 1.0, "faces": 0.05}
    monkeypatch.setenv("MLP_SERVE_LOG_SAMPLE", "0.2")
    o = RuntimeOptions.from_env(log_requests=["mnist=1"])
    assert (o.rate(o.log_sample, "mnist"), o.rate(o.log_sample, "other")) == (1.0, 0.2)


@pytest.mark.parametrize("text", ["1.5", "mnist=x", "=0.3", "-0.1"])
def test_bad_rates_are_named(text):
    with pytest.raises(OptionError, match="--log-requests .*between 0 and 1"):
        RuntimeOptions.from_env(log_requests=[text])


def test_batching_file_global_and_per_model(tmp_path, monkeypatch):
    path = tmp_path / "batching.json"
    path.write_text(json.dumps({"max_batch_size": 32, "batch_timeout_micros": 500,
                                "models": {"ptb_lm": {"max_batch_size": 4},
                                           "faces": {"enabled": False}}}))
    o = RuntimeOptions.from_env(batching_file=path)
    assert o.batching == BatchingParameters(max_batch_size=32, batch_timeout_micros=500)
    assert o.batching_for("ptb_lm").max_batch_size == 4
    assert o.batching_for("ptb_lm").batch_timeout_micros == 500  # inherited
    assert not o.batching_for("faces").enabled and o.batching_for("mnist").enabled
    monkeypatch.setenv("MLP_SERVE_BATCHING_PARAMETERS", str(path))
    off = RuntimeOptions.from_env(batching=False)
    assert not off.batching.enabled and not off.batching_for("ptb_lm").enabled


@pytest.mark.parametrize(("doc", "fragment"), [
    ("{", "malformed JSON"),
    ('{"max_batch_sise": 8}', "unknown batching parameter(s) ['max_batch_sise']"),
    ('{"max_batch_size": 0}', "max_batch_size must be an integer >= 1"),
    ('{"models": {"m": {"batch_timeout_micros": -1}}}', "model 'm': batch_timeout_micros"),
    ('{"models": []}', "'models' must map"),
])
def test_bad_batching_files_are_named(tmp_path, doc, fragment):
    path = tmp_path / "b.json"
    path.write_text(doc)
    with pytest.raises(OptionError) as err:
        RuntimeOptions.from_env(batching_file=path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_switches_read_their_variables(monkeypatch):
    monkeypatch.setenv("MLP_SERVE_METRICS", "off")
    monkeypatch.setenv("MLP_SERVE_BATCHING", "0")
    o = RuntimeOptions.from_env()
    assert not o.metrics and not o.batching.enabled
    monkeypatch.setenv("MLP_SERVE_METRICS", "maybe")
    with pytest.raises(OptionError, match="MLP_SERVE_METRICS='maybe'"):
        RuntimeOptions.from_env()


def test_mlp_serve_refuses_bad_extras_in_one_line_before_loading_anything(tmp_path, capsys):
    from tasks.cli import main

    assert main(["serve", "--log-requests", "mnist=2"]) == 2
    assert "mlp serve: --log-requests 'mnist=2': expected RATE or NAME=RATE" in (
        capsys.readouterr().err)
    missing = tmp_path / "nope.json"
    assert main(["serve", "--batching-parameters", str(missing)]) == 2
    assert f"cannot read batching parameters {missing}" in capsys.readouterr().err
