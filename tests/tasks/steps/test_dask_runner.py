"""The same preprocessing pipeline on a local Dask cluster gives the direct runner's outputs."""

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from models.creditcard_fraud import SPEC, generate
from tasks.steps.preprocess import preprocess

pytestmark = pytest.mark.slow


def _close(a, b):
    """Equal JSON, floats to 1e-12: units' statistics merge in the workers' order."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _close(x, y)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15)
    else:
        assert a == b


def test_dask_cluster_matches_direct_runner(tmp_path, monkeypatch):
    from distributed import LocalCluster

    from tasks.data import sources

    src = tmp_path / "src"
    src.mkdir()
    generate(src, 4000, seed=3)
    files = SPEC.source.files(str(src))
    # Byte-range units, as a big CSV is read: they spread over the two workers.
    monkeypatch.setattr(sources, "CHUNK_BYTES", Path(files["all"]).stat().st_size // 4)
    assert len(SPEC.source.chunks(files, "all")) >= 4
    prep = replace(SPEC.preprocess, batch_size=700)
    split = replace(SPEC.split, shards={"train": 3, "validation": 2, "test": 2})
    direct = preprocess(SPEC.source, files, prep, split, tmp_path / "direct")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        dask = preprocess(SPEC.source, files, prep, split, tmp_path / "dask", runner="dask",
                          runner_options=[f"--dask_client_address={cluster.scheduler_address}"])
        # The runner's client is released with the pipeline (Beam leaves it open); the
        # scheduler's own entry and the workers' clients (Dask's shuffle) stay.
        def drivers() -> set[str]:
            return {c for c in cluster.scheduler.clients
                    if c != "fire-and-forget" and not c.startswith("Client-worker-")}

        deadline = time.monotonic() + 10
        while drivers() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not drivers()
    assert dask["splits"] == direct["splits"]
    shards = sorted(p.relative_to(tmp_path / "direct")
                    for p in (tmp_path / "direct").rglob("*.tfrecord"))
    assert len(shards) == 7
    for rel in shards:
        assert (tmp_path / "dask" / rel).read_bytes() == (tmp_path / "direct" / rel).read_bytes()
    for name in ("stats.json", "feature_spec.json"):
        _close(json.loads((tmp_path / "dask" / name).read_text()),
               json.loads((tmp_path / "direct" / name).read_text()))


def test_dask_pipelines_put_one_unit_per_partition_unless_told_otherwise():
    from apache_beam.runners.dask.dask_runner import DaskOptions

    from tasks.steps.beam_runner import make_pipeline

    def dask_options(extra):
        p = make_pipeline("dask", ["--dask_client_address=127.0.0.1:1", *extra])
        return p.options.view_as(DaskOptions).get_all_options(drop_default=True)

    assert dask_options([])["partition_size"] == 1
    assert dask_options(["--dask_npartitions=3"])["npartitions"] == 3
    assert "partition_size" not in dask_options(["--dask_npartitions=3"])
