"""Tabular inputs: Beam's vocabulary ids equal the served lookup layers', the schema's checks,
request decoding and readable answers."""

import numpy as np
import pytest

from tasks.features.schema import (
    InputError,
    InputSchema,
    check_columns,
    input_schema,
    readable_answers,
    to_model_inputs,
)
from tasks.features.transforms import Analyzer, apply_numpy, tabular_layer
from tasks.spec import Feature

TRAIN = {
    "region": np.array(["north", "south", "north", "east", "north", "south", "west"], object),
    "code": np.array([307, 101, 307, 307, 205, 101, 307], np.int64),
    "minutes": np.array([3.0, 9.5, 20.0, 41.0, 12.0, 7.5, 30.0]),
    "pages": np.array([1, 5, 7, 12, 3, 29, 8], np.int64),
}
FEATURES = [Feature("minutes", "zscore", log1p=True), Feature("pages", "minmax"),
            Feature("region", "onehot", top_k=3), Feature("code", "vocab")]
DTYPES = {"minutes": "float32", "pages": "int64", "region": "string", "code": "int64"}
COLUMNS = {"minutes": {"dtype": "float64", "header": "time on site (min)", "min": 0.0},
           "pages": {"dtype": "int64", "header": "pages/visit", "min": 1, "max": 30},
           "region": {"dtype": "string", "header": "region"},
           "code": {"dtype": "int64", "header": "store code", "values": [101, 205, 307]}}


@pytest.fixture(scope="module")
def stats():
    an = Analyzer(FEATURES, None, False)
    half = {k: v[:4] for k, v in TRAIN.items()}, {k: v[4:] for k, v in TRAIN.items()}
    return an.finish(an.merge([an.add(an.create(), half[0]), an.add(an.create(), half[1])]))


def test_beam_vocabulary_counts_top_k_and_oov(stats):
    region = stats["features"]["region"]
    # Most frequent first, ties by value; top_k=3 leaves "west" (once) to the OOV bucket.
    assert region["vocab"] == ["north", "south", "east"] and region["counts"] == [3, 2, 1]
    assert (region["distinct"], region["oov_rows"]) == (4, 1)
    assert stats["features"]["code"]["vocab"] == ["307", "101", "205"]


def test_served_lookup_ids_equal_beams_oov_included(stats):
    """Parity: the StringLookup/IntegerLookup inside the served model give Beam's ids."""
    import tensorflow as tf

    test = {"region": np.array(["north", "west", "east", "nowhere", "", "south"], object),
            "code": np.array([101, 205, 307, 999, -1, 307], np.int64),
            "minutes": np.array([0.0, 3.0, 99.0, 5.0, 1.0, 2.0]),
            "pages": np.array([1, 2, 3, 40, 5, 6], np.int64)}
    beam = apply_numpy(FEATURES, stats, test)
    layer = tabular_layer(FEATURES, DTYPES, stats)
    served = np.asarray(layer({k: tf.constant(v.astype(str) if v.dtype == object else v)
                               for k, v in test.items()}))
    np.testing.assert_allclose(served, beam, rtol=1e-5, atol=1e-5)
    # The ids themselves, column by column: region one-hot (OOV last), code index.
    region_ids = np.asarray(layer.ids("region", tf.constant(test["region"].astype(str))))
    assert region_ids.tolist() == [0, 3, 2, 3, 3, 1]  # west: beyond top_k -> OOV (3)
    code_ids = np.asarray(layer.ids("code", tf.constant(test["code"])))
    assert code_ids.tolist() == [1, 2, 0, 3, 3, 0] == beam[:, -1].astype(int).tolist()
    # The layer serialises (the exported model carries it) and reloads the same ids.
    again = layer.__class__.from_config(layer.get_config())
    np.testing.assert_array_equal(np.asarray(again.ids("code", tf.constant(test["code"]))),
                                  code_ids)


def test_a_number_transform_on_text_is_refused_with_the_fix(stats):
    from tasks.core.errors import PermanentError

    with pytest.raises(PermanentError, match=r"'region'.*takes numbers but the column holds "
                                             r'text; use Feature\(\'region\', "onehot"\)'):
        tabular_layer([Feature("region", "zscore")], {"region": "string"},
                      {"features": {"region": {"mean": 0, "std": 1}}})


