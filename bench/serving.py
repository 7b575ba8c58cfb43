"""Serving benchmark: ``mlp serve`` modes side by side (and against ``mlflow models serve``).

Trains a small MNIST softmax model (the books' softmax, on scikit-learn's real digits
upscaled to 28x28) and a second, weaker one, registers them in a throw-away MLflow store
(``mnist`` v1 champion, v2 challenger), then compares, on the same model and the same
bounded loopback load from a separate client process (aiohttp; batch-1
``{"instances": [...]}`` requests at a fixed concurrency after a warm-up):

- ``batching``: micro-batching off (``--no-batching``) vs on (the default parameters);
- ``metrics``: ``MLP_SERVE_METRICS=0`` vs on (``/metrics``; batching on in both);
- ``shadow``: the challenger not scored (``MLP_SERVE_SHADOW_SAMPLE=0``) vs every request
  shadow-scored by the challenger; only the champion's answers are timed;
- ``shadow-sampled``: the same with a quarter of the requests shadow-scored
  (``MLP_SERVE_SHADOW_SAMPLE=0.25``);
- ``mlflow``: ``mlflow models serve -m models:/mnist/1 --env-manager local`` (its default
  single worker) vs ``mlp serve``.

All servers run at the same time on their own ports (the "default" one, batching and
metrics on, shadow off, is B of ``batching`` and ``metrics`` and A of ``shadow``); each
pair is measured in alternating rounds (A, B, B, A, ...), so a change in the machine's
background load hits both; each figure is the median over the rounds. Ratios are B / A.
Besides req/s and latency, each round reads the server process tree's CPU time per
request (``/proc`` via psutil): on a machine other jobs load, it shows what a mode costs
far more steadily than req/s does.

Usage::

    .venv/bin/python bench/serving.py                       # batching, metrics, shadow
    .venv/bin/python bench/serving.py --compare batching --concurrency 1,8,64
    .venv/bin/python bench/serving.py --compare mlflow --concurrency 8
    .venv/bin/python bench/serving.py --tiny                # seconds: the smoke run of make test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- load driver (runs in its own process) ------------------------------------------------


async def _drive(url: str, payload: bytes, n: int, concurrency: int) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors: list[str] = []
    versions: dict[str, int] = {}
    issued = 0
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=timeout) as session:

        async def worker() -> None:
            nonlocal issued
            while issued < n:
                issued += 1
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=payload, headers=headers) as r:
                        await r.read()
                        if r.status != 200:
                            errors.append(f"HTTP {r.status}")
                        v = r.headers.get("x-model-version", "-")
                        versions[v] = versions.get(v, 0) + 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(repr(exc))
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {"requests": len(latencies), "errors": len(errors), "first_errors": errors[:3],
            "seconds": elapsed, "rps": len(latencies) / elapsed, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99), "versions": versions}


def drive_main(args: argparse.Namespace) -> None:
    payload = Path(args.payload).read_bytes()
    if args.warmup:
        asyncio.run(_drive(args.url, payload, args.warmup, args.concurrency))
    print(json.dumps(asyncio.run(_drive(args.url, payload, args.requests, args.concurrency))))


def run_load(url: str, payload: Path, n: int, concurrency: int, warmup: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--drive", url, "--payload", str(payload),
         "--requests", str(n), "--concurrency", str(concurrency), "--warmup", str(warmup)],
        capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- set-up ---------------------------------------------------------------------------------


def train_and_register(epochs: int) -> tuple[str, list]:
    """Train two softmax models, register them as mnist v1 (champion) and v2 (challenger)."""
    import keras
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature
    from sklearn.datasets import load_digits

    from models.mnist import build_model
    from tasks import tracking
    from tasks.core.config import settings

    d = load_digits()
    imgs = np.pad(np.kron(d.images, np.ones((3, 3))), ((0, 0), (2, 2), (2, 2)))
    x = np.clip(imgs * (255.0 / 16.0), 0, 255).astype("float32")
    y = d.target
    s = settings()
    client = tracking.configure(s)
    accuracies = []
    for seed, n_train in ((0, 1500), (1, 300)):
        keras.utils.set_random_seed(seed)
        model = build_model({"variant": "softmax", "learning_rate": 0.01},
                            {"train": {"features": {"image": {"min": 0, "max": 255}}}})
        model.fit(x[:n_train], y[:n_train], epochs=epochs, batch_size=32, verbose=0)
        acc = float((model.predict(x[1500:], verbose=0).argmax(1) == y[1500:]).mean())
        accuracies.append(acc)
        with mlflow.start_run(experiment_id=tracking.experiment_id("mnist", s)):
            mlflow.log_metric("test_accuracy", acc)
            mlflow.log_param("objective", "classification")
            info = mlflow.tensorflow.log_model(
                model, name="model", signature=infer_signature(x[:2], model.predict(x[:2])),
                pip_requirements=["tensorflow-cpu", "keras"])
        mlflow.register_model(info.model_uri, "mnist")
    client.set_registered_model_alias("mnist", "champion", "1")
    client.set_registered_model_alias("mnist", "challenger", "2")
    print(f"trained two softmax models on digits: held-out accuracy {accuracies[0]:.3f} "
          f"(mnist v1, champion) and {accuracies[1]:.3f} (v2, challenger)", flush=True)
    return "models:/mnist/1", x[1500].tolist()


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def answer(url: str, payload: bytes) -> list:
    import httpx

    r = httpx.post(url, content=payload, timeout=30, headers={"Content-Type": "application/json"})
    r.raise_for_status()
    return r.json()["predictions"]


@dataclass
class Server:
    """One server process of a comparison."""

    label: str
    kind: str  # "mlp" or "mlflow"
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    base: str = ""

    @property
    def predict(self) -> str:
        return self.base + ("/v1/models/mnist:predict" if self.kind == "mlp" else
                            "/invocations")

    def start(self, root: Path, env: dict[str, str], model_uri: str) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        if self.kind == "mlp":
            cmd = [sys.executable, "-m", "tasks.cli", "serve", "--port", str(port),
                   "--model", "mnist", *self.args]
        else:
            cmd = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager",
                   "local", "-h", "127.0.0.1", "-p", str(port)]
        safe = "".join(ch if ch.isalnum() else "_" for ch in self.label)
        log = open(root / f"{safe}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env={**env, **self.env}, cwd=REPO, stdout=log,
                                     stderr=subprocess.STDOUT)

    def ready(self) -> None:
        if self.kind == "mlp":
            wait_http(self.base + "/readyz", self.proc)
            wait_http(self.base + "/v1/models/mnist", self.proc)
        else:
            wait_http(self.base + "/ping", self.proc)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server's process tree (user + system)."""
        import psutil

        total = 0.0
        root = psutil.Process(self.proc.pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total

    def load(self, payload: Path, args: argparse.Namespace, c: int) -> dict:
        """One round at concurrency ``c``, with the server's CPU time per request."""
        calls = self.batch_calls()
        before = self.cpu_seconds()
        out = run_load(self.predict, payload, args.requests, c, args.warmup)
        used = self.cpu_seconds() - before
        out["cpu_us"] = 1e6 * used / (args.requests + args.warmup)
        after = self.batch_calls()
        out["batch"] = ((after[0] - calls[0]) / (after[1] - calls[1])
                        if after[1] > calls[1] else None)
        return out

    def batch_calls(self) -> tuple[float, float]:
        """(requests, model calls) of the micro-batcher so far, from /metrics (0 if off)."""
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        if self.kind != "mlp":
            return 0.0, 0.0
        r = httpx.get(self.base + "/metrics", timeout=10)
        if r.status_code != 200:  # metrics off
            return 0.0, 0.0
        total = count = 0.0
        for fam in text_string_to_metric_families(r.text):
            if fam.name == "mlp_serving_batch_requests":
                for sample in fam.samples:
                    if sample.name.endswith("_sum"):
                        total += sample.value
                    elif sample.name.endswith("_count"):
                        count += sample.value
        return total, count


# Every server of a run. Only "shadow on" scores the challenger (the registry's
# challenger alias is set for all of them; the others sample none of their requests).
SERVERS = {
    "default": lambda: Server("default", "mlp", env={"MLP_SERVE_SHADOW_SAMPLE": "0"}),
    "batching off": lambda: Server("batching off", "mlp", args=["--no-batching"],
                                   env={"MLP_SERVE_SHADOW_SAMPLE": "0"}),
    "metrics off": lambda: Server("metrics off", "mlp",
                                  env={"MLP_SERVE_METRICS": "0", "MLP_SERVE_SHADOW_SAMPLE": "0"}),
    "shadow on": lambda: Server("shadow on", "mlp", env={"MLP_SERVE_SHADOW_SAMPLE": "1"}),
    "shadow 25%": lambda: Server("shadow 25%", "mlp", env={"MLP_SERVE_SHADOW_SAMPLE": "0.25"}),
    "mlflow models serve": lambda: Server("mlflow models serve", "mlflow"),
}
# comparison -> (A, B): ratios are B / A.
COMPARISONS = {
    "batching": ("batching off", "default"),
    "metrics": ("metrics off", "default"),
    "shadow": ("default", "shadow on"),
    "shadow-sampled": ("default", "shadow 25%"),
    "mlflow": ("mlflow models serve", "default"),
}


def measure(names: list[str], root: Path, env: dict[str, str], model_uri: str,
            payload: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Start every server the comparisons need at once, then measure each pair in turn."""
    servers = {label: SERVERS[label]() for name in names for label in COMPARISONS[name]}
    started = time.perf_counter()
    out = {}
    try:
        # Started inside the try: a server that fails to start must not leave the ones
        # already running behind (they would load the machine for every later bench).
        for srv in servers.values():
            srv.start(root, env, model_uri)
        for srv in servers.values():
            srv.ready()
        print(f"{len(servers)} servers ready in {time.perf_counter() - started:.0f} s: "
              f"{', '.join(servers)}", flush=True)
        import numpy as np

        answers = {label: answer(srv.predict, payload.read_bytes())
                   for label, srv in servers.items()}
        first = next(iter(answers.values()))
        for got in answers.values():  # all must compute the same thing
            np.testing.assert_allclose(got, first, rtol=1e-4, atol=1e-6)
        for name in names:
            a, b = (servers[label] for label in COMPARISONS[name])
            results: dict[str, dict[int, list[dict]]] = {a.label: {}, b.label: {}}
            for c in args.concurrency:
                for r in range(args.rounds):
                    for srv in ((a, b) if r % 2 == 0 else (b, a)):
                        results[srv.label].setdefault(c, []).append(srv.load(payload, args, c))
            out[name] = report(name, a.label, b.label, results)
    finally:
        for srv in servers.values():
            if srv.proc is not None:
                stop(srv.proc)
    return out


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(name: str, a: str, b: str, results: dict) -> dict:
    print(f"\n== {name}: {a} (A) vs {b} (B), medians of {len(next(iter(results[a].values())))}"
          " alternating rounds")
    print(f"{'conc':>5} | {'A req/s':>8} {'A p50':>7} {'A p99':>7} {'A cpu':>6} | "
          f"{'B req/s':>8} {'B p50':>7} {'B p99':>7} {'B cpu':>6} | {'B/A req/s':>9} "
          f"{'B/A p99':>8} {'B/A cpu':>8} | {'B batch':>7} | errors  versions")
    rows = {}
    for c in results[a]:
        ra, rb = results[a][c], results[b][c]
        fa = {k: _median(ra, k) for k in ("rps", "p50_ms", "p99_ms", "cpu_us")}
        fb = {k: _median(rb, k) for k in ("rps", "p50_ms", "p99_ms", "cpu_us")}
        errors = sum(r["errors"] for r in ra + rb)
        versions: dict[str, int] = {}
        for r in rb:
            for v, k in r["versions"].items():
                versions[v] = versions.get(v, 0) + k
        sizes = [r["batch"] for r in rb if r.get("batch")]
        fb["batch"] = statistics.median(sizes) if sizes else None
        rows[c] = {"A": fa, "B": fb, "rps_ratio": fb["rps"] / fa["rps"],
                   "p99_ratio": fb["p99_ms"] / fa["p99_ms"],
                   "cpu_ratio": fb["cpu_us"] / fa["cpu_us"], "errors": errors,
                   "B_versions": versions}
        print(f"{c:>5} | {fa['rps']:>8.0f} {fa['p50_ms']:>7.1f} {fa['p99_ms']:>7.1f} "
              f"{fa['cpu_us']:>6.0f} | {fb['rps']:>8.0f} {fb['p50_ms']:>7.1f} "
              f"{fb['p99_ms']:>7.1f} {fb['cpu_us']:>6.0f} | {rows[c]['rps_ratio']:>8.2f}x "
              f"{rows[c]['p99_ratio']:>7.2f}x {rows[c]['cpu_ratio']:>7.2f}x | "
              f"{'-' if fb['batch'] is None else format(fb['batch'], '.1f'):>7} | "
              f"{errors:>6}  {versions}")
    print("cpu = the server's CPU time per request, µs (steadier than req/s on a loaded "
          "machine); B batch = B's mean requests per model call (micro-batching)")
    return {"A": a, "B": b, "by_concurrency": rows}


TARGETS = {
    # (concurrency, check, text)
    "batching": [(64, lambda r: r["rps_ratio"] >= 1.5 and r["B"]["p99_ms"] <= 50,
                  "at concurrency 64: >= 1.5x req/s with p99 <= 50 ms (quiet machine)"),
                 (1, lambda r: r["rps_ratio"] >= 0.95, "at concurrency 1: costs <= 5%")],
    "metrics": [(None, lambda r: r["rps_ratio"] >= 0.95, "metrics on within 5% req/s")],
    "shadow": [(8, lambda r: r["p99_ratio"] <= 1.10,
                "at concurrency 8: the champion's p99 grows <= 10%")],
    "shadow-sampled": [(8, lambda r: r["p99_ratio"] <= 1.10,
                        "at concurrency 8, a quarter of the requests shadow-scored: the "
                        "champion's p99 grows <= 10%")],
    "mlflow": [(None, lambda r: r["rps_ratio"] >= 2, ">= 2x MLflow's req/s")],
}


def verdicts(name: str, out: dict) -> list[str]:
    lines = []
    for conc, check, text in TARGETS[name]:
        for c, row in out["by_concurrency"].items():
            if conc is None or c == conc:
                ok = check(row) and row["errors"] == 0
                lines.append(f"{name} c={c}: {text}: {'met' if ok else 'MISSED'}")
    return lines


def bench(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="mlp-bench-"))
    env = {**os.environ, "MLP_HOME": str(root),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "TF_CPP_MIN_LOG_LEVEL": "2", "GIT_PYTHON_REFRESH": "quiet",
           # No registry poll during the rounds (a poll costs tens of ms of CPU, which
           # would land in some rounds' CPU per request and not in others).
           "MLP_SERVE_POLL_SECONDS": "3600",
           # `mlflow models serve` execs `uvicorn` from PATH: use the venv's.
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    started = time.perf_counter()
    model_uri, instance = train_and_register(args.epochs)
    print(f"(set-up {time.perf_counter() - started:.0f} s)", flush=True)
    payload = root / "request.json"
    payload.write_text(json.dumps({"instances": [instance]}))
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"load average before: {' '.join(load)} ({os.cpu_count()} cores); "
          f"{args.requests} requests per round, {args.warmup} warm-up", flush=True)
    outcome = measure(args.compare, root, env, model_uri, payload, args)
    lines = [line for name in args.compare for line in verdicts(name, outcome[name])]
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"\nload average after: {' '.join(load)}")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(outcome, indent=2))
    print(f"(store and server logs in {root})")
    errors = sum(row["errors"] for o in outcome.values() for row in o["by_concurrency"].values())
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", default="batching,metrics,shadow",
                        help="comma-separated: batching, metrics, shadow, mlflow")
    parser.add_argument("--concurrency", default="1,8,64", help="comma-separated levels")
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds per server and concurrency")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--smoke", "--tiny", dest="tiny", action="store_true",
                        help="smoke run: every comparison, few requests, one round")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--drive", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--payload", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        args.url = args.drive
        args.concurrency = int(args.concurrency)
        drive_main(args)
        return 0
    if args.tiny:
        args.requests, args.warmup, args.rounds, args.epochs = 40, 5, 1, 1
        args.concurrency = "1,8"
    args.compare = [c.strip() for c in args.compare.split(",") if c.strip()]
    unknown = sorted(set(args.compare) - set(COMPARISONS))
    if unknown:
        parser.error(f"--compare: unknown {unknown}; choose from {sorted(COMPARISONS)}")
    try:
        args.concurrency = [int(c) for c in str(args.concurrency).split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency takes comma-separated integers, e.g. 1,8,64")
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
