"""Training step: tf.data over the TFRecord shards, Keras fit, everything tracked in MLflow."""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tasks import tracking
from tasks.config import Settings, settings
from tasks.spec import UseCaseSpec
from tasks.util import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

RESULT = "result.json"
MODEL_FILE = "model.keras"


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the model is not saved or registered."""


def split_files(dataset_dir: Path, split: str) -> list[str]:
    """Sorted shard paths of one split."""
    return sorted(glob.glob(str(Path(dataset_dir) / split / "*.tfrecord")))


def make_dataset(
    dataset_dir: Path,
    split: str,
    feature_spec: Mapping[str, Mapping[str, Any]],
    input_key: str,
    label_key: str,
    batch_size: int,
    shuffle_seed: int | None = None,
) -> Any:
    """A batched ``tf.data.Dataset`` of ``(inputs, labels)`` for one split.

    Records are parsed in large batches (vectorised ``parse_example``), decoded from raw
    bytes, cached in memory, then reshuffled per epoch when ``shuffle_seed`` is given.
    """
    import tensorflow as tf

    files = split_files(dataset_dir, split)
    if not files:
        raise FileNotFoundError(f"{dataset_dir}/{split}: no TFRecord shards")
    desc = {}
    for name in (input_key, label_key):
        fs = feature_spec[name]
        if fs["encoding"] == "raw":
            desc[name] = tf.io.FixedLenFeature([], tf.string)
        elif fs["encoding"] == "int64":
            desc[name] = tf.io.FixedLenFeature(fs["shape"], tf.int64)
        else:
            desc[name] = tf.io.FixedLenFeature(fs["shape"], tf.float32)

    def decode(records: Any) -> tuple[Any, Any]:
        ex = tf.io.parse_example(records, desc)
        x = ex[input_key]
        fs = feature_spec[input_key]
        if fs["encoding"] == "raw":
            x = tf.io.decode_raw(x, tf.dtypes.as_dtype(fs["dtype"]))
            x = tf.reshape(x, [-1, *fs["shape"]])
        return tf.cast(x, tf.float32), ex[label_key]

    ds = tf.data.TFRecordDataset(files).batch(4096).map(decode).cache().unbatch()
    if shuffle_seed is not None:
        ds = ds.shuffle(20_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _params_digest(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(params), sort_keys=True).encode()).hexdigest()[:16]


def _epoch_logger() -> Any:
    import keras
    import mlflow

    class EpochLogger(keras.callbacks.Callback):
        """Per-epoch metrics to MLflow and one readable progress line to the task log."""

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = {k: float(v) for k, v in (logs or {}).items()}
            mlflow.log_metrics(logs, step=epoch)
            line = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))
            log.info("epoch %d/%d %s (%.1fs)", epoch + 1, self.params["epochs"], line,
                     time.perf_counter() - self._t)
            if any(not math.isfinite(v) for v in logs.values()):
                self.model.stop_training = True

    return EpochLogger()


def _learning_curves(history: Mapping[str, list[float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({k.removeprefix("val_") for k in history})
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for name in (key, f"val_{key}"):
            if name in history:
                ax.plot(range(1, len(history[name]) + 1), history[name], marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train(
    spec: UseCaseSpec,
    params: Mapping[str, Any],
    dataset_dir: Path,
    out_dir: Path,
    run_key: str,
    data_checksum: str,
    s: Settings | None = None,
) -> dict[str, Any]:
    """Train the use case's model on the preprocessed dataset and track it in MLflow.

    Idempotent per run: when ``out_dir`` already holds a result for the same params, that
    result (MLflow run, model) is returned instead of training again.

    Args:
        spec: The use case.
        params: Run params (epochs, batch_size, learning_rate, variant, ...).
        dataset_dir: Output of the preprocessing step.
        out_dir: Where the trained model and reports of this run go.
        run_key: Partition key of the DAG run (tagged on the MLflow run).
        data_checksum: Raw snapshot checksum (tagged for lineage).
        s: Settings (default: from the environment).

    Returns:
        ``{"run_id", "model_uri", "model_path", "params_digest", "train_seconds", ...}``.

    Raises:
        TrainingDiverged: The loss became NaN or infinite.

    """
    import keras
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    s = s or settings()
    out_dir = Path(out_dir)
    digest = _params_digest(params)
    if (out_dir / RESULT).is_file():
        cached = read_json(out_dir / RESULT)
        if cached.get("params_digest") == digest:
            log.info("training for run %s already done (MLflow run %s); reusing it",
                     run_key, cached["run_id"])
            return cached

    dataset_dir = Path(dataset_dir)
    feature_spec = read_json(dataset_dir / "feature_spec.json")
    stats = read_json(dataset_dir / "stats.json")
    ds_manifest = read_json(dataset_dir / "manifest.json")
    seed = int(params.get("seed", 42))
    keras.utils.set_random_seed(seed)
    bs = int(params["batch_size"])
    mk = spec.model
    train_ds = make_dataset(dataset_dir, "train", feature_spec, mk.input_key, mk.label_key, bs,
                            shuffle_seed=seed)
    val_ds = make_dataset(dataset_dir, "validation", feature_spec, mk.input_key, mk.label_key,
                          1024)
    model = mk.build(params, stats)

    exp_id = tracking.experiment_id(spec.name, s)
    tags = {
        "use_case": spec.name,
        "run_key": run_key,
        "data_checksum": data_checksum,
        "git_commit": tracking.git_commit(),
    }
    with atomic_dir(out_dir) as tmp, mlflow.start_run(
        experiment_id=exp_id, run_name=f"{spec.name}-{run_key}", tags=tags
    ) as run:
        mlflow.log_params({**params, "params_digest": digest})
        mlflow.log_dict(stats, "preprocessing/stats.json")
        mlflow.log_dict(feature_spec, "preprocessing/feature_spec.json")
        ds_digest = hashlib.sha256(
            json.dumps(ds_manifest["splits"], sort_keys=True).encode()
        ).hexdigest()
        for split, context in (("train", "training"), ("validation", "validation"),
                               ("test", "testing")):
            tracking.log_dataset(dataset_dir / split, f"{spec.name}-{split}",
                                 f"{ds_digest}-{split}", context)

        tb_dir = tmp / "tensorboard"
        started = time.perf_counter()
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=int(params["epochs"]),
            verbose=0,
            callbacks=[
                _epoch_logger(),
                keras.callbacks.TensorBoard(log_dir=str(tb_dir), histogram_freq=0),
            ],
        )
        train_seconds = time.perf_counter() - started
        hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        final = {k: v[-1] for k, v in hist.items()}
        if any(not math.isfinite(v) for v in final.values()):
            mlflow.set_tag("diverged", "true")
            raise TrainingDiverged(
                f"{spec.name}: loss diverged ({final}); lower learning_rate "
                f"(was {params.get('learning_rate')}). The model is not registered."
            )
        mlflow.log_metric("train_seconds", train_seconds)
        mlflow.log_artifacts(str(tb_dir), "tensorboard")
        mlflow.log_artifact(str(_learning_curves(hist, tmp / "learning_curves.png")), "plots")

        model.save(tmp / MODEL_FILE)
        example = next(iter(val_ds.take(1)))[0].numpy()[:2].astype(np.float32)
        signature = infer_signature(example, model.predict(example, verbose=0))
        info = mlflow.tensorflow.log_model(
            model, name="model", signature=signature, input_example=example
        )
        result = {
            "run_id": run.info.run_id,
            "experiment_id": exp_id,
            "model_uri": info.model_uri,
            "model_path": str(out_dir / MODEL_FILE),
            "params": dict(params),
            "params_digest": digest,
            "train_seconds": round(train_seconds, 2),
            "history": hist,
        }
        write_json(tmp / RESULT, result)
    log.info("trained %s in %.1fs: %s (MLflow run %s)", spec.name, train_seconds, final,
             result["run_id"])
    return result
