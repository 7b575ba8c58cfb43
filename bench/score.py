"""Batch-scoring throughput: `mlp score`'s Beam pipeline vs a plain model.predict loop.

Run: .venv/bin/python bench/score.py [--rows 20000] [--variant cnn] [--repeats 2]
     .venv/bin/python bench/score.py --use-case creditcard_fraud [--rows 200000]
     .venv/bin/python bench/score.py --tiny          # seconds: a smoke run of the bench

Both sides score the same rows of the same file with the same registered version, side
by side in one run, in a throw-away data root. ``mnist`` (default): an IDX file and the
books' CNN (untrained weights: speed does not depend on them). ``creditcard_fraud``: a
CSV of the Kaggle schema and the served autoencoder as the platform exports it
(transform layer + model + anomaly head, built by the training step's own code).

  * predict loop: read the file (IDX reader / pyarrow CSV), load the registered model
    (``mlflow.tensorflow``), ``model.predict`` over every row in batches: predictions in
    memory;
  * mlp score:    :func:`tasks.steps.score.score` on the in-process Beam runner: read and
    check the file, RunInference over the served model, Parquet files with row keys,
    drift histograms and report (the version carries its references as a pipeline run's
    does); the MLflow run is not recorded.

It prints each side's seconds and rows/s and the ratio (target >= 0.8x on the in-process
runner). Machines are noisy: compare ratios from one run, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
BATCH = 2048


def images(rows: int) -> np.ndarray:
    """``rows`` real 28x28 images: Fashion-MNIST when installed, else scikit-learn digits."""
    from tasks.data.idx import read_idx

    if FASHION.is_file():
        x = read_idx(FASHION, ndim=3)
    else:
        from tests.conftest import digits_as_mnist

        x = digits_as_mnist(1797, 0)["train_images"]
    return np.resize(x, (rows, 28, 28)) if rows > len(x) else x[:rows]


def mnist_model(variant: str, root: Path, rows: int) -> tuple[object, dict, Path]:
    """The books' mnist model (untrained), its input file and a sample of its columns."""
    import keras

    from models.mnist import build_model
    from tasks.data.idx import write_idx

    x = images(rows)
    (root / "input").mkdir()
    path = write_idx(root / "input" / "bench-images-idx3-ubyte", x)
    keras.utils.set_random_seed(0)
    model = build_model({"variant": variant}, {"train": {"features": {"image": {
        "min": 0, "max": 255}}}})
    return model, {"image": x[:2000]}, path


def fraud_model(root: Path, rows: int) -> tuple[object, dict, Path]:
    """The served fraud autoencoder as training exports it, and a label-less CSV."""
    import keras
    import pyarrow.csv as pv

    from models.creditcard_fraud import SPEC, generate
    from tasks import objectives
    from tasks.core.files import read_json
    from tasks.steps.preprocess import preprocess
    from tasks.steps.train import serving_model

    (root / "input").mkdir()
    generate(root / "input", rows, 0)
    files = SPEC.source.files(str(root / "input"))
    preprocess(SPEC.source, files, SPEC.preprocess, SPEC.split, root / "dataset")
    stats = read_json(root / "dataset" / "stats.json")
    keras.utils.set_random_seed(0)
    trained = SPEC.model.build({"learning_rate": 1e-3}, stats)
    served = serving_model(SPEC, trained, stats, objectives.get("anomaly"),
                           {"threshold": 0.05})
    table = pv.read_csv(root / "input" / "creditcard.csv").drop(["Class"])
    path = root / "input" / "transactions.csv"
    pv.write_csv(table, path, pv.WriteOptions(quoting_style="none"))
    (root / "input" / "creditcard.csv").unlink()
    return served, {c: table[c].to_numpy()[:5000] for c in table.column_names}, path


def register(use_case: str, model: object, sample: dict) -> str:
    """Register the model with the references a pipeline run logs (histograms)."""
    import mlflow

    from tasks import tracking
    from tasks.features.profile import data_columns, profile
    from tasks.spec import catalog
    from tasks.steps.model_io import served_inputs
    from tasks.steps.references import (
        PREDICTIONS_ARTIFACT,
        STATS_ARTIFACT,
        named_outputs,
        prediction_histograms,
    )

    spec = catalog.get(use_case)
    client = tracking.configure()
    with mlflow.start_run(experiment_id=tracking.experiment_id(use_case)):
        info = mlflow.tensorflow.log_model(model, name="model", pip_requirements=["keras"])
        cols = data_columns(spec.preprocess, spec.source.schema())
        mlflow.log_dict({"train": {"histograms": profile(cols, [sample])}}, STATS_ARTIFACT)
        answers = named_outputs(model, model.predict(served_inputs(spec, model, sample),
                                                     verbose=0))
        mlflow.log_dict(prediction_histograms(answers), PREDICTIONS_ARTIFACT)
    mv = mlflow.register_model(info.model_uri, use_case)
    client.set_registered_model_alias(use_case, "champion", str(mv.version))
    return str(mv.version)


