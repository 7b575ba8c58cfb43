"""Registry deploy, lineage tags, rollback, idempotency and ``mlp models``/``mlp rollback``."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tasks.core.run import RunLayout, Snapshot, TrainedModel, Verdict
from tasks.steps.deploy import deploy
from tasks.tracking.registry import (
    RegistryError,
    alias_history,
    champion_stack,
    format_history,
    format_models,
    list_models,
    rollback,
    version_tags,
)

VERDICT = Verdict(passed=True, reason="test_accuracy=0.9 passed", metric="test_accuracy",
                  candidate=0.9, champion=None, champion_version=None, checks=[])


def trained_of(logged):
    """The training step's result for a logged fixture model."""
    return TrainedModel(run_id=logged.run_id, experiment_id="0", model_uri=logged.model_uri,
                        model_path="", trained_path="", params={}, params_digest="",
                        train_seconds=0.0)


def _deploy(s, name, logged, run_key="20260301T000000Z", verdict=VERDICT):
    layout = RunLayout(Path("/data"), name, run_key)
    return deploy(name, trained_of(logged), verdict, Snapshot(run_key, "", "a" * 64), layout,
                  s).to_xcom()


def test_champion_moves_only_forward_unless_forced_or_rolled_back(reg_settings,
                                                                   logged_models):
    good, weak, older = (logged_models[k] for k in ("good", "weak", "uint8"))
    assert _deploy(reg_settings, "reg_fwd", good, "20260301T000000Z")["version"] == "1"
    assert _deploy(reg_settings, "reg_fwd", weak, "20260302T000000Z")["moved"] is True
    # Re-running the first run reuses its version and leaves production alone.
    rerun = _deploy(reg_settings, "reg_fwd", good, "20260301T000000Z")
    assert (rerun["version"], rerun["moved"], rerun["created"]) == ("1", False, False)
    assert "registered before the champion" in rerun["note"]
    assert _aliases(reg_settings, "reg_fwd") == {"champion": "2", "previous": "1"}
    # A backfill of an earlier date gets a new version, not production.
    backfill = _deploy(reg_settings, "reg_fwd", older, "20260201T000000Z")
    assert (backfill["version"], backfill["moved"]) == ("3", False)
    assert "earlier logical date" in backfill["note"]
    assert _aliases(reg_settings, "reg_fwd")["champion"] == "2"
    # An operator may force it, with a reason; rollback still works.
    forced = replace(VERDICT, forced=True, force_reason="INC-9 revert")
    assert _deploy(reg_settings, "reg_fwd", older, "20260201T000000Z", forced)["moved"]
    assert _aliases(reg_settings, "reg_fwd") == {"champion": "3", "previous": "2"}
    rollback("reg_fwd", reg_settings)
    assert _aliases(reg_settings, "reg_fwd")["champion"] == "2"


def _moves(s, name):
    return [(m["action"], m["from"], m["version"]) for m in alias_history(name, s)]


@pytest.mark.parametrize("operator_move", ["rollback", "rollback_to", "forced_deploy"])
def test_a_rerun_never_undoes_an_operators_move(reg_settings, logged_models, operator_move):
    """Issue 19: rerunning a run whose version was champion leaves the aliases alone."""
    name = f"reg_hold_{operator_move}"
    good, weak, older = (logged_models[k] for k in ("good", "weak", "uint8"))
    _deploy(reg_settings, name, good, "20260101T000000Z")  # v1
    _deploy(reg_settings, name, weak, "20260102T000000Z")  # v2 champion
    if operator_move == "rollback":
        rollback(name, reg_settings)
        expect = "1"
    elif operator_move == "rollback_to":
        _deploy(reg_settings, name, older, "20260103T000000Z")  # v3 champion
        rollback(name, reg_settings, to="1")
        expect = "1"
    else:  # the operator forces the first run's version back
        forced = replace(VERDICT, forced=True, force_reason="INC-3 revert")
        assert _deploy(reg_settings, name, good, "20260101T000000Z", forced)["moved"]
        expect = "1"
    history = _moves(reg_settings, name)
    assert _aliases(reg_settings, name)["champion"] == expect
    # Rerun every later run: none moves production, none is recorded as a move.
    for logged, key in ((weak, "20260102T000000Z"), (older, "20260103T000000Z")):
        if operator_move != "rollback_to" and logged is older:
            continue
        rerun = _deploy(reg_settings, name, logged, key)
        assert (rerun["moved"], rerun["created"]) == (False, False), rerun
        assert "re-running its run does not undo that" in rerun["note"], rerun["note"]
        assert f"champion stays version {expect}" in rerun["note"]
        assert _aliases(reg_settings, name)["champion"] == expect
    if operator_move == "forced_deploy":  # a replay of the forced run itself, after a
        rollback(name, reg_settings, to="2")  # rollback, does not force it again
        history = _moves(reg_settings, name)
        replay = _deploy(reg_settings, name, good, "20260101T000000Z", forced)
        assert replay["moved"] is False and "already forced" in replay["note"]
        assert _aliases(reg_settings, name)["champion"] == "2"
        new_word = replace(forced, force_reason="INC-4 revert again")
        assert _deploy(reg_settings, name, good, "20260101T000000Z", new_word)["moved"]
        assert _moves(reg_settings, name)[len(history):] == [("force", "2", "1")]
        return
    assert _moves(reg_settings, name) == history
    # The operator's explicit word still moves it.
    rollback(name, reg_settings, to="2")
    assert _aliases(reg_settings, name)["champion"] == "2"


