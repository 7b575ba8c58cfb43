"""Agreement measures per model kind, and the kind read from a signature."""

import numpy as np
import pytest

from tasks.serving.shadow import AGREEMENTS, kind_from_signature
from tasks.serving.signature import Signature


def test_classifiers_agree_on_the_most_likely_class():
    a = np.array([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6]])
    b = np.array([[0.3, 0.7], [0.4, 0.6], [0.1, 0.9]])
    assert AGREEMENTS["classification"].measure == "same_class_rate"
    assert AGREEMENTS["classification"].values(a, b).tolist() == [1.0, 0.0, 1.0]
    named = AGREEMENTS["classification"].values({"probabilities": a, "class_name": ["x"] * 3},
                                                {"probabilities": b, "class_name": ["y"] * 3})
    assert named.tolist() == [1.0, 0.0, 1.0]


def test_binary_and_anomaly_models_agree_on_the_flag():
    assert AGREEMENTS["binary"].values(np.array([[0.2], [0.7], [0.5]]),
                                       np.array([[0.4], [0.3], [0.9]])).tolist() == [1, 0, 1]
    ours = {"score": np.array([0.1, 3.0]), "flag": np.array([False, True])}
    theirs = {"score": np.array([0.2, 0.5]), "flag": np.array([False, False])}
    assert AGREEMENTS["anomaly"].measure == "same_flag_rate"
    assert AGREEMENTS["anomaly"].values(ours, theirs).tolist() == [1.0, 0.0]


def test_regressors_measure_the_mean_absolute_difference():
    m = AGREEMENTS["regression"]
    assert m.measure == "mean_abs_diff"
    assert m.values(np.array([[10.0], [2.0]]), np.array([[12.5], [1.0]])).tolist() == [2.5, 1.0]
    recon = AGREEMENTS["autoencoder"].values(np.zeros((2, 2, 2)), np.ones((2, 2, 2)) * 0.5)
    assert recon.tolist() == [0.5, 0.5]


def test_language_models_and_detectors_compare_the_top_ranked_answer():
    ours = {"next": [["of", "the"], ["<eos>", "a"]], "perplexity": np.array([3.0, 4.0])}
    theirs = {"next": np.array([["of", "a"], ["the", "<eos>"]], dtype=object)}
    assert AGREEMENTS["language_model"].values(ours, theirs).tolist() == [1.0, 0.0]
    det = AGREEMENTS["detection"].values({"detection_classes": np.array([[1.0, 2.0]])},
                                         {"detection_classes": np.array([[1.0, 3.0]])})
    assert det.tolist() == [1.0]


@pytest.mark.parametrize(("sig", "kind"), [
    (Signature("pixels", (28, 28), "float32", "probabilities", (10,), "float32"),
     "classification"),
    (Signature("x", (30,), "float32", "score", (), "float32",
               outputs=(("score", (), "float32"), ("flag", (), "bool"))), "anomaly"),
    (Signature("x", (3,), "float32", "y", (1,), "float32"), "regression"),
    (Signature("pixels", (28, 28), "float32", "y", (28, 28), "float32"), "autoencoder"),
    (Signature("text", (), "string", "next", (5,), "string",
               outputs=(("next", (5,), "string"), ("perplexity", (), "float32"))),
     "language_model"),
])
def test_the_kind_of_a_model_without_a_training_run_comes_from_its_signature(sig, kind):
    assert kind_from_signature(sig) == kind