def read_rows(use_case: str, path: Path) -> np.ndarray:
    """The plain way to read the file into the model's input (float32)."""
    if use_case == "mnist":
        from tasks.data.idx import read_idx

        return read_idx(path, ndim=3).astype("float32")
    import pyarrow.csv as pv

    from models.creditcard_fraud import V_COLUMNS

    table = pv.read_csv(path, convert_options=pv.ConvertOptions(
        include_columns=list(V_COLUMNS)))
    return np.stack([table[c].to_numpy() for c in V_COLUMNS], axis=1).astype("float32")


def predict_loop(use_case: str, path: Path, version: str) -> dict[str, float]:
    """The plain way: read the file, load the model, model.predict over every row."""
    import mlflow

    from tasks.features.layers import register_all

    t0 = time.perf_counter()
    x = read_rows(use_case, path)
    t1 = time.perf_counter()
    register_all()
    model = mlflow.tensorflow.load_model(f"models:/{use_case}/{version}")
    t2 = time.perf_counter()
    out = model.predict(x, batch_size=BATCH, verbose=0)
    t3 = time.perf_counter()
    assert len(next(iter(out.values())) if isinstance(out, dict) else out) == len(x)
    return {"seconds": t3 - t0, "read": t1 - t0, "load": t2 - t1, "predict": t3 - t2}


def pipeline(use_case: str, path: Path, version: str, out: Path) -> dict[str, float]:
    """`mlp score` on the in-process runner (no MLflow run)."""
    from tasks.spec import catalog
    from tasks.steps.score import score

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    result = score(catalog.get(use_case), str(path), version=version, out_dir=out,
                   track=False)  # batches of the use case's batch size (mnist 4096)
    return {"seconds": time.perf_counter() - t0, "beam": result.seconds, "rows": result.rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--use-case", default="mnist", choices=("mnist", "creditcard_fraud"))
    parser.add_argument("--rows", type=int, help="rows to score (default: mnist 20,000, "
                        "creditcard_fraud 200,000)")
    parser.add_argument("--variant", default="cnn", choices=("softmax", "dnn", "cnn"),
                        help="mnist model")
    parser.add_argument("--repeats", type=int, default=2, help="best of N for each side")
    parser.add_argument("--smoke", "--tiny", dest="tiny", action="store_true",
                        help="500 rows, softmax, 1 repeat")
    args = parser.parse_args()
    if args.tiny:
        args.rows, args.variant, args.repeats = 500, "softmax", 1
    uc = args.use_case
    rows = args.rows or (20000 if uc == "mnist" else 200_000)
    root = Path(tempfile.mkdtemp(prefix="mlp-bench-score-"))
    os.environ["MLP_HOME"] = str(root)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLP_BEAM_RUNNER"] = "direct"
    try:
        model, sample, path = (mnist_model(args.variant, root, rows) if uc == "mnist"
                               else fraud_model(root, rows))
        version = register(uc, model, sample)
        base, mine = [], []
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            base.append(predict_loop(uc, path, version))
            mine.append(pipeline(uc, path, version, root / "scores"))
        b = min(base, key=lambda r: r["seconds"])
        m = min(mine, key=lambda r: r["seconds"])
        assert m["rows"] == rows, m
        what = (f"mnist {args.variant}, {rows:,} rows of a 28x28 IDX file" if uc == "mnist"
                else f"creditcard_fraud served autoencoder, {rows:,} rows of a CSV")
        print(f"\nbatch scoring: {what}, in-process runner, best of {args.repeats}")
        print(f"{'':46} {'seconds':>8} {'rows/s':>10}")
        print(f"{'model.predict loop (read + load + predict)':46} {b['seconds']:>8.2f} "
              f"{rows / b['seconds']:>10,.0f}   (read {b['read']:.2f} s, load "
              f"{b['load']:.2f} s, predict {b['predict']:.2f} s)")
        print(f"{'mlp score (file -> Parquet + drift report)':46} {m['seconds']:>8.2f} "
              f"{rows / m['seconds']:>10,.0f}   (Beam pipeline {m['beam']:.2f} s)")
        print(f"ratio mlp score / predict loop: {b['seconds'] / m['seconds']:.2f}x "
              "(target >= 0.8x on the in-process runner)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
