"""What the books show of a trained network, as PNGs logged with its training run.

- **First-layer filters** (the books' CNN chapters): the first convolution's kernels as a
  grid of small images (RGB for colour inputs, grey otherwise), each scaled to its own
  range.
- **Feature maps** of one test image: the image, then the first and second convolutions'
  activations (ReLU outputs), one small panel per channel.
- **Augmented training images** (the books' distorted CIFAR-10 and face images): a few
  training images, each beside several draws of the model's own training-time
  augmentation (its random layers called with ``training=True``), as the network sees
  them.

The network is walked layer by layer from its input (nested models included), so any
model whose path to its first convolutions is a chain of layers qualifies; models without
a convolution (or without random layers) get no such picture. Pictures are best-effort:
a model they cannot be drawn for is logged as skipped, never fails the run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from tasks.objectives.plots import pyplot

log = logging.getLogger(__name__)

FILTERS_PNG = "first_layer_filters.png"
FEATURE_MAPS_PNG = "feature_maps.png"
AUGMENTED_PNG = "augmented_training_images.png"
MAX_MAPS = 32


class NotAChain(ValueError):
    """The model's path to a layer is not a plain chain of layers."""


def _children(layer: Any) -> list[Any]:
    return list(getattr(layer, "layers", []) or [])


def flat_layers(model: Any) -> list[Any]:
    """Every layer, nested models expanded, in order."""
    out = []
    for lay in _children(model):
        out.extend(flat_layers(lay) if _children(lay) else [lay])
    return out


def _is_input(layer: Any) -> bool:
    return type(layer).__name__ == "InputLayer"


def _contains(model: Any, target: Any) -> bool:
    return any(lay is target or (_children(lay) and _contains(lay, target))
               for lay in _children(model))


def run_to(model: Any, x: Any, target: Any, training: bool = False) -> Any:
    """``x`` through ``model``'s layers up to and including ``target`` (a chain walk).

    Raises:
        NotAChain: ``target`` is not reached by walking the layers in order.

    """
    for lay in _children(model):
        if _is_input(lay):
            continue
        if lay is target:
            return lay(x, training=training)
        if _children(lay) and _contains(lay, target):
            return run_to(lay, x, target, training)
        x = lay(x, training=training)
    raise NotAChain(f"layer {getattr(target, 'name', target)!r} is not on the model's chain")


def convolutions(model: Any) -> list[Any]:
    """The model's 2-D convolutions, in order."""
    import keras

    return [lay for lay in flat_layers(model) if isinstance(lay, keras.layers.Conv2D)]


def augmentation_layers(model: Any) -> list[Any]:
    """Top-level layers that change the input only while training (random transforms)."""
    return [lay for lay in _children(model)
            if type(lay).__name__.startswith("Random") or type(lay).__name__ in (
                "ImageAugmentation",)]


