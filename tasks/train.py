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

from tasks import plots, tracking
from tasks.config import Settings, settings
from tasks.spec import UseCaseSpec
from tasks.util import atomic_dir, read_json, write_json

PACKED = "features"

log = logging.getLogger(__name__)

RESULT = "result.json"
MODEL_FILE = "model.keras"  # what is served: raw inputs in
TRAINED_FILE = "trained.keras"  # the fitted model on preprocessed inputs (evaluation)


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
    label_key: str | None,
    batch_size: int,
    shuffle_seed: int | None = None,
    target: Any = None,
    stats: Mapping[str, Any] | None = None,
) -> Any:
    """A batched ``tf.data.Dataset`` of ``(inputs, targets)`` for one split.

    Records are parsed in large batches (vectorised ``parse_example``), decoded from raw
    bytes, cached in memory, then reshuffled per epoch when ``shuffle_seed`` is given.
    ``target(x, y, stats)`` replaces the label as the training target when given.
    """
    import tensorflow as tf

    files = split_files(dataset_dir, split)
    if not files:
        raise FileNotFoundError(f"{dataset_dir}/{split}: no TFRecord shards")
    keys = [k for k in (input_key, label_key) if k]
    desc = {}
    for name in keys:
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
        y = ex[label_key] if label_key else tf.zeros(tf.shape(x)[:1], tf.int64)
        return tf.cast(x, tf.float32), y

    ds = tf.data.TFRecordDataset(files).batch(4096).map(decode)
    if target is not None:  # on whole batches, before the cache: computed once, not per row
        ds = ds.map(lambda x, y: (x, target(x, y, stats)))
    ds = ds.cache().unbatch()
    if shuffle_seed is not None:
        ds = ds.shuffle(20_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def autoencoder_target(x: Any, y: Any, stats: Mapping[str, Any]) -> Any:
    """Training target of an autoencoder: its own input (already transformed)."""
    return x


def reconstruction_errors(model: Any, ds: Any, target: Any,
                          stats: Mapping[str, Any]) -> tuple[Any, Any]:
    """Per-row mean squared error between reconstruction and target, and the labels.

    ``ds`` yields ``(inputs, labels)`` (no target mapping), so labels stay available.
    """
    import numpy as np

    errors, labels = [], []
    for x, y in ds:
        recon = model.predict_on_batch(x)
        t = np.asarray(target(x, y, stats))
        errors.append(np.mean(np.square(recon - t).reshape(len(recon), -1), axis=1))
        labels.append(y.numpy())
    return np.concatenate(errors), np.concatenate(labels)


def threshold_table(errors: Any, labels: Any, rows: int = 15) -> list[dict[str, float]]:
    """Frauds caught and false positives at candidate thresholds (the books' table).

    Candidates are quantiles of the errors between the median normal error and the
    largest error, plus every anomaly's error (where the counts change).
    """
    import numpy as np

    normal, anomalous = errors[labels == 0], errors[labels == 1]
    grid = np.quantile(errors, np.linspace(0.5, 0.9999, rows * 4))
    cands = np.unique(np.concatenate([grid, anomalous - 1e-12]))
    table = []
    for t in cands:
        caught = int((anomalous > t).sum())
        fp = int((normal > t).sum())
        precision = caught / (caught + fp) if caught + fp else 0.0
        recall = caught / len(anomalous) if len(anomalous) else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        table.append({"threshold": float(t), "caught": caught, "false_positives": fp,
                      "precision": precision, "recall": recall, "f1": f1})
    return table


THRESHOLD_RULE = "threshold maximising F1 on the validation split (ties: the higher one)"


def choose_threshold(table: list[dict[str, float]]) -> dict[str, float]:
    """Apply :data:`THRESHOLD_RULE` to a threshold table."""
    return max(table, key=lambda r: (r["f1"], r["threshold"]))


def serving_model(spec: UseCaseSpec, trained: Any, stats: Mapping[str, Any],
                  threshold: float | None = None) -> Any:
    """Wrap the trained model into what is served: raw inputs in, answers out.

    Tabular use cases get the preprocessing transform (:func:`tasks.transform.keras_layer`)
    as their first layer, so clients send raw values; anomaly models also get the
    reconstruction-error score and the flag at the shipped threshold.
    """
    import keras

    from tasks.transform import keras_layer, layer_classes

    mk = spec.model
    if mk.input_key != PACKED:
        return trained
    feats = [f for f in spec.preprocess.features if f.transform != "uint8"]
    raw = keras.Input(shape=(len(feats),), dtype="float32", name="inputs")
    x = keras_layer(feats, stats["train"])(raw)
    out = trained(x)
    if mk.task == "anomaly":
        out = layer_classes()["AnomalyScore"](threshold, name="anomaly")([x, out])
    return keras.Model(raw, out, name=f"{spec.name}_serving")


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
    from mlflow.models import infer_signature

    s = s or settings()
    out_dir = Path(out_dir)
    if not int(params.get("epochs", 1)) and spec.model.default_epochs is not None:
        params = {**params, "epochs": int(spec.model.default_epochs(params))}
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
    target = mk.target or (autoencoder_target if mk.task in ("autoencoder", "anomaly")
                           else None)

    def dataset(split: str, batch: int, shuffle: int | None = None, tgt: Any = target) -> Any:
        return make_dataset(dataset_dir, split, feature_spec, mk.input_key, mk.label_key,
                            batch, shuffle_seed=shuffle, target=tgt, stats=stats)

    train_ds = dataset("train", bs, seed)
    val_ds = dataset("validation", 1024)
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
        mlflow.log_params({**params, "params_digest": digest, "task": mk.task})
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
        if any(not math.isfinite(v) for vals in hist.values() for v in vals):
            mlflow.set_tag("diverged", "true")
            raise TrainingDiverged(
                f"{spec.name}: training diverged (loss became NaN or infinite: {final}); "
                f"learning_rate {params.get('learning_rate')} is too large for this model. "
                "The model is not saved or registered."
            )
        mlflow.log_metric("train_seconds", train_seconds)
        mlflow.log_artifacts(str(tb_dir), "tensorboard")
        curves = plots.learning_curves([("", hist)], tmp / "learning_curves.png")
        mlflow.log_artifact(str(curves), "plots")

        threshold = None
        if mk.task == "anomaly":
            errors, labels = reconstruction_errors(
                model, dataset("validation", 4096, tgt=None), target, stats)
            table = threshold_table(errors, labels)
            chosen = choose_threshold(table)
            threshold = chosen["threshold"]
            write_json(tmp / "threshold_table.json", {"rule": THRESHOLD_RULE,
                                                      "chosen": chosen, "table": table})
            mlflow.log_dict({"rule": THRESHOLD_RULE, "chosen": chosen, "table": table},
                            "evaluation/threshold_table.json")
            mlflow.log_params({"threshold": threshold, "threshold_rule": THRESHOLD_RULE})
            log.info("threshold %.6g chosen on validation (%s): %d of %d anomalies caught, "
                     "%d false positives", threshold, THRESHOLD_RULE, chosen["caught"],
                     int(labels.sum()), chosen["false_positives"])

        model.save(tmp / TRAINED_FILE)
        served = serving_model(spec, model, stats, threshold)
        served.save(tmp / MODEL_FILE)
        example = _serving_example(spec, dataset_dir, feature_spec, stats)
        signature = infer_signature(example, _as_numpy(served.predict(example, verbose=0)))
        info = mlflow.tensorflow.log_model(
            served, name="model", signature=signature, input_example=example,
            code_paths=[str(Path(__file__).parent / "transform.py")],
        )
        result = {
            "run_id": run.info.run_id,
            "experiment_id": exp_id,
            "model_uri": info.model_uri,
            "model_path": str(out_dir / MODEL_FILE),
            "trained_path": str(out_dir / TRAINED_FILE),
            "threshold": threshold,
            "params": dict(params),
            "params_digest": digest,
            "train_seconds": round(train_seconds, 2),
            "history": hist,
        }
        write_json(tmp / RESULT, result)
    log.info("trained %s in %.1fs: %s (MLflow run %s)", spec.name, train_seconds, final,
             result["run_id"])
    return result


def _as_numpy(out: Any) -> Any:
    import numpy as np

    if isinstance(out, dict):
        return {k: np.asarray(v) for k, v in out.items()}
    return np.asarray(out)


def _serving_example(spec: UseCaseSpec, dataset_dir: Path, feature_spec: Mapping[str, Any],
                     stats: Mapping[str, Any]) -> Any:
    """Two raw inputs as a client would send them (for the MLflow signature and example)."""
    import numpy as np

    mk = spec.model
    if mk.input_key != PACKED:  # images: two real validation inputs
        x, _ = next(iter(make_dataset(dataset_dir, "validation", feature_spec, mk.input_key,
                                      mk.label_key, 2)))
        return x.numpy().astype(np.float32)
    # Invert the transforms to raw values only where they are affine; the example only
    # needs plausible raw inputs, so a row of training means serves otherwise.
    feats = [f for f in spec.preprocess.features if f.transform != "uint8"]
    raw = []
    for f in feats:
        st = stats["train"]["features"][f.name]
        if "vocab" in st:
            raw.append(float(st["vocab"][0]))
        else:
            value = st["mean"]
            raw.append(float(np.expm1(value) if f.log1p else value))
    return np.tile(np.asarray(raw, np.float32), (2, 1))