def test_a_killed_deploy_is_still_promoted_by_its_retry(reg_settings, logged_models):
    """Registered but killed before the alias moved: the retry promotes it once."""
    from tasks import tracking

    name = "reg_retry"
    _deploy(reg_settings, name, logged_models["good"], "20260101T000000Z")
    client = tracking.configure(reg_settings)
    from mlflow import register_model  # the version exists, no alias moved (the kill)

    register_model(logged_models["weak"].model_uri, name)
    retry = _deploy(reg_settings, name, logged_models["weak"], "20260102T000000Z")
    assert (retry["version"], retry["created"], retry["moved"]) == ("2", False, True)
    assert _aliases(reg_settings, name)["champion"] == "2"
    # Killed between the alias move and its record: the rerun records it late, once.
    client.set_registered_model_alias(name, "champion", "1")
    assert _deploy(reg_settings, name, logged_models["good"], "20260101T000000Z")["note"] \
        == "version 1 already is champion"
    assert _moves(reg_settings, name)[-1] == ("deploy_recorded_late", "2", "1")


def test_a_version_missing_lineage_tags_is_repaired_on_redeploy(reg_settings, logged_models):
    from tasks import tracking

    _deploy(reg_settings, "reg_repair", logged_models["good"])
    client = tracking.configure(reg_settings)
    client.delete_model_version_tag("reg_repair", "1", "data_checksum")  # a killed deploy
    again = _deploy(reg_settings, "reg_repair", logged_models["good"])
    assert again["created"] is False
    assert client.get_model_version("reg_repair", "1").tags["data_checksum"] == "a" * 64


def _aliases(s, name):
    from tasks import tracking

    return {k: str(v) for k, v in tracking.configure(s).get_registered_model(name)
            .aliases.items()}


def test_deploy_tags_then_rollback_swaps_champion_and_previous(reg_settings, logged_models):
    from tasks import tracking

    first = _deploy(reg_settings, "reg_roll", logged_models["good"], "20260301T000000Z")
    assert first == {"model": "reg_roll", "version": "1", "alias": "champion",
                     "previous": None, "created": True, "forced": False, "moved": True,
                     "note": ""}
    second = _deploy(reg_settings, "reg_roll", logged_models["weak"], "20260302T000000Z")
    assert (second["version"], second["previous"]) == ("2", "1")
    assert _aliases(reg_settings, "reg_roll") == {"champion": "2", "previous": "1"}

    mv = tracking.configure(reg_settings).get_model_version("reg_roll", "2")
    assert mv.tags["run_key"] == "20260302T000000Z"
    assert mv.tags["data_checksum"] == "a" * 64
    assert mv.tags["preprocessing_stats"] == \
        "file:///data/runs/reg_roll/20260302T000000Z/dataset/stats.json"
    assert len(mv.tags["git_commit"]) in (40, len("unknown"))
    assert mv.tags["gate_passed"] == "true" and mv.tags["gate_metric"] == "test_accuracy"
    assert mv.tags["mlflow_run_id"] == logged_models["weak"].run_id
    assert "forced_by_operator" not in mv.tags

    assert rollback("reg_roll", reg_settings) == {"model": "reg_roll", "champion": "1",
                                                  "previous": None, "demoted": "2"}
    assert _aliases(reg_settings, "reg_roll") == {"champion": "1"}
    demoted = tracking.configure(reg_settings).get_model_version("reg_roll", "2")
    assert demoted.tags["demoted_by_rollback"] == "true"
    # A second rollback does not roll forward: there is nothing further back.
    with pytest.raises(RegistryError, match="no earlier champion"):
        rollback("reg_roll", reg_settings)
    assert _aliases(reg_settings, "reg_roll") == {"champion": "1"}


