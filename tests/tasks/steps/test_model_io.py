"""Source columns <-> a served model's inputs, through the model's own signature."""

import numpy as np
import pytest

from models.creditcard_fraud import SPEC as FRAUD
from models.creditcard_fraud import V_COLUMNS
from models.mnist import SPEC as MNIST
from tasks.steps.model_io import InputMismatch, served_inputs, source_columns


def _model(inputs):
    import keras

    ins = [keras.Input(shape, dtype=dtype, name=name) for name, shape, dtype in inputs]
    flat = [keras.layers.Flatten()(keras.layers.Reshape((-1,))(i)) if len(i.shape) > 2
            else keras.layers.Reshape((-1,))(i) for i in ins]
    x = flat[0] if len(flat) == 1 else keras.layers.Concatenate()(flat)
    return keras.Model(ins if len(ins) > 1 else ins[0], keras.layers.Dense(1)(x))


def _fraud_cols(n=3):
    rng = np.random.default_rng(0)
    return {c: rng.normal(size=n) for c in V_COLUMNS}


def test_a_packed_tabular_input_gets_the_features_in_order_and_back():
    cols = _fraud_cols()
    x = served_inputs(FRAUD, _model([("inputs", (28,), "float32")]), cols)
    assert x.shape == (3, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 2], cols["V3"].astype(np.float32))
    back = source_columns(FRAUD, {"inputs": x.tolist()})
    np.testing.assert_allclose(back["V3"], cols["V3"], rtol=1e-6)


def test_one_input_per_raw_column_gets_named_arrays():
    cols = _fraud_cols()
    model = _model([(c, (), "float32") for c in V_COLUMNS])
    x = served_inputs(FRAUD, model, cols)
    assert sorted(x) == sorted(V_COLUMNS) and x["V1"].dtype == np.float32
    assert set(source_columns(FRAUD, {c: v.tolist() for c, v in x.items()})) == set(V_COLUMNS)
    with pytest.raises(InputMismatch, match="no \\['V28'\\]"):
        served_inputs(FRAUD, model, {k: v for k, v in cols.items() if k != "V28"})


def test_an_image_model_takes_the_input_column_whatever_its_name():
    images = np.zeros((2, 28, 28), np.uint8)
    x = served_inputs(MNIST, _model([("pixels", (28, 28), "float32")]), {"image": images})
    assert x.dtype == np.float32 and x.shape == (2, 28, 28)
    assert set(source_columns(MNIST, {"pixels": x.tolist()})) == {"image"}
