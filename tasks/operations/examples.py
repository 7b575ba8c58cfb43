"""Ready-to-send predict requests built from a run's raw test rows."""

from __future__ import annotations

import base64
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
    si = mk.serving_input
    reader = DatasetReader.open(layout.dataset_dir)
    # The kind's own example first (text; a detector's test images, as bytes -> b64)
    own = objectives.get(mk.objective).serving_example(mk, reader)
    if own is not None:
        instances = [{"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v
                     for v in own.tolist()[:n]]
        layout.request_file.write_text(json.dumps({"instances": instances}))
        return layout.request_file
    if si is not None and not hasattr(si, "encode"):
        # Raw media in (e.g. WAV clips): send files of the snapshot, base64. A front end
        # with ``encode`` (faces: the JPEG of a face crop) encodes test rows below.
        from tasks.steps.ingest import snapshot_files

        files = snapshot_files(layout.raw_dir)
        first: dict[str, str] = {}
        for key in sorted(k for k in files if "/" in k):  # one file per label folder
            first.setdefault(key.split("/", 1)[0], files[key])
        paths = list(first.values())[:n]
        layout.request_file.write_text(json.dumps({"instances": [
            {"b64": base64.b64encode(Path(p).read_bytes()).decode()} for p in paths]}))
        return layout.request_file
    if si is not None and hasattr(si, "encode"):
        # Raw media in (e.g. a JPEG of a face crop): TF Serving's {"b64": ...} form,
        # named as the served model's input when the front end says its name.
        x, _ = next(iter(reader.split("test", mk.input_key, mk.label_key, n)))
        blobs = [{"b64": base64.b64encode(b).decode()} for b in si.encode(x.numpy())]
        name = getattr(si, "input_name", None)
        instances = [{name: b} if name else b for b in blobs]
    else:
        example = serving_example(spec, reader, n)
        instances = named_rows(spec, example) if isinstance(example, dict) else plain(example)
    layout.request_file.write_text(json.dumps({"instances": instances}))
    return layout.request_file


def named_rows(spec: Any, columns: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Tabular test rows as a client sends them: one object per row, by the served names.

    The served name is the file's column name (``Column.header``); numbers as the
    shortest decimals, integers as integers, text as text.
    """
    schema = spec.source.schema()
    out: dict[str, list[Any]] = {}
    for key, values in columns.items():
        name = str(schema.get(key, {}).get("header") or key)
        arr = np.asarray(values)
        out[name] = (plain(arr) if arr.dtype.kind == "f" else
                     [int(v) for v in arr.tolist()] if arr.dtype.kind in "iu" else
                     [str(v) for v in arr.tolist()])
    n = len(next(iter(out.values()))) if out else 0
    return [{name: vals[i] for name, vals in out.items()} for i in range(n)]