def test_rolling_back_twice_goes_two_versions_back_and_history_lists_every_move(
        reg_settings, logged_models, monkeypatch):
    monkeypatch.setenv("MLP_OPERATOR", "alice")
    for day, logged in enumerate(("weak", "good", "uint8", "autoencoder"), start=1):
        _deploy(reg_settings, "reg_hist", logged_models[logged], f"2026030{day}T000000Z")
    assert _aliases(reg_settings, "reg_hist") == {"champion": "4", "previous": "3"}
    assert rollback("reg_hist", reg_settings)["champion"] == "3"
    assert _aliases(reg_settings, "reg_hist") == {"champion": "3", "previous": "2"}
    assert rollback("reg_hist", reg_settings, why="INC-7 drift")["champion"] == "2"
    assert _aliases(reg_settings, "reg_hist") == {"champion": "2", "previous": "1"}
    # --to jumps to any version; the next rollback returns from it
    assert rollback("reg_hist", reg_settings, to="4") == {
        "model": "reg_hist", "champion": "4", "previous": "2", "demoted": "2"}
    assert rollback("reg_hist", reg_settings)["champion"] == "2"
    assert rollback("reg_hist", reg_settings, to="1")["champion"] == "1"
    with pytest.raises(RegistryError, match="no earlier champion"):
        rollback("reg_hist", reg_settings)
    with pytest.raises(RegistryError, match="has no version 9"):
        rollback("reg_hist", reg_settings, to="9")
    with pytest.raises(RegistryError, match="already champion"):
        rollback("reg_hist", reg_settings, to="1")

    moves = alias_history("reg_hist", reg_settings)
    assert [(m["action"], m["from"], m["version"]) for m in moves] == [
        ("deploy", None, "1"), ("deploy", "1", "2"), ("deploy", "2", "3"),
        ("deploy", "3", "4"), ("rollback", "4", "3"), ("rollback", "3", "2"),
        ("rollback_to", "2", "4"), ("rollback", "4", "2"), ("rollback_to", "2", "1")]
    assert [m["seq"] for m in moves] == list(range(1, 10))
    assert {m["who"] for m in moves} == {"alice"}
    assert moves[0]["why"] == VERDICT.reason and moves[5]["why"] == "INC-7 drift"
    assert all(m["when"].startswith("20") for m in moves)
    table = format_history("reg_hist", moves).splitlines()
    assert table[0].split() == ["SEQ", "WHEN", "ACTION", "ALIAS", "FROM", "TO", "WHO", "WHY"]
    assert len(table) == 10 and "INC-7 drift" in table[6]


def test_forced_deploys_are_recorded_with_the_operator_reason(reg_settings, logged_models):
    layout = RunLayout(Path("/data"), "reg_force", "20260301T000000Z")
    forced = replace(VERDICT, passed=False, forced=True, force_reason="INC-9 hotfix")
    deploy("reg_force", trained_of(logged_models["weak"]), forced,
           Snapshot("20260301T000000Z", "", "a" * 64), layout, reg_settings)
    (move,) = alias_history("reg_force", reg_settings)
    assert (move["action"], move["why"]) == ("force", "INC-9 hotfix")


def test_champion_stack_replays_moves():
    def mv(action, version):
        return {"alias": "champion", "action": action, "version": version}

    assert champion_stack([mv("deploy", "1"), mv("deploy", "2"), mv("deploy", "2")]) == [
        "1", "2"]
    assert champion_stack([mv("deploy", "1"), mv("deploy", "2"), mv("deploy", "3"),
                           mv("rollback_to", "1"), mv("deploy", "4")]) == ["1", "4"]
    # A champion set outside the history (no recorded move) is the bottom of the stack.
    assert champion_stack([{**mv("promote", "2"), "from": "1"}]) == ["1", "2"]


