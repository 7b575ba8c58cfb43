"""Ready-to-send predict requests built from a run's raw test rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tasks import objectives
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
    mk = spec.model
    if mk.serving_input is not None:  # raw media in: send files of the snapshot, base64
        import base64

        from tasks.steps.ingest import snapshot_files

        files = snapshot_files(layout.raw_dir)
        first: dict[str, str] = {}
        for key in sorted(k for k in files if "/" in k):  # one file per label folder
            first.setdefault(key.split("/", 1)[0], files[key])
        paths = list(first.values())[:n]
        layout.request_file.write_text(json.dumps({"instances": [
            {"b64": base64.b64encode(Path(p).read_bytes()).decode()} for p in paths]}))
        return layout.request_file
    reader = DatasetReader.open(layout.dataset_dir)
    own = objectives.get(mk.objective).serving_example(mk, reader)  # e.g. text
    if own is not None:
        instances = own.tolist()[:n]
    else:
        instances = plain(serving_example(spec, reader, n))
    layout.request_file.write_text(json.dumps({"instances": instances}))
    return layout.request_file
