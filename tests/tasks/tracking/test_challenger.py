"""The ``challenger`` alias: deploy with rollout=shadow, set/clear, promote, history, rollback.

Real registry (the test store of ``reg_settings``), real infra validation; the shadow
figures a server logs are exercised end to end in tests/tasks/serving/test_observability.py.
"""

from pathlib import Path

import pytest

from tasks.core.run import RunLayout, Snapshot
from tasks.steps.deploy import deploy
from tasks.steps.validate import check_params
from tasks.tracking.challenger import (
    clear_challenger,
    format_figures,
    promote,
    set_challenger,
    shadow_figures,
)
from tasks.tracking.registry import RegistryError, alias_history, rollback
from tests.tasks.tracking.test_registry import VERDICT, _aliases, trained_of


def _deploy(s, name, logged, run_key, rollout="champion"):
    layout = RunLayout(Path("/data"), name, run_key)
    return deploy(name, trained_of(logged), VERDICT, Snapshot(run_key, "", "a" * 64), layout,
                  s, rollout=rollout).to_xcom()


def _moves(s, name):
    return [(m["action"], m.get("alias"), m["from"], m["version"])
            for m in alias_history(name, s)]


def test_deploy_with_rollout_shadow_moves_challenger_not_champion(reg_settings, logged_models):
    from tasks.tracking import configure

    good, weak = logged_models["good"], logged_models["weak"]
    first = _deploy(reg_settings, "sh_dep", good, "20260301T000000Z", rollout="shadow")
    # Nothing to shadow yet: the first version serves.
    assert (first["alias"], first["version"]) == ("champion", "1")
    second = _deploy(reg_settings, "sh_dep", weak, "20260302T000000Z", rollout="shadow")
    assert (second["alias"], second["version"], second["moved"]) == ("challenger", "2", True)
    assert "mlp promote sh_dep" in second["note"]
    assert _aliases(reg_settings, "sh_dep") == {"champion": "1", "challenger": "2"}
    tags = configure(reg_settings).get_model_version("sh_dep", "2").tags
    assert tags["infra_validation"] == "passed" and tags["gate_passed"] == "true"
    assert _moves(reg_settings, "sh_dep") == [("deploy", "champion", None, "1"),
                                              ("deploy_shadow", "challenger", None, "2")]
    # Re-running the shadow deploy changes nothing.
    again = _deploy(reg_settings, "sh_dep", weak, "20260302T000000Z", rollout="shadow")
    assert again["version"] == "2" and len(alias_history("sh_dep", reg_settings)) == 2
    with pytest.raises(ValueError, match="rollout='canary'"):
        _deploy(reg_settings, "sh_dep", weak, "20260302T000000Z", rollout="canary")


def test_promote_needs_figures_then_moves_aliases_with_history_and_rollback_undoes_it(
        reg_settings, logged_models):
    good, weak = logged_models["good"], logged_models["weak"]
    _deploy(reg_settings, "sh_pro", good, "20260301T000000Z")
    _deploy(reg_settings, "sh_pro", weak, "20260302T000000Z", rollout="shadow")
    fig = shadow_figures("sh_pro", reg_settings)
    assert (fig["challenger"], fig["champion"], fig["measure"]) == ("2", "1", None)
    assert "no shadow figures yet" in format_figures(fig)
    with pytest.raises(RegistryError, match="no shadow figures against champion version 1"):
        promote("sh_pro", reg_settings)
    result = promote("sh_pro", reg_settings, why="INC-3 new model", require_figures=False)
    assert (result["champion"], result["previous"]) == ("2", "1")
    assert _aliases(reg_settings, "sh_pro") == {"champion": "2", "previous": "1"}
    assert _moves(reg_settings, "sh_pro")[-2:] == [("promote", "champion", "1", "2"),
                                                   ("promote", "challenger", "2", "-")]
    with pytest.raises(RegistryError, match="has no challenger"):
        promote("sh_pro", reg_settings)
    assert rollback("sh_pro", reg_settings)["champion"] == "1"
    assert _aliases(reg_settings, "sh_pro")["champion"] == "1"


