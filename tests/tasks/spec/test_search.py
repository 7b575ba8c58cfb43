"""Search spaces on run params: mlp validate names every bad one; Optuna gets the same space."""

from dataclasses import replace

import pytest

from tasks.cli import main
from tasks.spec import Choice, IntRange, LogUniform, RunParam, TuneSpec, Uniform, catalog
from tasks.spec.search import problems
from tasks.steps.validate import validate


@pytest.mark.parametrize(("param", "expected"), [
    (RunParam(0.01, "number", "lr", minimum=1e-6, maximum=1.0, search=LogUniform(1e-7, 0.1)),
     "below the param's minimum"),
    (RunParam(0.01, "number", "lr", maximum=1.0, search=Uniform(0.1, 2.0)),
     "above the param's maximum"),
    (RunParam(0.01, "number", "lr", search=LogUniform(0.0, 0.1)), "log-scale search needs low > 0"),
    (RunParam(0.01, "number", "lr", search=Uniform(0.5, 0.1)), "low must be below high"),
    (RunParam(16, "integer", "batch", search=Uniform(8, 64)), "integer: search it with IntRange"),
    (RunParam(0.1, "number", "x", search=IntRange(1, 5)), "IntRange draws integers"),
    (RunParam(16, "integer", "batch", minimum=1, search=Choice((0, 16))),
     "below the param's minimum"),
    (RunParam(16, "integer", "batch", search=Choice((8, "16"))), "not of the param's type"),
    (RunParam("cnn", "string", "variant", enum=("dnn", "cnn"), search=Choice(("dnn", "rnn"))),
     "not one of the param's values"),
    (RunParam(0.1, "number", "x", search={"low": 0, "high": 1}), "not a known distribution"),
])
def test_a_bad_search_space_is_named(param, expected):
    found = problems("p", param)
    assert any(expected in text for text in found), found


def test_good_spaces_and_params_without_one_pass():
    assert problems("lr", RunParam(0.01, "number", "lr", minimum=1e-6, maximum=1.0,
                                   search=LogUniform(1e-4, 0.1))) == []
    assert problems("b", RunParam(16, "integer", "b", search=IntRange(8, 64, step=8))) == []
    assert problems("v", RunParam("dnn", "string", "v", enum=("dnn", "cnn"),
                                  search=Choice(("dnn", "cnn")))) == []
    assert problems("e", RunParam(3, "integer", "e")) == []


def test_mlp_validate_reports_the_spec_field_and_exits_2(monkeypatch, capsys):
    spec = catalog.get("breast_cancer")
    params = dict(spec.params)
    params["learning_rate"] = replace(params["learning_rate"], search=LogUniform(1e-3, 50.0))
    bad = replace(spec, params=params, tune=TuneSpec(direction="up"))
    fields = [p.field for p in validate(bad, {})]
    assert "models/breast_cancer.py params['learning_rate'].search" in fields
    assert "models/breast_cancer.py tune.direction" in fields
    monkeypatch.setattr(catalog, "get", lambda name: bad)
    assert main(["validate", "breast_cancer"]) == 2
    err = capsys.readouterr().err
    assert "params['learning_rate'].search: search high 50 is above the param's maximum 10" in err


def test_the_spec_space_becomes_optunas():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from tasks.steps.tune import distributions

    d = distributions(catalog.get("breast_cancer"))
    assert d["learning_rate"] == FloatDistribution(1e-3, 0.3, log=True)
    assert d["batch_size"] == CategoricalDistribution([8, 16, 32, 64])
    # Every tunable shipped use case's space is valid (mlp validate runs the same check).
    for name in catalog.names():
        spec = catalog.get(name)
        for key, p in spec.params.items():
            assert problems(key, p) == [], (name, key)
