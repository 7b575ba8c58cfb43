"""Fixed overhead of a run: where the wall time of ``mlp run breast_cancer`` goes.

Run:  .venv/bin/python bench/pipeline.py [--runs 2] [--use-case breast_cancer] [--smoke]

Runs ``mlp run <use case>`` (569 rows: the run is nearly all overhead) in a fresh data
root, ``--runs`` times (the first on a new metadata database, the next ones on a current
one), with ``MLP_TIMINGS_FILE`` set so the platform records its phases
(:mod:`tasks.core.timing`), and prints per run:

  process start    the ``mlp`` command until its child process starts (Python, the CLI,
                   ``mlp validate``)
  child start      the child's Python start and imports until its main function
  db migrate       ``airflow db migrate`` (skipped when the schema is current)
  DAG parse        importing the DAG factory and building the DAG
  task start-up    per task: from the previous task's end (or dag.test's start) to the
                   task's own body (Airflow's task runner, the imports of the step)
  <task>           each task's body; inside train: fit, MLflow logging, export, calibrate
  exit             after the last task (example request, process exit)

and the total, the fit, and the overhead as a multiple of the fit (target: total <= 20 s,
overhead <= 1.5x the fit, on a quiet machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, load, table  # noqa: E402

TRAIN_PARTS = ("MLflow params + datasets", "fit", "MLflow artifacts + plots", "calibrate",
               "export", "MLflow log_model")


def one_run(home: Path, use_case: str, extra: list[str]) -> dict[str, Any]:
    """Run ``mlp run`` once; return its recorded phases and wall clock."""
    timings = home / f"timings-{time.time_ns()}.jsonl"
    env = {**os.environ, "MLP_HOME": str(home), "MLP_TIMINGS_FILE": str(timings),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.time()
    out = subprocess.run([sys.executable, "-m", "tasks.cli", "run", use_case, *extra],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    end = time.time()
    if out.returncode != 0:
        raise RuntimeError(f"mlp run {use_case} failed:\n{out.stdout[-3000:]}")
    records = [json.loads(line) for line in timings.read_text().splitlines()]
    return {"start": start, "end": end, "records": records, "stdout": out.stdout}


def breakdown(run: dict[str, Any]) -> tuple[list[list[Any]], dict[str, float]]:
    """Rows (phase, seconds, share) in time order, and the totals."""
    recs = run["records"]
    marks = {r["mark"]: r["t"] for r in recs if "mark" in r}
    phases = [r for r in recs if "phase" in r]
    by_name = {}
    for r in phases:
        by_name.setdefault(r["phase"], []).append(r)
    total = run["end"] - run["start"]
    rows: list[list[Any]] = []

    def add(name: str, seconds: float) -> None:
        rows.append([name, seconds, seconds / total])

    add("process start (mlp CLI, validate)", marks["child spawn"] - run["start"])
    add("child start (Python, imports)", marks["child main"] - marks["child spawn"])
    migrate = by_name["db migrate"][0]
    add("db migrate", migrate["end"] - migrate["start"])
    parse = by_name["DAG parse"][0]
    add("DAG parse", parse["end"] - parse["start"])
    dag_test = by_name["dag.test"][0]
    previous_end = dag_test["start"]
    tasks = sorted((r for r in phases if r["phase"].startswith("task ")),
                   key=lambda r: r["start"])
    fit = 0.0
    for r in tasks:
        name = r["phase"].removeprefix("task ")
        add(f"{name}: task start-up", r["start"] - previous_end)
        body = r["end"] - r["start"]
        if name == "train":
            inner = 0.0
            for part in TRAIN_PARTS:
                got = [p for p in by_name.get(part, []) if r["start"] <= p["start"] <= r["end"]]
                seconds = sum(p["end"] - p["start"] for p in got)
                inner += seconds
                if part == "fit":
                    fit = seconds
                add(f"train: {part}", seconds)
            add("train: the rest (model build, reading, checks)", body - inner)
        else:
            add(f"{name}", body)
        previous_end = r["end"]
    add("after the last task (dag.test end)", dag_test["end"] - previous_end)
    add("exit (example request, process ends)", run["end"] - dag_test["end"])
    return rows, {"total": total, "fit": fit, "overhead": total - fit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--use-case", default="breast_cancer")
    parser.add_argument("--smoke", action="store_true", help="one run of 2 epochs")
    a = parser.parse_args()
    runs = 1 if a.smoke else a.runs
    extra = ["--epochs", "2"] if a.smoke else []
    print(f"bench/pipeline.py: mlp run {a.use_case} {' '.join(extra)} ({load()})", flush=True)
    with tempfile.TemporaryDirectory(prefix="mlp-bench-pipeline-") as tmp:
        for i in range(runs):
            label = "new data root" if i == 0 else "current metadata database"
            run = one_run(Path(tmp) / "home", a.use_case, extra)
            rows, totals = breakdown(run)
            print(f"\n  run {i + 1} ({label}), {load()}:")
            print(table(["phase", "seconds", "share"], rows))
            times = totals["overhead"] / max(totals["fit"], 1e-9)
            print(f"  total {totals['total']:.1f} s (target <= 20), fit {totals['fit']:.1f} s, "
                  f"overhead {totals['overhead']:.1f} s = {times:.2f}x the fit "
                  "(target <= 1.5x)", flush=True)
            split = next((ln.strip() for ln in run["stdout"].splitlines() if "wall time" in ln),
                         None)
            if split:
                print(f"  mlp run's own line: {split}")
    print(f"\nbench/pipeline.py done: {load()}")


if __name__ == "__main__":
    main()