@pytest.fixture(scope="module")
def schema(stats):
    return input_schema(FEATURES, COLUMNS, stats, objective="binary",
                        class_names=("browser", "buyer"), threshold=0.4, label="outcome")


def test_schema_names_limits_and_round_trip(schema):
    assert schema.names == ["time on site (min)", "pages/visit", "region", "store code"]
    minutes = schema.lookup("time_on_site (min)") or schema.lookup("minutes")
    assert minutes.key == "minutes" and minutes.train_min == pytest.approx(3.0)
    assert minutes.train_max == pytest.approx(41.0)  # log1p statistics back in raw units
    assert schema.lookup("store code") is schema.lookup("code")
    assert InputSchema.from_dict(schema.to_dict()) == schema
    described = schema.describe()["inputs"][1]
    assert described == {"name": "pages/visit", "dtype": "int64", "kind": "number",
                         "model_input": "pages", "declared_range": [1, 30],
                         "training_range": [1.0, 29.0]}


def test_named_rows_columns_and_bare_vectors_decode_alike(schema):
    rows = [{"time on site (min)": 10.0, "pages/visit": 4, "region": "north",
             "store code": 307},
            {"minutes": 5, "pages": 2, "region": "east", "code": 101}]  # identifiers too
    named = to_model_inputs(rows, schema)
    bare = to_model_inputs([[10.0, 4, "north", 307], [5, 2, "east", 101]], schema)
    cols = to_model_inputs({"time on site (min)": [10.0, 5], "pages/visit": [4, 2],
                            "region": ["north", "east"], "store code": [307, 101]}, schema,
                           columnar=True)
    legacy = to_model_inputs([{"inputs": [10.0, 4, "north", 307]},
                              {"inputs": [5, 2, "east", 101]}], schema)
    for d in (bare, cols, legacy):
        for k in ("minutes", "pages", "region", "code"):
            np.testing.assert_array_equal(d.inputs[k], named.inputs[k])
    assert named.inputs["minutes"].dtype == np.float32
    assert named.inputs["pages"].dtype == np.int64 and named.inputs["region"].dtype == object
    assert (named.bare, bare.bare, legacy.bare) == (False, True, True)
    assert named.warnings == [[], []] and named.counts == {}


def test_values_outside_the_schema_are_flagged_counted_or_refused(schema):
    rows = [{"time on site (min)": 85.0, "pages/visit": 4, "region": "mars",
             "store code": 999},
            {"time on site (min)": 10.0, "pages/visit": 4, "region": "north"}]
    d = to_model_inputs(rows, schema)
    kinds = [[(w["field"], w["kind"]) for w in ws] for ws in d.warnings]
    assert kinds == [[("time on site (min)", "out_of_range"), ("region", "unseen_category"),
                      ("store code", "unseen_category")],
                     [("store code", "missing")]]
    assert "(allowed: [101, 205, 307])" in d.warnings[0][2]["problem"]
    assert "training range [3, 41]" in d.warnings[0][0]["problem"]
    assert d.counts == {"time on site (min)": {"out_of_range": 1},
                        "region": {"unseen_category": 1},
                        "store code": {"unseen_category": 1, "missing": 1}}
    # A missing category lands in the OOV bucket (a value outside the vocabulary).
    assert d.inputs["code"][1] not in (101, 205, 307)
    with pytest.raises(InputError, match=r"instance 0: field 'time on site \(min\)' = 85.0 "
                                         r"is outside the declared range .* refused") as err:
        to_model_inputs(rows, schema, strict=True)
    assert err.value.counts == d.counts and err.value.instances == 2
    with pytest.raises(InputError, match=r"field 'region' = 'mars' is a category not seen "
                                         r"in training; allowed values: \['north', 'south', "
                                         r"'east'\]"):
        to_model_inputs([{**rows[0], "time on site (min)": 10.0}], schema, strict=True)


