"""Ready-to-send predict requests built from a run's raw test rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.run import RunLayout
from tasks.data.tfrecord import DatasetReader
from tasks.spec import catalog
from tasks.steps.train import serving_example


def plain(x: np.ndarray) -> Any:
    """float32 values as the shortest decimals that read back to the same float32."""
    flat = [float(str(v)) for v in np.asarray(x, np.float32).ravel()]
    return np.asarray(flat, np.float64).reshape(np.shape(x)).tolist()


def write_example_request(use_case: str, layout: RunLayout, n: int = 2) -> Path | None:
    """Write ``request.json`` (``{"instances": ...}``) from the first ``n`` raw test rows.

    The rows are in the units a client sends (before any transform: the served model
    applies them), the same rows as the MLflow input example of the run's model.
    """
    if not layout.feature_spec_file.is_file():
        return None
    spec = catalog.get(use_case)
    if spec.model is None:
        return None
    x = serving_example(spec, DatasetReader.open(layout.dataset_dir), n)
    layout.request_file.write_text(json.dumps({"instances": plain(x)}))
    return layout.request_file
