"""The data-analysis page's histogram picture: one panel per column, one colour per split."""

import numpy as np
from PIL import Image

from tasks.steps.data_analysis import _COLORS, histograms_png


def _hist(counts, missing=0):
    return {"counts": counts, "edges": [1.0, 2.0, 3.0], "kind": "numeric",
            "missing": missing, "rows": sum(counts)}


def _pixels_of(png, hex_colour):
    rgb = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    want = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb.astype(int) - want).sum(axis=1) <= 6).sum())


def test_every_split_is_drawn_in_its_colour_and_sized_by_its_shares(tmp_path):
    stats = {
        "train": {"histograms": {"a": _hist([10, 10, 10, 10]), "b": _hist([40, 0, 0, 0])}},
        "validation": {"histograms": {"a": _hist([1, 1, 1, 1]), "b": _hist([0, 0, 0, 4])}},
        "test": {"histograms": {"a": _hist([0, 0, 0, 0], missing=3),
                                "b": _hist([2, 2, 0, 0])}},
    }
    png = histograms_png(stats, tmp_path / "h.png", "title")
    assert png is not None and png.stat().st_size > 5_000
    drawn = {split: _pixels_of(png, colour) for split, colour in _COLORS.items()}
    assert all(n > 200 for n in drawn.values()), drawn
    # Each panel's y axis ends just above its tallest bar. Panel a: train's and
    # validation's four bars are all that tall, test is all missing; panel b: train and
    # validation one bar each of share 1, test two of share 0.5. In bars of full height:
    # train 5, validation 5, test 1.
    assert drawn["train"] == pytest_approx(drawn["validation"], 0.05)
    assert drawn["test"] == pytest_approx(drawn["train"] / 5, 0.15)


def test_nothing_profiled_draws_nothing(tmp_path):
    assert histograms_png({"train": {}}, tmp_path / "h.png", "t") is None
    assert not (tmp_path / "h.png").exists()


def pytest_approx(value, rel):
    import pytest

    return pytest.approx(value, rel=rel)
