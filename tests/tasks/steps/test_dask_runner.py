"""The same preprocessing pipeline on a local Dask cluster gives the direct runner's outputs."""

from dataclasses import replace

import pytest

from models.creditcard_fraud import SPEC, generate
from tasks.steps.preprocess import preprocess

pytestmark = pytest.mark.slow


def test_dask_cluster_matches_direct_runner(tmp_path):
    from distributed import LocalCluster

    src = tmp_path / "src"
    src.mkdir()
    generate(src, 4000, seed=3)
    files = SPEC.source.files(str(src))
    prep = replace(SPEC.preprocess, batch_size=700)
    split = replace(SPEC.split, shards={"train": 3, "validation": 2, "test": 2})
    direct = preprocess(SPEC.source, files, prep, split, tmp_path / "direct")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        dask = preprocess(SPEC.source, files, prep, split, tmp_path / "dask", runner="dask",
                          runner_options=[f"--dask_client_address={cluster.scheduler_address}"])
    assert dask["splits"] == direct["splits"]
    shards = sorted(p.relative_to(tmp_path / "direct")
                    for p in (tmp_path / "direct").rglob("*.tfrecord"))
    assert len(shards) == 7
    for rel in shards:
        assert (tmp_path / "dask" / rel).read_bytes() == (tmp_path / "direct" / rel).read_bytes()
    for name in ("stats.json", "feature_spec.json"):
        assert (tmp_path / "dask" / name).read_text() == (tmp_path / "direct" / name).read_text()