def test_rollback_needs_a_previous_version(reg_settings, logged_models):
    _deploy(reg_settings, "reg_single", logged_models["good"])
    with pytest.raises(RegistryError, match="no earlier champion"):
        rollback("reg_single", reg_settings)
    with pytest.raises(RegistryError, match="no registered model named 'reg_nope'"):
        rollback("reg_nope", reg_settings)


def test_redeploying_the_same_run_creates_no_version(reg_settings, logged_models):
    from tasks import tracking

    _deploy(reg_settings, "reg_idem", logged_models["weak"], "20260301T000000Z")
    _deploy(reg_settings, "reg_idem", logged_models["good"], "20260302T000000Z")
    again = _deploy(reg_settings, "reg_idem", logged_models["good"], "20260302T000000Z")
    assert again["version"] == "2" and again["created"] is False
    assert again["previous"] is None  # champion re-deployed over itself: nothing demoted
    versions = tracking.configure(reg_settings).search_model_versions("name='reg_idem'")
    assert len(versions) == 2
    assert _aliases(reg_settings, "reg_idem") == {"champion": "2", "previous": "1"}


def test_models_listing_has_aliases_and_gate_metric(reg_settings, logged_models):
    _deploy(reg_settings, "reg_list", logged_models["weak"], "20260301T000000Z")
    _deploy(reg_settings, "reg_list", logged_models["good"], "20260302T000000Z")
    rows = [r for r in list_models(reg_settings) if r["model"] == "reg_list"]
    assert [(r["version"], r["aliases"]) for r in rows] == [("2", ["champion"]),
                                                             ("1", ["previous"])]
    assert rows[0]["metric"] == "test_accuracy"
    assert rows[0]["value"] == pytest.approx(logged_models["good"].accuracy)
    assert rows[1]["value"] == pytest.approx(logged_models["weak"].accuracy)
    table = format_models(rows)
    assert table.splitlines()[0].split()[:4] == ["MODEL", "VERSION", "ALIASES", "METRIC"]
    assert f"reg_list  2        champion  test_accuracy  {rows[0]['value']:.4f}" in table


def test_cli_models_and_rollback(reg_settings, logged_models, monkeypatch, capsys):
    from tasks.cli import main

    _deploy(reg_settings, "reg_cli", logged_models["weak"], "20260301T000000Z")
    _deploy(reg_settings, "reg_cli", logged_models["good"], "20260302T000000Z")
    # The CLI reads its settings from the environment, like an operator's shell.
    monkeypatch.setenv("MLP_HOME", str(reg_settings.root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", reg_settings.tracking_uri)

    assert main(["rollback", "reg_cli"]) == 0
    assert "reg_cli: champion is now version 1 (version 2 demoted; no earlier champion " \
           "left)" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["model"] == "reg_cli"]
    assert {r["version"]: r["aliases"] for r in rows} == {"2": [], "1": ["champion"]}
    assert main(["rollback", "reg_cli"]) == 1
    assert "no earlier champion" in capsys.readouterr().err
    assert main(["rollback", "reg_cli", "--to", "2", "--reason", "back to the new one"]) == 0
    assert "champion is now version 2 (version 1 demoted; previous is now version 1)" in (
        capsys.readouterr().out)
    assert main(["models", "--history", "reg_cli"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in lines[1:]] == ["deploy", "deploy", "rollback",
                                                      "rollback_to"]
    assert lines[-1].endswith("back to the new one")
    assert main(["models"]) == 0
    assert "reg_cli" in capsys.readouterr().out
    assert main(["rollback", "reg_never_registered"]) == 1
    assert "no registered model named" in capsys.readouterr().err


def test_version_tags_mark_forced_deploys_only():
    plain = version_tags(VERDICT, "k", "c", "u", "r", "g")
    assert "forced_by_operator" not in plain and plain["gate_value"] == "0.9"
    forced = version_tags(replace(VERDICT, forced=True, force_reason="INC-1"),
                          "k", "c", "u", "r", "g")
    assert forced["forced_by_operator"] == "true" and forced["force_reason"] == "INC-1"
