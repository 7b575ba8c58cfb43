"""Histograms on the training split's bins: deciles, top categories, image statistics."""

import numpy as np

from tasks.features.profile import (
    CATEGORICAL,
    OTHER,
    BinSketch,
    Histogram,
    ProfileColumn,
    bin_labels,
    bins_of,
    data_columns,
    merge_histograms,
    output_columns,
    profile,
)
from tasks.spec import Feature, PreprocessSpec


def test_numeric_bins_are_training_deciles_and_counts_cover_every_row():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    col = ProfileColumn("x", "numeric", "x")
    hist = profile([col], [{"x": x[:2000]}, {"x": x[2000:]}])["x"]
    np.testing.assert_allclose(hist["edges"], np.quantile(x, np.arange(1, 10) / 10), atol=0.01)
    assert hist["counts"] == [500] * 10 and hist["rows"] == 5000
    # New data on the same bins: values past the training range land in the open ends.
    new = profile([col], [{"x": np.array([-100.0, 100.0, np.nan])}], bins_of({"x": hist}))
    assert new["x"]["counts"][0] == 1 and new["x"]["counts"][-1] == 1
    assert new["x"]["missing"] == 1 and new["x"]["rows"] == 3


def test_sketch_and_counts_merge_in_any_order():
    rng = np.random.default_rng(1)
    cols = [ProfileColumn("x", "numeric", "x"), ProfileColumn("c", CATEGORICAL, "c")]
    batches = [{"x": rng.exponential(size=3000), "c": rng.choice(["a", "b", "z"], 3000)}
               for _ in range(4)]
    sketch = BinSketch(cols)
    accs = [sketch.add(sketch.create(), b) for b in batches]
    bins = sketch.finish(sketch.merge([sketch.merge(accs[:2]), sketch.merge(accs[2:])]))
    other_order = sketch.finish(sketch.merge(accs[::-1]))
    # Past 8,192 values the sketch is compressed: edges agree within its rank error.
    np.testing.assert_allclose(bins["x"]["edges"], other_order["x"]["edges"], atol=0.005)
    assert bins["c"] == other_order["c"]
    assert bins["c"]["values"][-1] == OTHER and set(bins["c"]["values"]) == {"a", "b", "z",
                                                                             OTHER}
    h = Histogram(cols, bins)
    parts = [h.finish(h.add(h.create(), b)) for b in batches]
    total = merge_histograms(merge_histograms(parts[0], parts[1]),
                             merge_histograms(parts[2], parts[3]))
    assert total == h.finish(h.merge([h.add(h.create(), b) for b in batches]))
    assert sum(total["x"]["counts"]) == 12000 and sum(total["c"]["counts"]) == 12000
    # An unseen category counts as <other>.
    other = profile(cols, [{"x": np.zeros(2), "c": np.array(["new", "a"])}], bins)["c"]
    assert other["counts"][-1] == 1


def test_images_are_profiled_by_brightness_contrast_and_intensity():
    prep = PreprocessSpec(features=(Feature("image", "uint8"),), label="label")
    cols = data_columns(prep, {"image": {"dtype": "uint8", "shape": [28, 28]}})
    assert [c.name for c in cols] == ["image.mean", "image.std", "image.pixels"]
    img = np.zeros((10, 28, 28), np.uint8)
    img[:, :14] = 255
    hist = profile(cols, [{"image": img}])
    assert hist["image.pixels"]["counts"][0] == hist["image.pixels"]["counts"][-1] == 3920
    assert hist["image.pixels"]["rows"] == 10
    assert hist["image.mean"]["edges"] == [127.5]
    assert bin_labels(hist["image.pixels"])[0] == "0-15"


def test_categorical_columns_follow_the_transform_or_the_string_dtype():
    prep = PreprocessSpec(features=(Feature("a", "zscore"), Feature("b", "onehot"),
                                    Feature("c", "identity")), label=None)
    kinds = {c.name: c.kind for c in data_columns(prep, {"c": {"dtype": "string"}})}
    assert kinds == {"a": "numeric", "b": "categorical", "c": "categorical"}
    # Integer-coded categories read alike from CSV ints and JSON floats.
    h = profile([ProfileColumn("b", CATEGORICAL, "b")], [{"b": np.array([1, 2, 2])}])
    again = profile([ProfileColumn("b", CATEGORICAL, "b")], [{"b": np.array([1.0, 2.0])}],
                    bins_of(h))
    assert again["b"]["counts"][:2] == [1, 1]