def _show(img: np.ndarray) -> np.ndarray:
    """An image scaled to [0, 1] for display (grey 2-D or RGB)."""
    a = np.asarray(img, np.float32)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _grid(n: int, cols: int) -> tuple[int, int]:
    cols = min(cols, n)
    return max(1, -(-n // cols)), max(1, cols)


def filter_grid(model: Any, path: Path, title: str = "") -> Path | None:
    """The first convolution's kernels as a grid of images; None without a convolution."""
    convs = convolutions(model)
    if not convs:
        return None
    kernel = np.asarray(convs[0].get_weights()[0])  # (kh, kw, in, out)
    n = kernel.shape[-1]
    rows, cols = _grid(n, 8)
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1 + 0.5),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        k = kernel[..., i]
        img = k if k.shape[-1] == 3 else k[..., 0]
        axes.ravel()[i].imshow(_show(img), cmap=None if img.ndim == 3 else "gray",
                               interpolation="nearest")
    fig.suptitle(f"{title}first convolution: {n} filters "
                 f"{kernel.shape[0]}x{kernel.shape[1]}x{kernel.shape[2]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def feature_maps(model: Any, image: np.ndarray, path: Path, title: str = "") -> Path | None:
    """One image and its first two convolutions' activations; None without a convolution.

    Args:
        model: The trained network.
        image: One input as the network takes it (no batch axis).
        path: Output PNG.
        title: Prefix of the figure title (e.g. the use case and the image's label).

    """
    import tensorflow as tf

    convs = convolutions(model)[:2]
    if not convs:
        return None
    x = tf.constant(np.asarray(image, np.float32)[None])
    maps = [np.asarray(run_to(model, x, c))[0] for c in convs]
    plt = pyplot()
    cols = 8
    rows = [1] + [_grid(min(m.shape[-1], MAX_MAPS), cols)[0] for m in maps]
    height = sum(rows) * 1.15 + 0.6
    fig = plt.figure(figsize=(cols * 1.1, height))
    grid = fig.add_gridspec(sum(rows), cols, left=0.02, right=0.98, bottom=0.01,
                            top=1 - 0.5 / height, hspace=0.35, wspace=0.1)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(_show(np.asarray(image)), cmap=None if np.ndim(image) == 3 and
              np.shape(image)[-1] == 3 else "gray")
    ax.set_title("input", fontsize=7)
    ax.axis("off")
    top = 1
    for conv, m, r in zip(convs, maps, rows[1:], strict=True):
        for i in range(min(m.shape[-1], MAX_MAPS)):
            ax = fig.add_subplot(grid[top + i // cols, i % cols])
            ax.imshow(m[..., i], cmap="viridis", interpolation="nearest")
            ax.axis("off")
            if i == 0:
                ax.set_title(f"{conv.name}: {m.shape[0]}x{m.shape[1]}x{m.shape[-1]}"
                             + (f" (first {MAX_MAPS})" if m.shape[-1] > MAX_MAPS else ""),
                             fontsize=7, loc="left")
        top += r
    fig.suptitle(f"{title}feature maps of one test image", fontsize=9)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def augmented_grid(model: Any, images: np.ndarray, path: Path, draws: int = 5,
                   title: str = "") -> Path | None:
    """Training images and draws of the model's training-time augmentation of them.

    Each row: the image as it enters the augmentation (the layers before it applied),
    then ``draws`` augmented versions (the random layers with ``training=True``). None
    when the model has no random layer at its top level.
    """
    import tensorflow as tf

    aug = augmentation_layers(model)
    if not aug:
        return None
    x = tf.constant(np.asarray(images, np.float32))
    before = x
    for lay in _children(model):  # the layers ahead of the first random one
        if _is_input(lay):
            continue
        if lay is aug[0]:
            break
        before = lay(before, training=False)
    rows = []
    for _ in range(draws):
        rows.append(np.asarray(run_to(model, x, aug[-1], training=True)))
    plt = pyplot()
    n = len(images)
    fig, axes = plt.subplots(n, draws + 1, figsize=((draws + 1) * 1.3, n * 1.35 + 0.5),
                             squeeze=False)
    original = np.asarray(before)
    # One display range for a row (the original's), so brightness changes stay visible.
    for i in range(n):
        lo, hi = float(original[i].min()), float(original[i].max())
        scale = (hi - lo) or 1.0
        for j, img in enumerate([original[i], *(r[i] for r in rows)]):
            a = np.clip((np.asarray(img, np.float32) - lo) / scale, 0, 1)
            ax = axes[i, j]
            ax.imshow(a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a,
                      cmap="gray" if a.ndim == 2 or a.shape[-1] == 1 else None)
            ax.axis("off")
            if i == 0:
                ax.set_title("image" if j == 0 else f"augmented {j}", fontsize=7)
    names = ", ".join(lay.name for lay in aug)
    fig.suptitle(f"{title}training-time augmentation ({names})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def draw_all(model: Any, test_image: np.ndarray | None, train_images: np.ndarray | None,
             out_dir: Path, title: str = "") -> list[Path]:
    """Every picture that applies to ``model``; the PNGs written (best-effort)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    jobs = [("filters", lambda: filter_grid(model, out_dir / FILTERS_PNG, title))]
    if test_image is not None:
        jobs.append(("feature maps", lambda: feature_maps(model, test_image,
                                                          out_dir / FEATURE_MAPS_PNG, title)))
    if train_images is not None and len(train_images):
        jobs.append(("augmented images", lambda: augmented_grid(
            model, train_images, out_dir / AUGMENTED_PNG, title=title)))
    for what, job in jobs:
        try:
            png = job()
        except Exception as exc:  # a picture never fails a run
            log.warning("no %s picture for this model: %s: %s", what, type(exc).__name__, exc)
            continue
        if png is not None:
            made.append(png)
    return made


def first_inputs(dataset: Any, n: int) -> np.ndarray | None:
    """The first ``n`` inputs of a ``(inputs, targets)`` dataset (None if not an array)."""
    for x, _ in dataset.take(1):
        arr = x.numpy() if hasattr(x, "numpy") else None
        return None if arr is None else arr[:n]
    return None


def training_pictures(name: str, model: Any, reader: Any, model_spec: Any, objective: Any,
                      out_dir: Path) -> list[Path]:
    """The pictures of a trained network of one run (filters, maps, augmentation).

    The test image is the test split's first input and the augmented images the training
    split's first eight, as the objective feeds them to the network (unshuffled).
    """
    if not convolutions(model) and not augmentation_layers(model):
        return []
    try:
        test = first_inputs(objective.dataset(reader, model_spec, "test", 1), 1)
        train = first_inputs(objective.dataset(reader, model_spec, "train", 6), 6)
    except Exception as exc:  # pictures are best-effort
        log.warning("no pictures of %s: its inputs could not be read (%s)", name, exc)
        return []
    return draw_all(model, None if test is None or not len(test) else test[0], train,
                    out_dir, title=f"{name}: ")
