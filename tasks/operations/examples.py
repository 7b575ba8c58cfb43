"""Ready-to-send predict requests built from a run's test rows."""

from __future__ import annotations

import json
from pathlib import Path

from tasks import objectives
from tasks.core.run import RunLayout
from tasks.data.tfrecord import DatasetReader
from tasks.spec import catalog


def write_example_request(use_case: str, layout: RunLayout, n: int = 2) -> Path | None:
    """Write ``request.json`` (``{"instances": ...}``) from the first ``n`` test rows."""
    if not layout.feature_spec_file.is_file():
        return None
    mk = catalog.get(use_case).model
    if mk is None:
        return None
    reader = DatasetReader.open(layout.dataset_dir)
    own = objectives.get(mk.objective).serving_example(mk, reader)  # e.g. text
    if own is not None:
        instances = own.tolist()[:n]
    else:
        x, _ = next(iter(reader.split("test", mk.input_key, mk.label_key, n)))
        instances = x.numpy().tolist()
    layout.request_file.write_text(json.dumps({"instances": instances}))
    return layout.request_file
