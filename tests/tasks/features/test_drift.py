"""Drift flags exactly what shifted, and nothing on fresh samples of the same distribution.

Tabular: the synthetic Kaggle credit-card table, one feature multiplied by 3. Images: real
digits (scikit-learn's, in MNIST's format) inverted, with a small softmax model's
predicted classes as the prediction profile. Fresh samples from the same distribution
(5 seeds each) must flag nothing.
"""

import numpy as np
import pytest

from models.creditcard_fraud import SPEC as FRAUD
from models.creditcard_fraud import generate
from models.mnist import SPEC as MNIST
from tasks.features.drift import DriftReport, compare, distances
from tasks.features.profile import bins_of, data_columns, profile
from tasks.spec import DriftSpec, Threshold
from tests.conftest import digits_as_mnist

SEEDS = (11, 12, 13, 14, 15)


def _fraud_rows(tmp_path, rows, seed):
    generate(tmp_path, rows, seed)
    files = FRAUD.source.files(str(tmp_path))
    return list(FRAUD.source.read_batches(files, "all", 4096))


@pytest.fixture(scope="module")
def fraud_reference(tmp_path_factory):
    cols = data_columns(FRAUD.preprocess, FRAUD.source.schema())
    return cols, profile(cols, _fraud_rows(tmp_path_factory.mktemp("ref"), 20000, 0))


def test_distances_are_zero_for_equal_shares_and_large_for_disjoint_ones():
    same = distances([10, 20, 30], [1, 2, 3])
    assert same == {"psi": 0.0, "jensen_shannon": 0.0, "linf": 0.0}
    apart = distances([10, 0], [0, 10])
    assert apart["linf"] == 1.0 and apart["jensen_shannon"] > 0.99 and apart["psi"] > 5


@pytest.mark.parametrize("seed", SEEDS)
def test_fresh_fraud_samples_flag_nothing(tmp_path, fraud_reference, seed):
    cols, ref = fraud_reference
    cur = profile(cols, _fraud_rows(tmp_path, 3000, seed), bins_of(ref))
    report = compare(ref, cur, FRAUD.drift)
    assert [c.name for c in report if c.status != "ok"] == []
    assert max(c.value for c in report) < 0.05  # PSI noise of 3,000 rows: ~0.01


def test_one_fraud_feature_times_three_is_the_only_one_flagged(tmp_path, fraud_reference):
    cols, ref = fraud_reference
    batches = _fraud_rows(tmp_path, 3000, 21)
    for b in batches:
        b["V3"] = b["V3"] * 3
    report = compare(ref, profile(cols, batches, bins_of(ref)), FRAUD.drift)
    assert [(c.name, c.status) for c in report if c.status != "ok"] == [("V3", "fail")]
    assert report[0].metric == "psi" and report[0].value > 0.5


def test_jensen_shannon_and_per_column_thresholds(tmp_path, fraud_reference):
    cols, ref = fraud_reference
    batches = _fraud_rows(tmp_path, 3000, 22)
    for b in batches:
        b["V3"] = b["V3"] * 3
    spec = DriftSpec(numeric_metric="jensen_shannon", columns={"V3": Threshold(0.9)})
    report = compare(ref, profile(cols, batches, bins_of(ref)), spec)
    v3 = next(c for c in report if c.name == "V3")
    assert v3.metric == "jensen_shannon" and v3.status == "ok" and v3.fail is None
    few = compare(ref, profile(cols, [{k: v[:50] for k, v in batches[0].items()
                                       if k != "_bad"}], bins_of(ref)), FRAUD.drift)
    assert {c.status for c in few} == {"not judged"}


@pytest.fixture(scope="module")
def digits_model():
    """Real digits split in a reference half and a pool of fresh samples; a softmax on it."""
    import keras

    from models.mnist import build_model

    data = digits_as_mnist(1000, 797, seed=0)
    keras.utils.set_random_seed(0)
    model = build_model({"variant": "softmax", "learning_rate": 0.01},
                        {"train": {"features": {"image": {"min": 0, "max": 255}}}})
    model.fit(data["train_images"].astype("float32"), data["train_labels"], epochs=5,
              batch_size=64, verbose=0)
    return data, model


def _image_profiles(model, ref_images, new_images):
    from tasks.steps.references import named_outputs, prediction_histograms

    cols = data_columns(MNIST.preprocess, MNIST.source.schema())
    ref = profile(cols, [{"image": ref_images}])
    cur = profile(cols, [{"image": new_images}], bins_of(ref))

    def answers(x):
        return named_outputs(model, model.predict(x.astype("float32"), verbose=0))

    pref = prediction_histograms(answers(ref_images))
    pcur = prediction_histograms(answers(new_images), bins_of(pref))
    report = DriftReport("drift", {}, {})
    report.columns = (compare(ref, cur, MNIST.drift)
                      + compare(pref, pcur, MNIST.drift, prefix="prediction:"))
    return report


@pytest.mark.parametrize("seed", SEEDS)
def test_fresh_digit_samples_flag_nothing(digits_model, seed):
    data, model = digits_model
    pool = data["test_images"]
    fresh = pool[np.random.default_rng(seed).permutation(len(pool))[:400]]
    report = _image_profiles(model, data["train_images"], fresh)
    assert report.flagged == [], report.summary()
    assert {c.name for c in report.columns} == {
        "image.mean", "image.std", "image.pixels", "prediction:probabilities.class"}


def test_inverted_digits_flag_the_images_and_the_predictions(digits_model):
    data, model = digits_model
    report = _image_profiles(model, data["train_images"], 255 - data["test_images"][:400])
    flagged = {c.name for c in report.flagged}
    # Inversion moves brightness and the intensity histogram, not the contrast (std).
    assert flagged == {"image.mean", "image.pixels", "prediction:probabilities.class"}
    assert report.status == "fail"
