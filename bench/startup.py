"""Start-up of the operator commands: how long until each one answers.

Run:  .venv/bin/python bench/startup.py [--repeat 3] [--repo PATH] [--smoke]

In a fresh data root (``MLP_HOME`` in a temporary folder) it runs ``mlp run breast_cancer``
twice (a new data root, then a second run on the now current metadata database) and
measures, per run, the seconds from the command's start to its first task (the first
"▶" progress line) and to its end; then, with the registered model, it measures
``mlp list``, ``mlp validate breast_cancer``, ``mlp models``, ``mlp models --card
breast_cancer`` (seconds to exit) and ``mlp serve`` (seconds until ``/readyz`` answers
200 with the model loaded), each ``--repeat`` times (median), and two floors in the same
run: a bare ``python -c "import tensorflow"`` (the server cannot be ready before it) and
TensorFlow plus one MLflow registry query on the run's store. Next to the wall seconds it
prints the CPU seconds the command used (with its child processes): on a machine shared
with other jobs the CPU seconds vary much less than the wall seconds, and on a quiet
machine the two are close for these single-threaded start-ups.

``--repo PATH`` measures another checkout of the platform with this venv (e.g. main
before a change: ``git worktree add /tmp/before main``). ``--smoke``: one two-epoch run
(deployed with ``force_deploy``: two epochs do not pass the gate), one repeat.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, load, median, table  # noqa: E402

# Floors measured in the same run: what the Python process alone costs before any platform
# code runs (the serving process cannot be ready before TensorFlow is imported).
FLOORS = {"floor: import tensorflow": "import tensorflow",
          "floor: import tensorflow + MLflow registry query":
              "import os, tensorflow, mlflow; mlflow.MlflowClient('sqlite:///' + "
              "os.environ['MLP_HOME'] + '/mlflow.db').search_registered_models()"}

TARGETS = {"list": None, "validate": 2.0, "models": 2.0, "models --card": 2.0,
           "serve (ready)": 5.0, "run: first task": 10.0}


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a running process (user + system, from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants so far (ended ones included when
    their parent waited for them)."""
    import psutil

    total = 0.0
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def command(repo: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tasks.cli", *args]


def env_for(repo: Path, home: Path) -> dict[str, str]:
    return {**os.environ, "MLP_HOME": str(home), "PYTHONPATH": str(repo),
            "TF_CPP_MIN_LOG_LEVEL": "2"}


def timed(repo: Path, home: Path, *args: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one command run to its end."""
    c0, t0 = _cpu_children(), time.perf_counter()
    out = subprocess.run(command(repo, *args), cwd=repo, env=env_for(repo, home),
                         capture_output=True, text=True)
    wall, cpu = time.perf_counter() - t0, _cpu_children() - c0
    if out.returncode != 0:
        raise RuntimeError(f"mlp {' '.join(args)} failed ({out.returncode}): "
                           f"{(out.stderr or out.stdout)[-500:]}")
    return wall, cpu


def python_code(repo: Path, home: Path, code: str) -> tuple[float, float]:
    """(wall, CPU) seconds of ``python -c code`` (a floor under the commands' times)."""
    c0, t0 = _cpu_children(), time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=repo, env=env_for(repo, home),
                   capture_output=True, check=True)
    return time.perf_counter() - t0, _cpu_children() - c0


SMOKE_RUN = ["--epochs", "2", "--param", "force_deploy=true",
             "--param", 'force_reason="bench/startup.py --smoke: two epochs"']


def run_to_first_task(repo: Path, home: Path, extra: list[str]) -> dict[str, float]:
    """``mlp run breast_cancer``: seconds to its first task line, and to its end."""
    args = ["run", "breast_cancer", *extra]
    c0, t0 = _cpu_children(), time.perf_counter()
    proc = subprocess.Popen(command(repo, *args), cwd=repo, env=env_for(repo, home),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = first_cpu = None
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if first is None and "▶" in line:
            first = time.perf_counter() - t0
            first_cpu = _tree_cpu(proc.pid)
    proc.wait()
    if proc.returncode != 0:
        raise RuntimeError("mlp run breast_cancer failed:\n" + "".join(lines[-20:]))
    wall = time.perf_counter() - t0
    return {"first": first or float("nan"), "first_cpu": first_cpu or float("nan"),
            "wall": wall, "cpu": _cpu_children() - c0,
            "split": next((ln.strip() for ln in lines if "wall time" in ln), "")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_ready(repo: Path, home: Path, timeout: float = 300) -> tuple[float, float]:
    """(wall, CPU) seconds from ``mlp serve``'s start until ``/readyz`` answers 200."""
    import httpx

    port = _free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(command(repo, "serve", "--port", str(port)), cwd=repo,
                            env=env_for(repo, home), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"mlp serve exited ({proc.returncode})")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - t0, _proc_cpu(proc.pid)
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"mlp serve not ready after {timeout:.0f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--repo", type=Path, default=ROOT,
                        help="checkout of the platform to measure (default: this one)")
    parser.add_argument("--smoke", action="store_true",
                        help="one 2-epoch run (forced deployment), one repeat")
    a = parser.parse_args()
    repeat = 1 if a.smoke else a.repeat
    repo = a.repo.resolve()
    print(f"bench/startup.py: {repo} ({load()})", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlp-bench-startup-") as tmp:
        home = Path(tmp) / "home"
        labels = ("new data root",) if a.smoke else ("new data root", "current database")
        for label in labels:
            r = run_to_first_task(repo, home, SMOKE_RUN if a.smoke else [])
            print(f"  mlp run breast_cancer ({label}): first task after {r['first']:.1f} s "
                  f"({r['first_cpu']:.1f} CPU s), ended after {r['wall']:.1f} s "
                  f"({r['cpu']:.1f} CPU s)", flush=True)
            if r["split"]:
                print(f"    {r['split']}", flush=True)
            rows.append([f"run: first task ({label})", r["first"], r["first_cpu"],
                         TARGETS["run: first task"]])
        cases = [("list", ("list",)), ("validate", ("validate", "breast_cancer")),
                 ("models", ("models",)), ("models --card", ("models", "--card",
                                                             "breast_cancer"))]
        for name, args in cases:
            got = [timed(repo, home, *args) for _ in range(repeat)]
            rows.append([f"mlp {name}", median([w for w, _ in got]),
                         median([c for _, c in got]), TARGETS[name]])
            print(f"  mlp {name}: {rows[-1][1]:.2f} s ({rows[-1][2]:.2f} CPU s)", flush=True)
        for name, code in FLOORS.items():
            got = [python_code(repo, home, code) for _ in range(repeat)]
            rows.append([name, median([w for w, _ in got]), median([c for _, c in got]), None])
            print(f"  {name}: {rows[-1][1]:.2f} s ({rows[-1][2]:.2f} CPU s)", flush=True)
        got = [serve_ready(repo, home) for _ in range(repeat)]
        rows.append(["mlp serve: /readyz 200", median([w for w, _ in got]),
                     median([c for _, c in got]), TARGETS["serve (ready)"]])
        print(f"  mlp serve ready: {rows[-1][1]:.2f} s ({rows[-1][2]:.2f} CPU s)", flush=True)
    print()
    print(table(["command", "wall s (median)", "CPU s", "target s"],
                [[r[0], r[1], r[2], r[3] if r[3] else "-"] for r in rows]))
    print(f"\nbench/startup.py done: {load()}")


if __name__ == "__main__":
    main()
