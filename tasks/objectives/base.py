"""What every model kind provides: the :class:`Objective` base class.

An objective owns, for one kind of model, everything the steps must not branch on:

- the training target (:meth:`Objective.target`): the label, or the input itself for
  autoencoders;
- what is chosen on the validation split after fitting (:meth:`Objective.calibrate`, e.g.
  the anomaly threshold), which ships with the model;
- the export head (:meth:`Objective.head`) appended to the served model;
- the test metrics and plots (:meth:`Objective.evaluate`) and the names of the scalar
  metrics it produces (:attr:`Objective.metrics`: a gate must use one of them);
- optionally, what a kind does differently end to end (language models): the batches it
  trains on (:meth:`Objective.dataset`), extra training callbacks
  (:meth:`Objective.callbacks`), and a served model of its own taking other inputs than
  the trained one (:meth:`Objective.serving_model`, :meth:`Objective.serving_example`).

The training and evaluation steps call these in a fixed order; a new kind of model is a
new subclass registered in :mod:`tasks.objectives`, with no edit to the steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tasks.data.tfrecord import DatasetReader
from tasks.spec import ModelSpec

Target = Callable[[Any, Any, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Calibration:
    """What an objective chose on validation: values shipped with the model, and reports.

    Attributes:
        values: Small JSON-able values (e.g. ``{"threshold": 0.01}``), logged as MLflow
            params and passed to :meth:`Objective.head` and :meth:`Objective.evaluate`.
        reports: Artifact path -> JSON-able report logged to MLflow (e.g. the threshold
            table) and written into the training folder.

    """

    values: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalOutput:
    """An objective's evaluation: the full report and the PNGs it drew.

    ``report`` holds scalar metrics (``test_*`` and friends) plus structures such as the
    confusion matrix or per-class figures; scalars become MLflow metrics.
    """

    report: dict[str, Any]
    plots: list[Path] = field(default_factory=list)


class Objective:
    """Base class of the model kinds; subclasses set :attr:`kind` and :attr:`metrics`."""

    kind: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()

    def target(self, model: ModelSpec) -> Target | None:
        """The training target as ``target(x, y, stats)``; None means the label."""
        return model.target

    def calibrate(self, trained: Any, reader: DatasetReader, model: ModelSpec) -> Calibration:
        """Choose what ships with the model on the validation split (default: nothing)."""
        return Calibration()

    def head(self, inputs: Any, outputs: Any, calibration: Mapping[str, Any]) -> Any | None:
        """Outputs of the served model from the transformed inputs and the trained outputs.

        Returns None when the trained model's outputs are served as they are.
        """
        return None

    def evaluate(self, trained: Any, reader: DatasetReader, model: ModelSpec,
                 calibration: Mapping[str, Any], out_dir: Path) -> EvalOutput:
        """Test metrics and plots of the trained model (PNGs written into ``out_dir``)."""
        raise NotImplementedError(f"objective {self.kind!r} does not evaluate")

    def dataset(self, reader: DatasetReader, model: ModelSpec, split: str, batch_size: int,
                shuffle_seed: int | None = None) -> Any:
        """Batched ``(inputs, targets)`` of one split for fitting (default: the target)."""
        return reader.split(split, model.input_key, model.label_key, batch_size,
                            target=self.target(model), shuffle_seed=shuffle_seed)

    def callbacks(self, params: Mapping[str, Any]) -> list[Any]:
        """Keras callbacks added to the fit, before the ones that record the logs."""
        return []

    def serving_model(self, name: str, model: ModelSpec, trained: Any,
                      stats: Mapping[str, Any]) -> Any | None:
        """A served model of the kind's own (e.g. text in), or None for the default."""
        return None

    def serving_example(self, model: ModelSpec, reader: DatasetReader) -> Any | None:
        """Two inputs as a client sends them, for a kind's own served model (or None)."""
        return None


def predictions(trained: Any, reader: DatasetReader, model: ModelSpec,
                split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Labels and model outputs over a whole split, in file order."""
    y_true, pred = [], []
    for x, y in reader.split(split, model.input_key, model.label_key, 1024):
        pred.append(np.asarray(trained.predict_on_batch(x)))
        y_true.append(y.numpy())
    return np.concatenate(y_true), np.concatenate(pred)


def reconstruction_errors(trained: Any, reader: DatasetReader, model: ModelSpec,
                          target: Target, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean squared error between reconstruction and target, and the labels."""
    errors, labels = [], []
    for x, y in reader.split(split, model.input_key, model.label_key, 4096):
        recon = np.asarray(trained.predict_on_batch(x))
        t = np.asarray(target(x, y, reader.stats))
        errors.append(np.mean(np.square(recon - t).reshape(len(recon), -1), axis=1))
        labels.append(y.numpy())
    return np.concatenate(errors), np.concatenate(labels)
