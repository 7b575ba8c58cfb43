"""Every bench script runs on tiny sizes and prints its figures, so none of them rots.

Each ``bench/*.py`` (a helper module such as ``common.py`` excepted) must take ``--smoke``
(tiny data, short turns) and exit 0 with its report on stdout. The figures themselves are
not checked here: speed targets are read from the scripts' side-by-side ratios on a quiet
machine, never from timed tests.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "bench"
HELPERS = {"common.py"}
OWN_TEST = {"serving.py"}  # test_serving_bench.py runs it with more checks
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name not in HELPERS | OWN_TEST)


def test_every_bench_script_is_covered():
    assert {"train.py", "pipeline.py", "preprocess.py", "startup.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_smoke_run(script, tmp_path):
    path = BENCH / script
    usage = subprocess.run([sys.executable, str(path), "--help"], capture_output=True,
                           text=True, timeout=120)
    assert usage.returncode == 0, usage.stderr[-2000:]
    assert "--smoke" in usage.stdout, f"bench/{script} has no --smoke flag (tiny sizes)"
    env = {**os.environ, "MLP_HOME": str(tmp_path / "home"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, str(path), "--smoke"], capture_output=True,
                         text=True, timeout=1800, env=env, cwd=tmp_path)
    assert out.returncode == 0, f"bench/{script} --smoke failed:\n{out.stdout[-3000:]}\n" \
                                f"{out.stderr[-3000:]}"
    assert out.stdout.strip(), f"bench/{script} --smoke printed nothing"