def test_outputs_are_profiled_as_classes_scores_and_flags():
    proba = np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)
    cols = output_columns({"probabilities": proba, "score": np.array([0.5, 2.0]),
                           "flag": np.array([0, 1]), "class_name": np.array([b"a", b"b"],
                                                                            object)})
    assert list(cols["probabilities.class"]) == ["1", "0"]
    assert cols["score"].dtype == np.float64 and list(cols["flag"]) == ["0", "1"]
    assert list(cols["class_name"]) == ["a", "b"]
    recon = output_columns(np.ones((3, 4, 4)))
    assert list(recon) == ["output.mean"]


def test_a_large_column_in_many_small_batches_keeps_accurate_deciles():
    # 300k values in 1,024-row batches: past the 131,072-value buffer the sketch compacts,
    # and the deciles stay within the sketch's rank error of the exact ones.
    rng = np.random.default_rng(2)
    x = rng.lognormal(size=300_000)
    col = ProfileColumn("x", "numeric", "x")
    sketch = BinSketch([col])
    acc = sketch.create()
    for i in range(0, len(x), 1024):
        acc = sketch.add(acc, {"x": x[i:i + 1024]})
    kept = len(acc["x"]["sketch"][0]) + acc["x"].get("pending_n", 0)
    assert kept <= 2 * 4096 + 32 * 4096 + 1024  # bounded, not 300k
    edges = sketch.finish(acc)["x"]["edges"]
    ranks = np.searchsorted(np.sort(x), edges) / len(x)
    np.testing.assert_allclose(ranks, np.arange(1, 10) / 10, atol=0.002)
    # Merged halves (one still buffering) agree with the single accumulator.
    half = len(x) // 2
    a = sketch.add(sketch.create(), {"x": x[:half]})
    b = sketch.add(sketch.create(), {"x": x[half:]})
    np.testing.assert_allclose(sketch.finish(sketch.merge([a, b]))["x"]["edges"], edges,
                               rtol=0.01)


def test_counting_by_group_equals_counting_each_group_alone():
    """``add_coded`` (one pass, rows tagged by group) == ``add`` on each group's rows."""
    from tasks.features.profile import (
        CATEGORICAL,
        INTENSITY,
        NUMERIC,
        BinSketch,
        Histogram,
        ProfileColumn,
    )

    rng = np.random.default_rng(3)
    n = 500
    x = rng.normal(size=n)
    x[rng.choice(n, 40, replace=False)] = np.nan
    x[:3] = [np.inf, -np.inf, np.nan]
    cols = {"x": x, "k": rng.choice(["a", "b", "c", "d"], n).astype(object),
            "img": rng.integers(0, 256, (n, 4, 4, 1)).astype(np.uint8)}
    columns = [ProfileColumn("x", NUMERIC, "x"), ProfileColumn("k", CATEGORICAL, "k"),
               ProfileColumn("img.mean", NUMERIC, "img", "mean"),
               ProfileColumn("img.pixels", INTENSITY, "img", "pixels")]
    sketch = BinSketch(columns)
    bins = sketch.finish(sketch.add(sketch.create(), cols))
    h = Histogram(columns, bins)
    codes = rng.choice([0, 2], n)  # group 1 absent: no accumulator for it
    got = h.add_coded({}, cols, codes, 3)
    assert sorted(got) == [0, 2]
    for g in (0, 2):
        sel = codes == g
        alone = h.add(h.create(), {k: v[sel] for k, v in cols.items()})
        assert h.finish(got[g]) == h.finish(alone)
    # Accumulating a second batch adds to the same accumulators.
    again = h.add_coded(got, cols, codes, 3)
    assert h.finish(again[0])["x"]["rows"] == 2 * int((codes == 0).sum())
