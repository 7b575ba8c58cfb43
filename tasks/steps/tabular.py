"""The served form of a tabular model: one named, typed input per raw column, its schema.

A use case whose packed features come from a tabular source's scalar columns (and that
has no media front end) is served with one Keras input per raw column (the column's
identifier, shape ``[None]``, dtype ``float32``/``int64``/``string``), the transform
inside the model (:func:`tasks.features.transforms.tabular_layer`), and an
:class:`~tasks.features.schema.InputSchema` logged with it: the names clients send (the
file's own column names), the declared and training limits, and how answers read.
Training builds both from here; evaluation checks the test rows against the same schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.data.tfrecord import PACKED, DatasetReader, tabular_inputs
from tasks.features.schema import SERVED_DTYPES, InputSchema, input_schema
from tasks.spec import UseCaseSpec


def is_tabular(spec: UseCaseSpec) -> bool:
    """Whether the use case's served model takes named tabular inputs."""
    mk = spec.model
    return (mk is not None and mk.input_key == PACKED and mk.serving_input is None
            and tabular_inputs(spec.preprocess, spec.source.schema()))


def served_dtypes(spec: UseCaseSpec) -> dict[str, str]:
    """Column -> the served input's dtype, for the packed features' columns (in order)."""
    schema = spec.source.schema()
    return {f.name: SERVED_DTYPES[schema[f.name]["dtype"]] for f in spec.preprocess.packed}


def serving_inputs(spec: UseCaseSpec) -> dict[str, Any]:
    """One Keras input per raw column: shape ``[None]``, named as the spec's column."""
    import keras

    return {name: keras.Input(shape=(), dtype=dtype, name=name)
            for name, dtype in served_dtypes(spec).items()}


def class_names(spec: UseCaseSpec, reader: DatasetReader) -> list[str]:
    """The class names answers carry: the spec's, else a text label's classes."""
    mk = spec.model
    if mk is not None and mk.class_names:
        return list(mk.class_names)
    return reader.class_names(spec.preprocess.label)


def model_schema(spec: UseCaseSpec, reader: DatasetReader,
                 calibration: Mapping[str, Any] | None = None) -> InputSchema | None:
    """The input schema logged with a tabular model (None for other use cases)."""
    if not is_tabular(spec):
        return None
    threshold = (calibration or {}).get("threshold")
    return input_schema(
        spec.preprocess.packed, spec.source.schema(), reader.stats.get("train", {}),
        objective=spec.model.objective, class_names=class_names(spec, reader),
        threshold=None if threshold is None else float(threshold),
        label=spec.preprocess.label, strict=spec.model.strict_inputs)