@pytest.mark.parametrize(("instances", "message"), [
    ([{"time on site": 1, "pages/visit": 1, "region": "a", "store code": 101}],
     r"unknown field 'time on site' \(did you mean 'time on site \(min\)'\?\)"),
    ([{"time on site (min)": "ten", "pages/visit": 1, "region": "a", "store code": 101}],
     r"field 'time on site \(min\)' takes numbers, got 'ten' \(instance 0\)"),
    ([{"time on site (min)": 1, "pages/visit": 1.5, "region": "a", "store code": 101}],
     r"field 'pages/visit' takes integers, got 1.5"),
    ([{"time on site (min)": 1, "pages/visit": 1, "region": 7, "store code": 101}],
     r"field 'region' takes text, got 7"),
    ([{"time on site (min)": True, "pages/visit": 1, "region": "a", "store code": 101}],
     r"takes numbers, got True"),
    ([[1, 2, "a"]], r"instance 0 has 3 values; the bare vector form takes 4 values in the "
                    r"order \['time on site \(min\)', 'pages/visit', 'region', 'store code'\]"),
    ([{"minutes": 1, "time on site (min)": 2, "pages/visit": 1, "region": "a",
       "store code": 101}], r"gives field 'time on site \(min\)' twice"),
    ([[1, 2, "a", 101], {"region": "a"}], r"instances must all be objects"),
    ([], r"non-empty list"),
])
def test_bad_requests_name_the_field_and_instance(schema, instances, message):
    with pytest.raises(InputError, match=message):
        to_model_inputs(instances, schema)


def test_columnar_form_errors(schema):
    with pytest.raises(InputError, match=r"differ in length: \[1, 2\]"):
        to_model_inputs({"region": ["a"], "pages/visit": [1, 2]}, schema, columnar=True)
    with pytest.raises(InputError, match="unknown field 'zone'"):
        to_model_inputs({"zone": ["a"]}, schema, columnar=True)


def test_readable_answers_per_kind(schema):
    from dataclasses import replace

    binary = readable_answers(np.array([[0.3], [0.9]]), schema)
    assert binary == [{"label": "browser", "probability": 0.3, "threshold": 0.4},
                      {"label": "buyer", "probability": 0.9, "threshold": 0.4}]
    multi = replace(schema, objective="classification", class_names=("a", "b", "c"))
    (one,) = readable_answers(np.array([[0.1, 0.7, 0.2]]), multi)
    assert one["label"] == "b" and one["classes"] == ["a", "b", "c"]
    reg = replace(schema, objective="regression", class_names=())
    assert readable_answers(np.array([[12.5]], np.float32), reg) == [{"value": 12.5}]
    anomaly = replace(schema, objective="anomaly", threshold=0.1)
    assert readable_answers({"score": np.array([0.5]), "flag": np.array([1])}, anomaly) == [
        {"anomaly": True, "score": 0.5, "threshold": 0.1}]
    assert readable_answers(np.zeros((1, 3)), replace(schema, objective="autoencoder")) is None


def test_check_columns_over_test_rows(schema):
    warnings, counts = check_columns(
        {"minutes": np.array([5.0, 500.0], np.float32), "pages": np.array([3, 3]),
         "region": np.array(["north", "west"], object), "code": np.array([101, 205])},
        schema)
    assert counts == {"time on site (min)": {"out_of_range": 1},
                      "region": {"unseen_category": 1}}
    assert warnings[0] == [] and len(warnings[1]) == 2


def test_vocab_ids_can_be_embedded_by_the_model(stats, tmp_path):
    """One-hot or embedding by spec: a ``vocab`` id feeds a learned Embedding."""
    import keras

    from tasks.features.layers import register_all
    from tasks.features.transforms import embedded, output_width

    x = apply_numpy(FEATURES, stats, TRAIN)
    inp = keras.Input(shape=(output_width(FEATURES, stats),))
    h = embedded(inp, FEATURES, stats, dim=3)
    assert h.shape[1] == 1 + 1 + 4 + 3  # minutes, pages, region one-hot, code embedded
    model = keras.Model(inp, keras.layers.Dense(1)(h))
    model.compile("adam", "mse")
    model.fit(x, np.ones(len(x)), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    register_all()
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0))
    assert embedded(inp, FEATURES[:3], stats) is inp  # no vocab feature: unchanged
