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

    Args:
        panels: ``(title, evaluation report)`` pairs; each report holds
            ``confusion_matrix`` and (optionally) ``class_names``, as the evaluation step
            writes them.
        path: Output PNG.

    """
    plt = pyplot()

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 6), squeeze=False)
    for ax, (title, ev) in zip(axes[0], panels, strict=True):
        m = np.asarray(ev["confusion_matrix"])
        names = list(ev.get("class_names") or range(m.shape[0]))
        ax.imshow(m, cmap="Blues")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def learning_curves(
    series: Sequence[tuple[str, Mapping[str, Sequence[float]]]], path: Path
) -> Path | None:
    """Per-epoch curves, one panel per metric family, one colour per run.

    Args:
        series: ``(label, {metric: values per epoch})`` pairs, candidate first.
        path: Output PNG.

    Returns:
        The PNG, or None when no run has a per-epoch history (nothing to draw).

    """
    families = sorted({k.removeprefix("val_") for _, h in series for k in h})
    if not families:
        return None
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 4), squeeze=False)
    for ax, fam in zip(axes[0], families, strict=True):
        for idx, (label, hist) in enumerate(series):
            # Colour = run, line style = training (solid) or validation (dashed).
            for key, style in ((fam, "-"), (f"val_{fam}", "--")):
                if key in hist:
                    ax.plot(range(1, len(hist[key]) + 1), hist[key], color=f"C{idx}",
                            linestyle=style, marker="o", label=f"{label} {key}".strip())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(fam)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_roc_pr(y_true: Any, score: Any, path: Path) -> Path:
    """ROC and precision-recall curves side by side."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    plt = pyplot()
    fpr, tpr, _ = roc_curve(y_true, score)
    prec, rec, _ = precision_recall_curve(y_true, score)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(fpr, tpr)
    a.plot([0, 1], [0, 1], "--", color="grey")
    a.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    b.plot(rec, prec)
    b.set(xlabel="recall", ylabel="precision", title="precision-recall")
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
    a.set(xlabel="actual", ylabel="predicted", title="predicted vs actual")
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
