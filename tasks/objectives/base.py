"""What every model kind provides: the :class:`Objective` base class.

An objective owns, for one kind of model, everything the steps must not branch on:

- the training target (:meth:`Objective.target`): the label, or the input itself for
  autoencoders;
- what is chosen on the validation split after fitting (:meth:`Objective.calibrate`, e.g.
  the anomaly threshold), which ships with the model;
- the export head (:meth:`Objective.head`) appended to the served model;
- the test metrics and plots of a *served* model's answers (:meth:`Objective.score`)
  and the names of the scalar metrics it produces (:attr:`Objective.metrics`: a gate must
  use one of them); :meth:`Objective.evaluate` scores the trained model plus its head on
  the transformed features the same way (ablation arms, and kinds whose served model
  takes other inputs than the test rows hold);
- optionally, what a kind does differently end to end (language models): the batches it
  trains on (:meth:`Objective.dataset`), extra training callbacks
  (:meth:`Objective.callbacks`), and a served model of its own taking other inputs than
  the trained one (:meth:`Objective.serving_model`, :meth:`Objective.serving_example`).

:meth:`Objective.score` judges what ships: it gets the outputs of an exported model (raw
inputs in, the head's answers out) on a :class:`TestRows`, so the evaluation step scores
the candidate and the current champion on the same rows with the same code
(:meth:`Objective.scores_served_rows` says whether a kind's served model takes those rows).

The training and evaluation steps call these in a fixed order; a new kind of model is a
new subclass registered in :mod:`tasks.objectives`, with no edit to the steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tasks.data.tfrecord import PACKED, DatasetReader
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


@dataclass(frozen=True)
class TestRows:
    """One split three ways: as a client sends it, as the trained model sees it, labels.

    Attributes:
        split: Split name (``test``).
        raw: The served model's inputs (raw units; images: raw pixels; tabular models:
            column -> values, their named inputs).
        features: The trained model's inputs (transformed by preprocessing).
        labels: The label column (zeros when the use case has none).
        stats: The dataset's full-pass statistics (e.g. the regression baseline).

    """

    split: str
    raw: Any
    features: np.ndarray
    labels: np.ndarray
    stats: Mapping[str, Any]

    @classmethod
    def load(cls, reader: DatasetReader, model: ModelSpec, split: str = "test") -> TestRows:
        """Read a whole split (both input forms of the same rows, in file order)."""
        label = [model.label_key] if model.label_key else []
        if model.input_key == PACKED and reader.raw_keys():  # named tabular columns
            raw: Any = reader.raw_columns(split)
            cols = reader.arrays(split, [model.input_key, *label])
            features = cols[model.input_key]
        else:
            served = reader.served_key(model.input_key)
            keys = list(dict.fromkeys([served, model.input_key]))
            cols = reader.arrays(split, keys + label)
            raw = cols[served].astype(np.float32)
            features = raw if served == model.input_key else cols[model.input_key]
        labels = (cols[model.label_key] if model.label_key
                  else np.zeros(len(features), np.int64))
        return cls(split, raw, features.astype(np.float32), labels, reader.stats)

    def __len__(self) -> int:
        return len(self.features)


def as_input(model: Any, x: Any) -> Any:
    """``x`` as ``model`` takes it.

    Named columns stay named for a model with named inputs; for a model with one vector
    input (a tabular version exported before named inputs) they are stacked, in order,
    into the float32 vector it was served with.
    """
    if isinstance(x, dict) and not isinstance(model.input, dict):
        return np.stack([np.asarray(v, np.float32) for v in x.values()], axis=1)
    return x


def _rows(x: Any, start: int, stop: int) -> Any:
    if isinstance(x, dict):
        return {k: v[start:stop] for k, v in x.items()}
    return x[start:stop]


EAGER_ROWS = 1024  # up to this many rows, one eager call (no tracing) is the faster


def predict(model: Any, x: Any, batch_size: int = 4096) -> Any:
    """A Keras model's outputs over ``x`` in batches: an array, or a dict of arrays.

    ``x`` may be named columns (a tabular model's inputs; see :func:`as_input`).
    """
    x = as_input(model, x)
    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    if n <= EAGER_ROWS:
        # One eager call: predict_on_batch would first trace a predict function, 0.2-0.3 s
        # per model here, for a tiny use case's test split (evaluation scores three models).
        out = model(x, training=False)
        return ({k: np.asarray(v) for k, v in out.items()} if isinstance(out, dict)
                else np.asarray(out))
    parts = [model.predict_on_batch(_rows(x, i, i + batch_size))
             for i in range(0, n, batch_size)]
    if parts and isinstance(parts[0], dict):
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
    return np.concatenate([np.asarray(p) for p in parts])


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

    def score(self, outputs: Any, rows: TestRows, model: ModelSpec,
              out_dir: Path | None = None) -> EvalOutput:
        """Metrics of a served model's ``outputs`` on ``rows`` (plots into ``out_dir``).

        ``outputs`` are what the exported model answered for ``rows.raw``; the same
        method scores the candidate and the champion, so their figures compare.
        """
        raise NotImplementedError(f"objective {self.kind!r} does not score")

    def scores_served_rows(self, model: ModelSpec) -> bool:
        """Whether the served model takes the test rows' raw inputs (then it is scored).

        False for raw-media front ends (``ModelSpec.serving_input``: WAV or JPEG files the
        test split does not keep) and for kinds with a served model of their own.
        """
        return model.serving_input is None

    def evaluate(self, trained: Any, reader: DatasetReader, model: ModelSpec,
                 calibration: Mapping[str, Any], out_dir: Path | None) -> EvalOutput:
        """Test metrics of the trained model plus the head, on the transformed features."""
        rows = TestRows.load(reader, model, "test")
        outputs = predict(reference_model(self, trained, calibration), rows.features)
        return self.score(outputs, rows, model, out_dir)

    def ablation_scores(self, trained: Any, reader: DatasetReader, model: ModelSpec,
                        split: str) -> dict[str, float]:
        """Figures of one split beyond the compiled metrics, for comparing ablation arms.

        Default: none (the arms compare on compiled metrics); a detector adds its mAP.
        """
        return {}

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


def reference_model(objective: Objective, trained: Any, calibration: Mapping[str, Any]) -> Any:
    """The trained model plus the objective's head, on transformed inputs.

    This is what the exported model must compute after its transform layer.
    """
    import keras

    inp = keras.Input(shape=trained.inputs[0].shape[1:], dtype="float32", name="features")
    out = trained(inp)
    head = objective.head(inp, out, calibration)
    return keras.Model(inp, out if head is None else head, name=f"{trained.name}_reference")


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
