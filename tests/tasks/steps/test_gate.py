import pytest

from tasks.spec import GateSpec, SpecError
from tasks.steps.gate import decide

GATE = GateSpec(metric="test_accuracy", min_value=0.8, max_regression=0.01)


def test_first_run_without_champion_uses_value_threshold_only():
    v = decide(GATE, {"test_accuracy": 0.85}, champion=None)
    assert v.passed and "no champion yet" in v.reason


def test_fails_value_threshold():
    v = decide(GATE, {"test_accuracy": 0.79}, champion=None)
    assert not v.passed and "test_accuracy >= 0.8" in v.reason


def test_fails_against_champion():
    v = decide(GATE, {"test_accuracy": 0.85}, champion=0.9, champion_version="3")
    assert not v.passed and "regression vs champion v3" in v.reason


def test_within_tolerance_of_champion_passes():
    assert decide(GATE, {"test_accuracy": 0.895}, champion=0.9, champion_version="3").passed


def test_lower_is_better_direction():
    g = GateSpec(metric="rmse", max_value=10.0, higher_is_better=False, max_regression=0.0)
    assert decide(g, {"rmse": 5.0}, champion=6.0).passed
    assert not decide(g, {"rmse": 6.5}, champion=6.0).passed
    assert not decide(g, {"rmse": 11.0}, champion=None).passed


def test_missing_metric_is_an_error():
    with pytest.raises(KeyError, match="test_accuracy"):
        decide(GATE, {"loss": 1.0}, champion=None)


def test_gate_without_thresholds_is_a_spec_error():
    with pytest.raises(SpecError, match="no value threshold"):
        GateSpec(metric="test_accuracy")


def test_decides_on_the_same_data_figure_never_the_stored_one():
    # Champion stored 0.95 on its own (older) test split, 0.84 on this run's rows.
    v = decide(GATE, {"test_accuracy": 0.85}, champion=0.84, champion_version="3",
               champion_stored=0.95, data={"split": "test", "rows": 10})
    assert v.passed and v.champion == 0.84 and v.champion_stored == 0.95
    assert "on the same test rows (0.8400)" in v.reason
    assert not decide(GATE, {"test_accuracy": 0.85}, champion=0.95, champion_version="3",
                      champion_stored=0.80).passed


def test_champion_that_cannot_answer_these_rows_fails_the_comparison():
    v = decide(GATE, {"test_accuracy": 0.9}, champion=None, champion_version="4",
               champion_error="ValueError: expected shape (None, 3)")
    assert not v.passed
    assert "champion v4 could not be scored on this run's test rows" in v.reason


def test_champion_not_rescorable_is_compared_on_its_stored_figure_and_says_so():
    # Raw-media and text models: the test split cannot be sent to the champion.
    why = "its served model takes raw media files, which the test split does not keep"
    v = decide(GATE, {"test_accuracy": 0.85}, champion=0.95, champion_version="2",
               champion_stored=0.95, champion_other_data=why)
    assert not v.passed
    assert f"stored on its own test split (not the same data: {why}) (0.9500)" in v.reason
    assert decide(GATE, {"test_accuracy": 0.95}, champion=0.95, champion_version="2",
                  champion_other_data=why).passed


def test_baseline_of_the_same_run_must_be_beaten_strictly():
    g = GateSpec(metric="test_perplexity", baseline="baseline_kn_perplexity",
                 higher_is_better=False, max_regression=2.4)
    v = decide(g, {"test_perplexity": 120.0, "baseline_kn_perplexity": 129.0}, champion=None)
    assert v.passed and "test_perplexity < baseline_kn_perplexity (129.0000" in v.reason
    tie = decide(g, {"test_perplexity": 129.0, "baseline_kn_perplexity": 129.0}, champion=None)
    assert not tie.passed
    up = GateSpec(metric="test_accuracy", baseline="majority_accuracy")
    assert not decide(up, {"test_accuracy": 0.5, "majority_accuracy": 0.6}, champion=None).passed
    with pytest.raises(KeyError, match="baseline_kn_perplexity"):
        decide(g, {"test_perplexity": 120.0}, champion=None)


@pytest.mark.parametrize("variant, bar", [("softmax", 0.84), ("dnn", 0.88), ("cnn", 0.916)])
def test_each_mnist_variant_is_gated_on_its_documented_bar(variant, bar):
    from tasks.spec import catalog

    spec = catalog.get("mnist")
    gate = spec.gate_for({"variant": variant})
    assert gate.min_value == bar
    below = decide(gate, {"test_accuracy": bar - 0.005}, None)
    assert not below.passed
    assert f"test_accuracy >= {bar} (the documented bar of the {variant} variant)" in below.reason
    assert decide(gate, {"test_accuracy": bar + 0.001}, None).passed
    assert spec.gate_for({}) == spec.gate_for({"variant": "cnn"})  # the default variant
