"""A model version's reference for drift and skew: its training data and its own answers.

Every training run keeps what later comparisons need, on its MLflow run:

- ``preprocessing/stats.json`` (logged by training): the full-pass statistics with the
  histograms of every split on the training split's bins (:mod:`tasks.features.profile`);
  the training split's histograms are the *feature* reference;
- ``monitoring/predictions.json`` (logged by evaluation): histograms of the served
  model's answers on its own test split (predicted classes, scores, flags), with bins
  from those answers; the *prediction* reference.

:func:`load_reference` reads both for a registered version. New data is then counted on
the reference's bins and compared column by column (:mod:`tasks.features.drift`).

This module also knows how to get the *served* inputs of a dataset split
(:func:`served_split_inputs`: what a client would send for those rows) and how to name a
model's answers as its REST answer does (:func:`named_outputs`), so the reference and
every later comparison profile the same thing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks import objectives
from tasks.core.config import Settings
from tasks.data.tfrecord import DatasetReader
from tasks.features.profile import output_columns, prediction_columns, profile
from tasks.objectives import TestRows
from tasks.spec import UseCaseSpec
from tasks.tracking import CHAMPION, configure

log = logging.getLogger(__name__)

STATS_ARTIFACT = "preprocessing/stats.json"
PREDICTIONS_ARTIFACT = "monitoring/predictions.json"
PREDICTIONS_FILE = "predictions.json"  # in the run's evaluation folder


@dataclass(frozen=True)
class Reference:
    """What a version's new data is compared with.

    Attributes:
        model: Registered model name.
        version: Registry version.
        run_id: Its training run.
        run_key: The pipeline run that trained it.
        features: Histograms of its training split (empty for versions trained before
            histograms were kept).
        predictions: Histograms of its answers on its own test split, or None.

    """

    model: str
    version: str
    run_id: str
    run_key: str | None
    features: dict[str, Any]
    predictions: dict[str, Any] | None

    def describe(self) -> dict[str, Any]:
        """The reference as the reports name it."""
        return {"model": self.model, "version": self.version, "run_id": self.run_id,
                "run_key": self.run_key,
                "data": f"training split of run {self.run_key} (version {self.version})",
                "predictions": "its answers on its own test split"
                if self.predictions else None}


def _load_dict(run_id: str, path: str) -> dict[str, Any] | None:
    import mlflow

    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{path}")
    except Exception:  # noqa: BLE001 - a run logged before this artifact existed
        return None


def load_reference(name: str, version: str | None = None, alias: str = CHAMPION,
                   s: Settings | None = None) -> Reference:
    """The reference of ``name`` at ``version`` (default: the version ``alias`` names).

    Raises:
        LookupError: No such model, version or alias.

    """
    from mlflow.exceptions import MlflowException

    client = configure(s)
    try:
        mv = (client.get_model_version(name, str(version)) if version
              else client.get_model_version_by_alias(name, alias))
    except MlflowException as exc:
        what = f"version {version}" if version else f"alias {alias!r}"
        raise LookupError(f"model {name!r} has no {what} in the registry") from exc
    stats = _load_dict(mv.run_id, STATS_ARTIFACT) or {}
    features = (stats.get("train") or {}).get("histograms") or {}
    predictions = _load_dict(mv.run_id, PREDICTIONS_ARTIFACT)
    return Reference(name, str(mv.version), mv.run_id, (mv.tags or {}).get("run_key"),
                     features, predictions or None)


def champion_reference(name: str, s: Settings | None = None) -> Reference | None:
    """The champion's reference, or None when the model has no champion yet."""
    try:
        return load_reference(name, alias=CHAMPION, s=s)
    except LookupError:
        return None


# --------------------------------------------------------------------------- answers
def named_outputs(model: Any, out: Any) -> dict[str, np.ndarray]:
    """A model's answer by output name, as the REST answer and its metadata name them."""
    if isinstance(out, Mapping):
        return {str(k): np.asarray(v) for k, v in out.items()}
    names = list(getattr(model, "output_names", None) or []) or ["output"]
    return {names[0]: np.asarray(out)}


def answer(model: Any, inputs: Any, batch_size: int = 2048) -> dict[str, np.ndarray]:
    """A Keras model's answers over served inputs (arrays, strings or named columns)."""
    import tensorflow as tf

    def n_rows(x: Any) -> int:
        return len(next(iter(x.values()))) if isinstance(x, Mapping) else len(x)

    def take(x: Any, sl: slice) -> Any:
        if isinstance(x, Mapping):
            return {k: _tensor(v[sl]) for k, v in x.items()}
        return _tensor(x[sl])

    def _tensor(v: Any) -> Any:
        v = np.asarray(v)
        return tf.constant(list(v) if v.dtype == object else v)

    parts = [model(take(inputs, slice(i, i + batch_size)), training=False)
             for i in range(0, n_rows(inputs), batch_size)]
    named = [named_outputs(model, p if not isinstance(p, Mapping) else
                           {k: np.asarray(v) for k, v in p.items()}) for p in parts]
    if not named:
        return {}
    return {k: np.concatenate([np.asarray(p[k]) for p in named]) for k in named[0]}


def prediction_histograms(outputs: Mapping[str, np.ndarray],
                          bins: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Histograms of a model's answers (bins from the answers themselves when not given)."""
    cols = output_columns(outputs)
    columns = prediction_columns(cols)
    if bins is not None:
        columns = tuple(c for c in columns if c.name in bins)
    return profile(columns, [cols], bins)


def served_split_inputs(spec: UseCaseSpec, reader: DatasetReader, split: str = "test"
                        ) -> tuple[Any, str]:
    """The served model's inputs for the rows of a split (what a client would send).

    Returns:
        ``(inputs, "")``, or ``(None, why)`` when the split does not hold what the served
        model takes (raw WAV files; language models and detectors serve their own inputs).

    """
    mk = spec.model
    objective = objectives.get(mk.objective)
    if objective.serving_example(mk, reader) is not None:
        return None, f"{mk.objective} models serve their own inputs (text, image files)"
    if objective.scores_served_rows(mk):
        return TestRows.load(reader, mk, split).raw, ""
    si = mk.serving_input
    if si is not None and hasattr(si, "encode"):
        rows = TestRows.load(reader, mk, split)
        return np.asarray(si.encode(rows.features), dtype=object), ""
    return None, "the served model takes raw media files, which the split does not keep"


def reference_predictions(spec: UseCaseSpec, served: Any, reader: DatasetReader,
                          served_out: Any = None) -> tuple[dict[str, Any] | None, str]:
    """Histograms of the served model's answers on the test split (the prediction reference).

    ``served_out`` are answers the caller already has for the test rows (evaluation).
    """
    if served_out is None:
        inputs, why = served_split_inputs(spec, reader)
        if inputs is None:
            return None, why
        outputs = answer(served, inputs)
    else:
        outputs = named_outputs(served, served_out)
    return prediction_histograms(outputs), ""


def log_reference_predictions(run_id: str, histograms: Mapping[str, Any],
                              s: Settings | None = None) -> None:
    """Put the prediction reference on the training run (``monitoring/predictions.json``)."""
    import mlflow

    configure(s)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_dict(dict(histograms), PREDICTIONS_ARTIFACT)
