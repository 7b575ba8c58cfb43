"""Smoke run of bench/serving.py at tiny sizes, so the benchmark cannot rot.

No figure is asserted (timings are not tests): the script must train, register, start
every server it compares, drive them, print each side-by-side table and exit 0 (it exits
1 when any request failed).
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_serving_bench_runs_every_comparison_at_tiny_sizes(tmp_path):
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "serving.py"), "--tiny",
         "--json", str(tmp_path / "figures.json")],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for table in ("== batching: batching off (A) vs default (B)",
                  "== metrics: metrics off (A) vs default (B)",
                  "== shadow: default (A) vs shadow on (B)"):
        assert table in out.stdout
    import json

    figures = json.loads((tmp_path / "figures.json").read_text())
    assert set(figures) == {"batching", "metrics", "shadow"}
    for comparison in figures.values():
        for row in comparison["by_concurrency"].values():
            assert row["errors"] == 0 and row["A"]["rps"] > 0 and row["B"]["rps"] > 0
            assert set(row["B_versions"]) == {"1"}  # only the champion answers
