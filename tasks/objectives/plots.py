"""Plots shared by training, evaluation and the gate report (PNG files, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (tasks have no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrices(panels: Sequence[tuple[str, Mapping[str, Any]]], path: Path) -> Path:
    """Confusion matrices side by side (candidate first, then the champion if any).

    Shading is row-normalised (the share of each true class predicted as each class, so a
    small class reads as clearly as a large one); each cell shows its count and, below,
    that share. Text size follows the number of classes, so 3 to 10 classes stay
    readable; the title carries the accuracy.

    Args:
        panels: ``(title, evaluation report)`` pairs; each report holds
            ``confusion_matrix`` and (optionally) ``class_names`` and ``test_accuracy``,
            as the evaluation step writes them.
        path: Output PNG.

    """
    plt = pyplot()
    fig = confusion_figure(panels)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def confusion_figure(panels: Sequence[tuple[str, Mapping[str, Any]]]) -> Any:
    """The figure :func:`confusion_matrices` saves (see there)."""
    plt = pyplot()
    n_max = max(len(ev["confusion_matrix"]) for _, ev in panels)
    side = 4.5 + 0.5 * n_max  # inches per panel: 3 classes -> 6, 10 classes -> 9.5
    fig, axes = plt.subplots(1, len(panels), figsize=(side * len(panels) + 1, side),
                             squeeze=False)
    for ax, (title, ev) in zip(axes[0], panels, strict=True):
        m = np.asarray(ev["confusion_matrix"])
        n = m.shape[0]
        names = [str(c) for c in (ev.get("class_names") or range(n))]
        rows = m.sum(axis=1, keepdims=True)
        share = np.divide(m, rows, out=np.zeros(m.shape, float), where=rows > 0)
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        cell = max(8.5, min(16.0, 90.0 / n))  # points: 3 classes -> 16, 10 classes -> 9
        label = max(9.0, min(12.0, 90.0 / n))
        ax.set_xticks(range(n), names, rotation=35 if n > 4 else 0,
                      ha="right" if n > 4 else "center", fontsize=label)
        ax.set_yticks(range(n), names, fontsize=label)
        ax.set_xlabel("predicted class", fontsize=11)
        ax.set_ylabel("true class", fontsize=11)
        accuracy = ev.get("test_accuracy")
        if accuracy is None and m.sum():
            accuracy = float(np.trace(m) / m.sum())
        heading = f"{title}: accuracy {accuracy:.3f}" if accuracy is not None else title
        ax.set_title(f"{heading}\n{int(m.sum())} test rows", fontsize=12)
        for i in range(n):
            for j in range(n):
                dark = share[i, j] > 0.55
                # Many classes: the share only on the diagonal (shading shows the rest).
                text = f"{int(m[i, j])}\n{share[i, j]:.0%}" if i == j or n <= 6 \
                    else f"{int(m[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=cell,
                        linespacing=1.1, color="white" if dark else "black",
                        fontweight="bold" if i == j else "normal",
                        alpha=1.0 if i == j or m[i, j] else 0.45)
        bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        bar.set_label("share of the true class", fontsize=9)
    fig.tight_layout()
    return fig


TRAIN_COLOUR, VALIDATION_COLOUR = "#1f77b4", "#ff7f0e"  # blue, orange
MARKERS_UP_TO = 15  # epochs; longer runs are drawn as plain lines


def learning_curves(
    series: Sequence[tuple[str, Mapping[str, Sequence[float]]]], path: Path
) -> Path | None:
    """Per-epoch curves, one panel per metric, train and validation in distinct colours.

    Colour = split (training blue, validation orange); line style = run (candidate solid,
    the champion dashed) when several runs are compared. Markers only on short runs. Each
    panel's title names the metric and the last values.

    Args:
        series: ``(label, {metric: values per epoch})`` pairs, candidate first.
        path: Output PNG.

    Returns:
        The PNG, or None when no run has a per-epoch history (nothing to draw).

    """
    fig = curves_figure(series)
    if fig is None:
        return None
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return Path(path)


def curves_figure(series: Sequence[tuple[str, Mapping[str, Sequence[float]]]]) -> Any:
    """The figure :func:`learning_curves` saves, or None with nothing to draw."""
    families = sorted({k.removeprefix("val_") for _, h in series for k in h})
    if not families:
        return None
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    styles = ("-", "--", ":", "-.")
    fig, axes = plt.subplots(1, len(families), figsize=(5.5 * len(families), 4.2),
                             squeeze=False)
    for ax, fam in zip(axes[0], families, strict=True):
        finals = []
        for idx, (label, hist) in enumerate(series):
            for key, split, colour in ((fam, "train", TRAIN_COLOUR),
                                       (f"val_{fam}", "validation", VALIDATION_COLOUR)):
                values = hist.get(key)
                if not values:
                    continue
                epochs = range(1, len(values) + 1)
                ax.plot(epochs, values, color=colour, linestyle=styles[idx % len(styles)],
                        linewidth=1.8 if idx == 0 else 1.4, alpha=1.0 if idx == 0 else 0.7,
                        marker="o" if len(values) <= MARKERS_UP_TO else None,
                        markersize=3.5, label=f"{label} {split}".strip())
                if idx == 0:
                    finals.append(f"{split} {values[-1]:.4g}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(fam)
        last = f" (last epoch: {', '.join(finals)})" if finals else ""
        ax.set_title(f"{fam}{last}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_roc_pr(y_true: Any, score: Any, path: Path) -> Path:
    """ROC and precision-recall curves side by side."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = pyplot()
    from sklearn.metrics import average_precision_score, roc_auc_score

    fpr, tpr, _ = roc_curve(y_true, score)
    prec, rec, _ = precision_recall_curve(y_true, score)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(fpr, tpr)
    a.plot([0, 1], [0, 1], "--", color="grey")
    a.set(xlabel="false positive rate", ylabel="true positive rate",
          title=f"ROC (AUC {roc_auc_score(y_true, score):.3f})")
    b.plot(rec, prec)
    b.set(xlabel="recall", ylabel="precision",
          title=f"precision-recall (average precision "
                f"{average_precision_score(y_true, score):.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_residuals(y_true: Any, y_pred: Any, path: Path) -> Path:
    """Predicted vs actual and residuals vs predicted."""
    plt = pyplot()
    y_true, y_pred = np.ravel(y_true), np.ravel(y_pred)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.scatter(y_true, y_pred, s=4, alpha=0.4)
    lims = [min(y_true.min(), y_pred.min()), max(y_true.max(), y_pred.max())]
    a.plot(lims, lims, "--", color="grey")
    rmse = float(np.sqrt(np.mean((y_true - y_pred) ** 2)))
    a.set(xlabel="actual", ylabel="predicted", title=f"predicted vs actual (RMSE {rmse:.4g})")
    b.scatter(y_pred, y_true - y_pred, s=4, alpha=0.4)
    b.axhline(0, color="grey", linestyle="--")
    b.set(xlabel="predicted", ylabel="residual", title="residuals")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_reconstructions(x: Any, recon: Any, path: Path, n: int = 8) -> Path:
    """Input images (top) and their reconstructions (bottom)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, n, figsize=(n * 1.2, 2.6))
    for i in range(n):
        axes[0, i].imshow(x[i], cmap="gray")
        axes[1, i].imshow(recon[i], cmap="gray")
        axes[0, i].axis("off")
        axes[1, i].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def examples_per_class(images: Any, y_true: Any, y_pred: Any, names: Sequence[str],
                       path: Path, per_class: int = 8) -> Path:
    """A grid of test images, one row per class, titled green (right) or red (wrong).

    Args:
        images: (n, h, w, 3) pixels 0-255 (as the model sees them).
        y_true: True class indices.
        y_pred: Predicted class indices.
        names: Class names.
        path: Output PNG.
        per_class: Images shown per class (the first ones of the split).

    """
    plt = pyplot()
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    fig, axes = plt.subplots(len(names), per_class, squeeze=False,
                             figsize=(1.3 * per_class, 1.45 * len(names)))
    for c, row in enumerate(axes):
        idx = np.flatnonzero(y_true[: len(images)] == c)[:per_class]
        for j, ax in enumerate(row):
            ax.axis("off")
            if j >= len(idx):
                continue
            i = idx[j]
            ax.imshow(np.clip(images[i], 0, 255).astype(np.uint8))
            ok = y_pred[i] == c
            ax.set_title(str(names[y_pred[i]])[:14], fontsize=6,
                         color="green" if ok else "red")
        row[0].text(-0.1, 0.5, str(names[c]), transform=row[0].transAxes, ha="right",
                    va="center", fontsize=7)
    fig.suptitle("test images per class (title: prediction; red = wrong)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
