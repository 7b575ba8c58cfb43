"""predict(): one eager call for small inputs, traced batches for large ones, same outputs."""

import numpy as np

from tasks.objectives.base import EAGER_ROWS, predict


def _model():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((5,), name="x")
    hidden = keras.layers.Dense(8, activation="relu")(inp)
    return keras.Model(inp, {"p": keras.layers.Dense(3, activation="softmax")(hidden),
                             "z": keras.layers.Dense(1)(hidden)})


def test_small_and_large_inputs_give_the_model_outputs():
    model = _model()
    x = np.random.default_rng(1).normal(size=(EAGER_ROWS + 300, 5)).astype("float32")
    small, large = predict(model, x[:EAGER_ROWS]), predict(model, x, batch_size=512)
    assert set(small) == set(large) == {"p", "z"}
    for k in ("p", "z"):
        assert isinstance(small[k], np.ndarray) and isinstance(large[k], np.ndarray)
        assert small[k].shape[0] == EAGER_ROWS and large[k].shape[0] == EAGER_ROWS + 300
        np.testing.assert_allclose(small[k], large[k][:EAGER_ROWS], rtol=1e-5, atol=1e-6)
    expected = model.predict(x[:10], verbose=0)
    np.testing.assert_allclose(predict(model, x[:10])["p"], expected["p"], rtol=1e-5, atol=1e-6)
