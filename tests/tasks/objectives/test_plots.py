"""Readable plots: distinct train/validation colours, legends, metric titles, big digits."""

import numpy as np
import pytest

from tasks.objectives import plots


def history(n):
    loss = list(np.linspace(1.0, 0.2, n))
    return {"loss": loss, "val_loss": [v + 0.1 for v in loss],
            "accuracy": [1 - v for v in loss], "val_accuracy": [0.9 - v for v in loss]}


@pytest.mark.parametrize("epochs, markers", [(60, False), (8, True)])
def test_learning_curves_colour_by_split_legend_title_markers(epochs, markers):
    fig = plots.curves_figure([("", history(epochs))])
    for ax in fig.axes:
        lines = ax.get_lines()
        colours = {line.get_label(): line.get_color() for line in lines}
        assert colours["train"] != colours["validation"]
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "validation"]
        assert (lines[0].get_marker() not in (None, "None", "")) is markers
        assert ax.get_title().startswith(ax.get_ylabel() + " (last epoch: train ")
    assert fig.axes[1].get_title() == "loss (last epoch: train 0.2, validation 0.3)"
    plots.pyplot().close(fig)


def test_learning_curves_of_two_runs_keep_colour_by_split():
    fig = plots.curves_figure([("candidate", history(5)), ("champion v2", history(5))])
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert lines["candidate train"].get_color() == lines["champion v2 train"].get_color()
    assert lines["candidate train"].get_linestyle() != lines["champion v2 train"].get_linestyle()
    assert lines["candidate train"].get_color() != lines["candidate validation"].get_color()
    plots.pyplot().close(fig)


@pytest.mark.parametrize("n", [3, 10])
def test_confusion_matrix_text_size_scales_and_title_has_accuracy(n):
    m = np.full((n, n), 2) + np.eye(n, dtype=int) * 40
    fig = plots.confusion_figure([("test", {"confusion_matrix": m.tolist()})])
    ax = fig.axes[0]
    texts = [t for t in ax.texts]
    assert len(texts) == n * n
    sizes = {t.get_fontsize() for t in texts}
    assert min(sizes) >= 8.5  # readable at a glance, even for 10 classes
    assert texts[0].get_text() == f"42\n{42 / (42 + 2 * (n - 1)):.0%}"  # count and share
    accuracy = np.trace(m) / m.sum()
    assert ax.get_title().startswith(f"test: accuracy {accuracy:.3f}")
    # shading is the row-normalised share: the image's data is within [0, 1]
    assert ax.images[0].get_array().max() <= 1.0
    plots.pyplot().close(fig)
