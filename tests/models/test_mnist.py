import numpy as np
import pytest

from models.mnist import build_model
from tests.conftest import digits_as_mnist

STATS = {"train": {"features": {"image": {"min": 0.0, "max": 255.0}}}}


@pytest.mark.parametrize("variant,params", [("softmax", 7850), ("dnn", 349_390),
                                            ("cnn", 3_274_634)])
def test_architectures_match_the_books(variant, params):
    model = build_model({"variant": variant}, STATS)
    assert model.count_params() == params
    assert tuple(model.input_shape) == (None, 28, 28)
    assert tuple(model.output_shape) == (None, 10)


@pytest.mark.parametrize("variant", ["softmax", "dnn", "cnn"])
def test_loss_falls_on_real_digits(variant):
    import keras

    keras.utils.set_random_seed(0)
    d = digits_as_mnist(256, 0)
    x, y = d["train_images"].astype("float32"), d["train_labels"].astype("int64")
    model = build_model({"variant": variant, "learning_rate": 1e-3}, STATS)
    before = model.evaluate(x, y, verbose=0)[0]
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    after = model.evaluate(x, y, verbose=0)[0]
    assert after < 0.7 * before


def test_normalisation_is_inside_the_model():
    model = build_model({"variant": "softmax"}, {"train": {"features": {"image": {
        "min": 0.0, "max": 255.0}}}})
    layer = model.get_layer("normalise")
    out = layer(np.array([[[0.0] * 28] * 28, [[255.0] * 28] * 28], np.float32)).numpy()
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown mnist variant"):
        build_model({"variant": "rnn"}, STATS)


def test_constant_learning_rate_is_the_param():
    from models.mnist import learning_rate

    assert learning_rate({"learning_rate": 3e-3}, {}) == pytest.approx(3e-3)


def test_warmup_cosine_rises_to_the_peak_then_decays_to_zero():
    from models.mnist import WARMUP_FRACTION, learning_rate

    # 1,000 rows at batch 100 for 5 epochs: 50 steps, the first 5 warming up
    params = {"learning_rate": 2e-3, "lr_schedule": "warmup_cosine", "epochs": 5,
              "batch_size": 100}
    schedule = learning_rate(params, {"train": {"rows": 1000}})
    warmup = round(50 * WARMUP_FRACTION)
    rates = [float(schedule(step)) for step in range(51)]
    assert rates[0] == pytest.approx(2e-4)
    assert all(a < b for a, b in zip(rates[:warmup], rates[1:warmup + 1], strict=True))
    assert rates[warmup] == pytest.approx(2e-3)
    assert all(a >= b for a, b in zip(rates[warmup:-1], rates[warmup + 1:], strict=True))
    assert rates[50] == pytest.approx(0.0, abs=1e-9)


def test_unknown_schedule():
    from models.mnist import learning_rate

    with pytest.raises(ValueError, match="unknown lr_schedule"):
        learning_rate({"lr_schedule": "step"}, {})


def test_mixed_bfloat16_computes_in_bf16_and_keeps_fp32_weights_and_output():
    import keras

    keras.utils.set_random_seed(0)
    model = build_model({"variant": "cnn", "precision": "mixed_bfloat16"}, STATS)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(c.compute_dtype == "bfloat16" for c in convs)
    assert all(w.dtype == "float32" for w in model.weights)
    assert model.count_params() == 3_274_634
    probs = model.predict(np.zeros((2, 28, 28), np.float32), verbose=0)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_mixed_bfloat16_loss_falls_on_real_digits():
    import keras

    keras.utils.set_random_seed(0)
    d = digits_as_mnist(256, 0)
    x, y = d["train_images"].astype("float32"), d["train_labels"].astype("int64")
    model = build_model({"variant": "cnn", "learning_rate": 1e-3,
                         "precision": "mixed_bfloat16"}, STATS)
    before = model.evaluate(x, y, verbose=0)[0]
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0)[0] < 0.7 * before


def test_unknown_precision():
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        build_model({"variant": "cnn", "precision": "fp8"}, STATS)