def test_set_and_clear_challenger_refuse_mistakes(reg_settings, logged_models):
    _deploy(reg_settings, "sh_set", logged_models["good"], "20260301T000000Z")
    _deploy(reg_settings, "sh_set", logged_models["weak"], "20260302T000000Z")  # champion 2
    with pytest.raises(RegistryError, match="version 2 of sh_set is the champion"):
        set_challenger("sh_set", "2", reg_settings)
    with pytest.raises(RegistryError, match="sh_set has no version 7"):
        set_challenger("sh_set", "7", reg_settings)
    with pytest.raises(RegistryError, match="no registered model named 'sh_nope'"):
        set_challenger("sh_nope", "1", reg_settings)
    assert set_challenger("sh_set", "1", reg_settings)["previous_challenger"] is None
    assert clear_challenger("sh_set", reg_settings, why="enough") == "1"
    assert clear_challenger("sh_set", reg_settings) is None
    assert _moves(reg_settings, "sh_set")[-2:] == [("set_challenger", "challenger", None, "1"),
                                                   ("clear_challenger", "challenger", "1", "-")]
    # The champion history that rollback follows ignores the challenger's moves.
    assert rollback("sh_set", reg_settings)["champion"] == "1"


def test_cli_set_challenger_validates_then_promote_refuses_without_figures(
        reg_settings, logged_models, monkeypatch, capsys):
    from tasks.cli import main

    _deploy(reg_settings, "sh_cli", logged_models["good"], "20260301T000000Z")
    _deploy(reg_settings, "sh_cli", logged_models["weak"], "20260302T000000Z")
    monkeypatch.setenv("MLP_HOME", str(reg_settings.root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", reg_settings.tracking_uri)
    assert main(["models", "--set-challenger", "sh_cli/1", "--reason", "retry v1"]) == 0
    assert "version 1 is the challenger (champion version 2)" in capsys.readouterr().out
    assert main(["models", "--set-challenger", "sh_cli"]) == 2
    assert "expected NAME/VERSION" in capsys.readouterr().err
    assert main(["models", "--set-challenger", "sh_cli/2"]) == 1
    assert "is the champion" in capsys.readouterr().err
    assert main(["promote", "sh_cli"]) == 1
    captured = capsys.readouterr()
    assert "no shadow figures yet" in captured.out and "--force" in captured.err
    assert main(["promote", "sh_cli", "--force"]) == 0
    assert "champion is now version 1 (previous is now version 2" in capsys.readouterr().out
    assert main(["models", "--history", "sh_cli"]) == 0
    history = capsys.readouterr().out
    assert "set_challenger" in history and "retry v1" in history and "promote" in history
    assert main(["promote", "sh_never"]) == 1
    assert "no registered model named 'sh_never'" in capsys.readouterr().err


def test_rollout_param_is_checked_before_anything_runs():
    from tasks.spec import catalog

    spec = catalog.get("breast_cancer")
    assert check_params(spec, {"rollout": "shadow"}) == []
    problems = check_params(spec, {"rollout": "canary"})
    assert len(problems) == 1 and "'canary' is not one of champion, shadow" in str(problems[0])


def test_run_summary_says_a_shadow_deploy_went_to_the_challenger():
    from tasks.cli import summary_lines
    from tasks.core.config import settings

    summary = {"use_case": "mnist", "run_key": "20260101T000000Z", "state": "success",
               "run_dir": "/x", "deploy": {"version": "7", "alias": "challenger",
                                           "previous": None, "moved": True,
                                           "note": "shadow-scored against champion version "
                                                   "6; `mlp promote mnist` makes it champion"}}
    text = "\n".join(summary_lines(summary, settings()))
    assert ("registered      mnist version 7 (alias challenger: shadow-scored against "
            "champion version 6; `mlp promote mnist` makes it champion)") in text
