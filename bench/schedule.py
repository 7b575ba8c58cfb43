"""Epochs to the bar: the books' CNN on Fashion-MNIST under each learning-rate schedule.

Run:  .venv/bin/python bench/schedule.py [--only today,wc5,...] [--smoke]

The main job (``make run``) must reach test accuracy >= 0.90 (stretch: 0.91) as soon as
possible. This trains the mnist CNN exactly as the train step does (the use case's own
builder, ``models/mnist.py``, with its run params; the platform's dataset from its own
Beam preprocessing; ``model.fit`` with per-epoch validation) under each schedule of
``SCHEDULES``, one process each, one after the other, and prints per epoch the
validation and test accuracy and the epoch's seconds, then the first epoch at which each
schedule passed 0.90 and 0.91 on the test split. Accuracy does not depend on the machine's
load; the seconds do (the load average is printed with them).

``--smoke`` runs two schedules for one epoch on a few hundred generated images.
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

# name -> (run params of the mnist use case, what it is)
SCHEDULES: dict[str, tuple[dict[str, Any], str]] = {
    "today": ({"batch_size": 128, "learning_rate": 1e-3, "epochs": 5},
              "Adam 1e-3 constant, batch 128, 5 epochs (make run)"),
    "wc5": ({"batch_size": 128, "learning_rate": 2e-3, "epochs": 5,
             "lr_schedule": "warmup_cosine"},
            "warm-up to 2e-3 then cosine to 0, batch 128, 5 epochs"),
    "wc5-bf16": ({"batch_size": 128, "learning_rate": 2e-3, "epochs": 5,
                  "lr_schedule": "warmup_cosine", "precision": "mixed_bfloat16"},
                 "wc5 in mixed_bfloat16 (bf16 compute, fp32 weights)"),
    "wc4": ({"batch_size": 128, "learning_rate": 2e-3, "epochs": 4,
             "lr_schedule": "warmup_cosine"},
            "warm-up to 2e-3 then cosine to 0, batch 128, 4 epochs"),
    "wc4-256": ({"batch_size": 256, "learning_rate": 3e-3, "epochs": 4,
                 "lr_schedule": "warmup_cosine"},
                "warm-up to 3e-3 then cosine to 0, batch 256, 4 epochs"),
    "wc3": ({"batch_size": 128, "learning_rate": 2e-3, "epochs": 3,
             "lr_schedule": "warmup_cosine"},
            "warm-up to 2e-3 then cosine to 0, batch 128, 3 epochs"),
}
BARS = (0.90, 0.91)


def child(params: dict[str, Any], dataset: Path, out: Path) -> None:
    """Train one schedule; write per-epoch figures as JSON lines to ``out``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from tasks import objectives
    from tasks.data.tfrecord import DatasetReader
    from tasks.spec import catalog
    from tasks.steps.train import resolve_params

    spec = catalog.get("mnist")
    defaults = {k: p.default for k, p in spec.params.items()}
    params = resolve_params(spec, {**defaults, **params, "variant": "cnn"})
    reader = DatasetReader.open(dataset)
    objective = objectives.get(spec.model.objective)
    keras.utils.set_random_seed(42)
    model = spec.model.build(params, reader.stats)
    train = objective.dataset(reader, spec.model, "train", int(params["batch_size"]), 42)
    val = objective.dataset(reader, spec.model, "validation", 1024)
    test = objective.dataset(reader, spec.model, "test", 1024)

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            seconds = time.perf_counter() - self.t0  # fit + validation, as the run's lines
            _, test_acc = self.model.evaluate(test, verbose=0)
            with open(out, "a") as fh:
                fh.write(json.dumps({"epoch": epoch + 1, "seconds": seconds,
                                     "val_accuracy": float(logs["val_accuracy"]),
                                     "test_accuracy": float(test_acc),
                                     "load": os.getloadavg()[0]}) + "\n")

    model.fit(train, validation_data=val, epochs=int(params["epochs"]), verbose=0,
              callbacks=[Record()])


def prepare(work: Path, smoke: bool) -> Path:
    """The platform's mnist dataset, from its own ingest and Beam preprocessing."""
    from dataclasses import replace

    from tasks.spec import catalog
    from tasks.steps.ingest import ingest, snapshot_files
    from tasks.steps.preprocess import preprocess

    spec = catalog.get("mnist")
    location, split = spec.source.default_location, spec.split
    if smoke:
        import numpy as np

        from tasks.data.idx import write_idx

        rng = np.random.default_rng(0)
        location = work / "idx"
        location.mkdir()
        for part, n in (("train", 400), ("t10k", 100)):
            labels = rng.integers(0, 10, n).astype(np.uint8)
            # images a CNN can learn: each class a brighter band of rows
            images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
            for i, y in enumerate(labels):
                images[i, 2 * y:2 * y + 6] += 150
            write_idx(location / f"{part}-images-idx3-ubyte", images)
            write_idx(location / f"{part}-labels-idx1-ubyte", labels)
        split = replace(split, validation_size=50)
    snap = work / "raw"
    ingest(spec.source, str(location), snap)
    out = work / "dataset"
    preprocess(spec.source, snapshot_files(snap), spec.preprocess, split, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated schedules: " + ", ".join(SCHEDULES))
    parser.add_argument("--smoke", action="store_true", help="tiny data, one epoch, two runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        return child(json.loads(a.child), Path(a.dataset), Path(a.out))
    names = a.only.split(",") if a.only else list(SCHEDULES)
    if a.smoke:
        names = names[:2]
    print(f"bench/schedule.py: {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mlp-bench-schedule-") as tmp:
        work = Path(tmp)
        os.environ["MLP_HOME"] = str(work / "home")
        t0 = time.perf_counter()
        dataset = prepare(work, a.smoke)
        print(f"  dataset (ingest + Beam preprocessing) in {time.perf_counter() - t0:.0f} s",
              flush=True)
        results = {}
        for name in names:
            params, what = SCHEDULES[name]
            if a.smoke:
                params = {**params, "epochs": 1, "batch_size": 32}
            out = work / f"{name}.jsonl"
            print(f"\n  {name}: {what}", flush=True)
            subprocess.run([sys.executable, __file__, "--child", json.dumps(params),
                            "--dataset", str(dataset), "--out", str(out)],
                           check=True, cwd=ROOT, stderr=subprocess.DEVNULL)
            results[name] = [json.loads(line) for line in out.read_text().splitlines()]
            for r in results[name]:
                print(f"    epoch {r['epoch']}: val {r['val_accuracy']:.4f} test "
                      f"{r['test_accuracy']:.4f} ({r['seconds']:.0f} s, load {r['load']:.1f})",
                      flush=True)
    rows = []
    for name, recs in results.items():
        first = [next((r["epoch"] for r in recs if r["test_accuracy"] >= bar), None)
                 for bar in BARS]
        rows.append([name, SCHEDULES[name][1], recs[-1]["test_accuracy"],
                     *[str(f) if f else "never" for f in first],
                     sum(r["seconds"] for r in recs)])
    print()
    print(table(["schedule", "what", "final test accuracy",
                 *[f"first epoch >= {b}" for b in BARS], "seconds (under load)"], rows))
    print(f"\nbench/schedule.py done: {load()}")


if __name__ == "__main__":
    main()
