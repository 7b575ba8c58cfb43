"""Serving benchmark: this platform's REST server vs ``mlflow models serve``, same model.

Trains a small MNIST softmax model (the books' softmax, on scikit-learn's real digits
upscaled to 28x28), registers it in a throw-away MLflow store, then serves it in turn with

- ``mlp serve`` (``tasks/serving/``: Starlette + uvicorn, concrete tf.function), and
- ``mlflow models serve -m models:/mnist/1 --env-manager local`` (one worker, its default),

and drives each, alone on the machine, with the same bounded loopback load from a separate
client process (aiohttp): a fixed number of batch-1 ``{"instances": [...]}`` requests at a
fixed concurrency after a short warm-up. Prints req/s, p50 and p99 for each and the ratios.

Usage::

    .venv/bin/python bench/serving.py [--requests 2000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
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
    issued = 0
    timeout = aiohttp.ClientTimeout(total=30)
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
            "p99_ms": pct(0.99)}


def drive_main(args: argparse.Namespace) -> None:
    payload = Path(args.payload).read_bytes()
    asyncio.run(_drive(args.url, payload, args.warmup, args.concurrency))
    print(json.dumps(asyncio.run(_drive(args.url, payload, args.requests, args.concurrency))))


def run_load(url: str, payload: Path, n: int, concurrency: int, warmup: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--drive", url, "--payload", str(payload),
         "--requests", str(n), "--concurrency", str(concurrency), "--warmup", str(warmup)],
        capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- set-up ---------------------------------------------------------------------------------


def train_and_register(env: dict[str, str]) -> tuple[str, list]:
    """Train the softmax model, register it as mnist v1 (champion); return URI and input."""
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
    keras.utils.set_random_seed(0)
    model = build_model({"variant": "softmax", "learning_rate": 0.01},
                        {"train": {"features": {"image": {"min": 0, "max": 255}}}})
    model.fit(x[:1500], y[:1500], epochs=5, batch_size=32, verbose=0)
    acc = float((model.predict(x[1500:], verbose=0).argmax(1) == y[1500:]).mean())
    s = settings()
    client = tracking.configure(s)
    with mlflow.start_run(experiment_id=tracking.experiment_id("mnist", s)):
        mlflow.log_metric("test_accuracy", acc)
        info = mlflow.tensorflow.log_model(
            model, name="model", signature=infer_signature(x[:2], model.predict(x[:2])),
            pip_requirements=["tensorflow-cpu", "keras"])
    mv = mlflow.register_model(info.model_uri, "mnist")
    client.set_registered_model_alias("mnist", "champion", str(mv.version))
    print(f"trained softmax on digits: held-out accuracy {acc:.3f}; registered mnist "
          f"v{mv.version}", flush=True)
    return f"models:/mnist/{mv.version}", x[1500].tolist()


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
        time.sleep(0.5)
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


def bench(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="mlp-bench-"))
    env = {**os.environ, "MLP_HOME": str(root),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "TF_CPP_MIN_LOG_LEVEL": "2", "GIT_PYTHON_REFRESH": "quiet",
           # `mlflow models serve` execs `uvicorn` from PATH: use the venv's.
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    model_uri, instance = train_and_register(env)
    payload = root / "request.json"
    payload.write_text(json.dumps({"instances": [instance]}))
    results, answers = {}, {}
    servers = {
        "mlp serve": lambda p: [sys.executable, "-m", "tasks.cli", "serve", "--port", str(p),
                                "--model", "mnist"],
        "mlflow models serve": lambda p: [str(BIN / "mlflow"), "models", "serve", "-m",
                                          model_uri, "--env-manager", "local", "-h",
                                          "127.0.0.1", "-p", str(p)],
    }
    ready = {"mlp serve": "/readyz", "mlflow models serve": "/ping"}
    predict = {"mlp serve": "/v1/models/mnist:predict", "mlflow models serve": "/invocations"}
    for name, cmd in servers.items():
        if args.only and not name.startswith(args.only):
            continue
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = open(root / f"{name.split()[0]}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(cmd(port), env=env, cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_http(base + ready[name], proc)
            if name == "mlp serve":  # ready once the champion is loaded
                wait_http(base + "/v1/models/mnist", proc)
            print(f"{name}: serving on {base}; {args.requests} requests at concurrency "
                  f"{args.concurrency} (after {args.warmup} warm-up)", flush=True)
            answers[name] = answer(base + predict[name], payload.read_bytes())
            results[name] = run_load(base + predict[name], payload, args.requests,
                                     args.concurrency, args.warmup)
            results[name]["url"] = base + predict[name]
        finally:
            stop(proc)
            log.close()
    if args.only:
        print(json.dumps(results, indent=2))
        return 0
    import numpy as np

    # Both servers must compute the same thing, or the comparison means nothing.
    np.testing.assert_allclose(answers["mlp serve"], answers["mlflow models serve"],
                               rtol=1e-4, atol=1e-6)
    mine, theirs = results["mlp serve"], results["mlflow models serve"]
    print()
    print(f"{'server':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, r in results.items():
        print(f"{name:<22}{r['rps']:>9.1f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
              f"{r['errors']:>8}")
    ratio = mine["rps"] / theirs["rps"]
    print(f"\nthroughput ratio mlp/mlflow: {ratio:.1f}x; p50 ratio mlflow/mlp: "
          f"{theirs['p50_ms'] / mine['p50_ms']:.1f}x; p99 ratio mlflow/mlp: "
          f"{theirs['p99_ms'] / mine['p99_ms']:.1f}x")
    met = ratio >= 2 and mine["p99_ms"] < theirs["p99_ms"] and mine["errors"] == 0
    print(f"target (>= 2x MLflow's req/s, lower p99, no errors): {'met' if met else 'MISSED'}")
    if getattr(args, "smoke", False):  # speed is not judged, errors are; nothing left behind
        shutil.rmtree(root, ignore_errors=True)
        return 0 if mine["errors"] == theirs["errors"] == 0 else 1
    print(f"(store and server logs in {root})")
    return 0 if met else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--only", choices=["mlp", "mlflow"],
                        help="measure one server only (no comparison)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few requests (make test runs it so the script cannot rot); "
                             "the target is printed but only request errors set the "
                             "exit code")
    parser.add_argument("--drive", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--payload", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive:
        args.url = args.drive
        drive_main(args)
        return 0
    if args.smoke:
        args.requests, args.warmup, args.concurrency = 40, 5, 2
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
