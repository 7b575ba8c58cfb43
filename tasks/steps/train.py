"""Training step: tf.data over the TFRecord shards, Keras fit, everything tracked in MLflow.

:func:`train` is a fixed sequence: resolve the params, reuse an earlier result of the same
run and params, fit, refuse a diverged model, let the objective calibrate on validation,
export what is served (transform layer + model + objective head) and log it. What differs
between model kinds lives in their objective (:mod:`tasks.objectives`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks import objectives, tracking
from tasks.core.config import Settings, settings
from tasks.core.errors import PermanentError
from tasks.core.files import atomic_dir, read_json, write_json
from tasks.core.hardware import resolve_precision
from tasks.core.progress import report
from tasks.core.run import (
    ABLATION,
    SERVED_MODEL,
    TRAIN_HISTORY,
    TRAIN_RESULT,
    TRAINED_MODEL,
    Snapshot,
    TrainedModel,
)
from tasks.core.timing import phase
from tasks.data.tfrecord import PACKED, DatasetReader
from tasks.features.schema import KEY as INPUT_SCHEMA_KEY
from tasks.objectives import plots
from tasks.objectives.base import Calibration, Objective, predict
from tasks.objectives.pictures import training_pictures
from tasks.spec import UseCaseSpec
from tasks.steps import distribute
from tasks.steps.infra_validation import SERVING_EXAMPLE, write_serving_example
from tasks.steps.tabular import model_schema

INPUT_SCHEMA_ARTIFACT = "serving/input_schema.json"

log = logging.getLogger(__name__)


class TrainingDiverged(PermanentError, RuntimeError):
    """The loss became NaN/inf; the model is not saved or registered."""


def resolve_params(spec: UseCaseSpec, params: Mapping[str, Any]) -> dict[str, Any]:
    """The run params with ``epochs=0`` and ``precision=auto`` resolved for this run.

    ``epochs=0`` becomes the use case's default for the params; ``precision=auto`` the
    policy this CPU runs fastest (:mod:`tasks.core.hardware`), so the run records what
    it trained with.
    """
    params = dict(params)
    if not int(params.get("epochs", 1)) and spec.model.default_epochs is not None:
        params["epochs"] = int(spec.model.default_epochs(params))
    if "precision" in params:
        params["precision"] = resolve_precision(str(params["precision"]))
    return params


HISTOGRAM_SNAPSHOTS = 20

# Training steps per call of Keras's compiled train function, when the use case's compile
# left it at 1. The same batches in the same order: a tiny fp32 model's weights are the
# same to the last bit (tested); multi-threaded bf16 kernels differ run to run anyway. A
# tiny model's step is mostly the per-call cost of leaving Python (a logistic regression's
# 60 epochs 2.2-2.4 s -> 1.1-1.3 s), a large one's step hides it (bench/train.py).
STEPS_PER_EXECUTION = 32


def histogram_freq(params: Mapping[str, Any]) -> int:
    """Epochs between TensorBoard's weight histograms: every epoch up to 20 epochs."""
    return max(1, math.ceil(int(params.get("epochs", 1)) / HISTOGRAM_SNAPSHOTS))


def params_digest(params: Mapping[str, Any]) -> str:
    """A short stable digest of the params (a rerun with other params trains again)."""
    return hashlib.sha256(json.dumps(dict(params), sort_keys=True).encode()).hexdigest()[:16]


# Epoch metrics wait at most this long before they go to MLflow (the last ones when the
# fit ends). A tiny model's epochs then go in one batch: an asynchronous MLflow write per
# epoch cost 1.9 s of a 4.2 s fit of 60 tiny epochs (2.3-2.5 s batched, fresh processes).
LOG_EVERY_SECONDS = 5.0


def _epoch_logger(lines: bool = True) -> Any:
    import keras
    import mlflow
    from mlflow.entities import Metric

    class EpochLogger(keras.callbacks.Callback):
        """Per-epoch metrics to MLflow and one readable progress line per epoch."""

        def on_train_begin(self, logs: Any = None) -> None:
            self._pending: list[Metric] = []
            self._sent = time.perf_counter()

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = {k: float(v) for k, v in (logs or {}).items()}
            stamp = int(time.time() * 1000)
            self._pending += [Metric(k, v, stamp, epoch) for k, v in logs.items()]
            if time.perf_counter() - self._sent >= LOG_EVERY_SECONDS:
                # Off the critical path: MLflow's queue writes them while the next epoch
                # trains, and the run's end waits for it (a database commit per batch).
                self._send(synchronous=False)
            line = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))
            if lines:
                report("  epoch %d/%d %s (%.1fs)", epoch + 1, self.params["epochs"], line,
                       time.perf_counter() - self._t)
            if any(not math.isfinite(v) for v in logs.values()):
                self.model.stop_training = True

        def _send(self, synchronous: bool) -> None:
            if self._pending:
                mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id,
                                                metrics=self._pending, synchronous=synchronous)
            self._pending = []
            self._sent = time.perf_counter()

        def on_train_end(self, logs: Any = None) -> None:
            self._send(synchronous=True)
            # The queue's writes land before the step writes anything else: two writers
            # on one SQLite store can deadlock, and SQLite then fails one at once with
            # "database is locked" (seen under load), whatever the busy timeout.
            mlflow.flush_async_logging()

    return EpochLogger()


def amortise_steps(model: Any) -> None:
    """Run :data:`STEPS_PER_EXECUTION` steps per call, unless the use case chose its own."""
    if getattr(model, "steps_per_execution", None) == 1:
        model.steps_per_execution = STEPS_PER_EXECUTION


def fit(model: Any, reader: DatasetReader, spec: UseCaseSpec, objective: Objective,
        params: Mapping[str, Any], tensorboard_dir: Path, callbacks: Sequence[Any] = (),
        epoch_lines: bool = True, strategy: Any = None) -> tuple[dict[str, list[float]], float]:
    """Fit on the training split, validating each epoch; returns history and seconds.

    ``callbacks`` run after the epoch's logs are recorded (a tuning trial's pruner);
    ``epoch_lines=False`` keeps the per-epoch progress lines off the console. Under a
    distributed ``strategy`` (:mod:`tasks.steps.distribute`) the batch size is the global
    batch and only the chief records the logs.
    """
    import keras

    mk = spec.model
    seed = int(params.get("seed", 42))
    train_ds = objective.dataset(reader, mk, "train", int(params["batch_size"]), seed)
    val_ds = objective.dataset(reader, mk, "validation", 1024)
    cbs = [*objective.callbacks(params)]  # first: they add to the logs recorded
    if distribute.is_chief():
        cbs += [_epoch_logger(epoch_lines),
                # Weight histograms per epoch, as the books show (`mlp tensorboard`), at
                # most HISTOGRAM_SNAPSHOTS of them (each costs ~15 ms of a tiny epoch).
                keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir),
                                            histogram_freq=histogram_freq(params)),
                *callbacks]
    amortise_steps(model)
    started = time.perf_counter()
    if not distribute.is_default(strategy):
        from tasks.data.tfrecord import split_files

        hist = distribute.fit_loop(model, train_ds, val_ds, int(params["epochs"]), cbs,
                                   strategy, len(split_files(reader.dataset_dir, "train")))
        return hist, time.perf_counter() - started
    history = model.fit(train_ds, validation_data=val_ds, epochs=int(params["epochs"]),
                        verbose=0, callbacks=cbs)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    return hist, time.perf_counter() - started


def check_finite(name: str, hist: Mapping[str, list[float]], params: Mapping[str, Any]) -> None:
    """Refuse a diverged model (NaN or infinite loss) before anything is saved.

    Raises:
        TrainingDiverged: Some logged value is NaN or infinite.

    """
    if all(math.isfinite(v) for vals in hist.values() for v in vals):
        return
    import mlflow

    mlflow.set_tag("diverged", "true")
    final = {k: v[-1] for k, v in hist.items()}
    raise TrainingDiverged(
        f"{name}: training diverged (loss became NaN or infinite: {final}); "
        f"learning_rate {params.get('learning_rate')} is too large for this model. "
        "The model is not saved or registered."
    )


def serving_model(spec: UseCaseSpec, trained: Any, stats: Mapping[str, Any],
                  objective: Objective, calibration: Mapping[str, Any]) -> Any:
    """Wrap the trained model into what is served: raw inputs in, answers out.

    Tabular use cases take one named, typed input per raw column
    (:mod:`tasks.steps.tabular`) and apply the preprocessing transform inside the model
    (:func:`tabular_layer`: the same numbers and vocabulary ids as Beam), so clients send
    raw values; packed features of a media front end go through :func:`keras_layer`. The
    objective may append a head (anomaly models return the reconstruction-error score
    and the flag at the shipped threshold).
    """
    import keras

    from tasks.features.transforms import keras_layer, tabular_layer
    from tasks.steps.tabular import is_tabular, served_dtypes, serving_inputs

    own = objective.serving_model(spec.name, spec.model, trained, stats)
    if own is not None:
        return own
    if is_tabular(spec):  # one named, typed input per raw column
        raw = serving_inputs(spec)
        x = tabular_layer(spec.preprocess.packed, served_dtypes(spec), stats["train"])(raw)
    elif spec.model.input_key == PACKED:
        feats = spec.preprocess.packed
        if spec.model.serving_input is not None:  # raw media in: decoding + features
            raw, columns = spec.model.serving_input.build()
        else:
            raw = columns = keras.Input(shape=(len(feats),), dtype="float32", name="inputs")
        x = keras_layer(feats, stats["train"])(columns)
    elif spec.model.serving_input is not None:  # raw media in: decoding inside the model
        raw, x = spec.model.serving_input.build()
    else:
        raw = x = keras.Input(shape=trained.inputs[0].shape[1:], dtype=trained.inputs[0].dtype,
                              name=trained.inputs[0].name)
    # Inference mode fixed in the graph: Keras' augmentation layers default to
    # training=True when a model is called without the flag.
    out = trained(x, training=False)
    if hasattr(spec.model.serving_input, "outputs"):
        out = spec.model.serving_input.outputs(out, list(spec.model.classes(stats)))
    head = objective.head(x, out, calibration)
    if head is None and raw is x:
        return trained  # nothing to add: the trained model is what is served
    return keras.Model(raw, out if head is None else head, name=f"{spec.name}_serving")


class ModelBuilder:
    """``build(params) -> compiled model``: the use case's builder on the dataset's statistics.

    For a model built on a registered parent (``ModelSpec.parent``) the parent is resolved
    and loaded on the first build that wants it (:mod:`tasks.tracking.parents`) and handed
    to the builder as its third argument; builds that do not want it (e.g. a from-scratch
    ablation arm) get None.
    """

    def __init__(self, spec: UseCaseSpec, stats: Mapping[str, Any], s: Settings) -> None:
        self.spec, self.stats, self.s = spec, stats, s
        self.parent: Any = None  # the resolved parent (tasks.tracking.parents)
        self._loaded: Any = None

    def __call__(self, params: Mapping[str, Any]) -> Any:
        mk = self.spec.model
        if mk.parent is None:
            return mk.build(params, self.stats)
        if not mk.parent.wanted(params):
            return mk.build(params, self.stats, None)
        if self._loaded is None:
            from tasks.tracking.parents import load_parent, resolve_parent

            self.parent = resolve_parent(mk.parent.name, mk.parent.alias, self.s)
            self._loaded = load_parent(self.parent, self.s)
            report("  built on %s version %s (%s@%s)", self.parent.name, self.parent.version,
                   self.parent.name, self.parent.alias)
        return mk.build(params, self.stats, self._loaded)

    def lineage_tags(self, params: Mapping[str, Any]) -> dict[str, str]:
        """The parent tags of a model built with ``params`` (empty without a parent)."""
        mk = self.spec.model
        if mk.parent is None or not mk.parent.wanted(params) or self.parent is None:
            return {}
        return self.parent.tags()


def _as_numpy(out: Any) -> Any:
    import numpy as np

    if isinstance(out, dict):
        return {k: np.asarray(v) for k, v in out.items()}
    return np.asarray(out)


def serving_example(spec: UseCaseSpec, reader: DatasetReader, n: int = 2) -> Any:
    """The first ``n`` raw test inputs, in the units a client sends (float32).

    The same rows are MLflow's input example (signature) and the example request ``mlp
    run`` prints (:mod:`tasks.operations.examples`): tabular rows before any transform
    (the served model applies them; named columns, typed as the model's inputs), images
    as their raw pixels. Raw-media use cases (``ModelSpec.serving_input``) use their
    front end's own example.
    """
    mk = spec.model
    if mk.serving_input is not None:  # raw media: the front end's own example
        return mk.serving_input.example()
    x, _ = reader.raw_rows("test", mk.input_key, mk.label_key, n)
    return x  # tabular: column -> values (the model's named inputs)


def log_training_inputs(spec: UseCaseSpec, params: Mapping[str, Any], digest: str,
                        reader: DatasetReader) -> None:
    """Params, preprocessing statistics and the three splits as MLflow dataset inputs."""
    import mlflow

    mlflow.log_params({**params, "params_digest": digest, "objective": spec.model.objective})
    mlflow.log_dict(reader.stats, "preprocessing/stats.json")
    mlflow.log_dict(reader.feature_spec, "preprocessing/feature_spec.json")
    ds_digest = hashlib.sha256(
        json.dumps(reader.manifest["splits"], sort_keys=True).encode()).hexdigest()
    for split, context in (("train", "training"), ("validation", "validation"),
                           ("test", "testing")):
        tracking.log_dataset(reader.dataset_dir / split, f"{spec.name}-{split}",
                             f"{ds_digest}-{split}", context)


def log_data_checks(run_dir: Path) -> None:
    """The run's data-analysis page and drift report (the ``analyze`` step), if written."""
    import mlflow

    for name in ("analysis", "drift"):
        if (Path(run_dir) / name).is_dir():
            mlflow.log_artifacts(str(Path(run_dir) / name), name)
    verdict = Path(run_dir) / "drift" / "verdict.json"
    if verdict.is_file():
        v = read_json(verdict)
        mlflow.set_tags({"drift.status": v["status"], "drift.forced": str(v["forced"]).lower(),
                         "drift.summary": v["summary"][:5000]})


def log_calibration(calibration: Calibration, out_dir: Path) -> None:
    """Calibration values as params, its reports as artifacts (and files in ``out_dir``)."""
    import mlflow

    if calibration.values:
        mlflow.log_params(calibration.values)
    for artifact, content in calibration.reports.items():
        mlflow.log_dict(content, artifact)
        write_json(out_dir / Path(artifact).name, content)


def export_and_log(spec: UseCaseSpec, trained: Any, reader: DatasetReader,
                   objective: Objective, calibration: Calibration, out_dir: Path) -> str:
    """Save the trained and served models into ``out_dir``; log the served one to MLflow.

    Returns:
        The logged model's URI.

    """
    import mlflow
    from mlflow.models import infer_signature

    with phase("export"):
        trained.save(out_dir / TRAINED_MODEL)
        served = serving_model(spec, trained, reader.stats, objective, calibration.values)
        served.save(out_dir / SERVED_MODEL)
    example = objective.serving_example(spec.model, reader)
    if example is None:
        example = serving_example(spec, reader)
    schema = model_schema(spec, reader, calibration.values)
    metadata = None
    if schema is not None:  # the served names, limits and answer form, read by the server
        metadata = {INPUT_SCHEMA_KEY: schema.to_dict()}
        mlflow.log_dict(schema.to_dict(), INPUT_SCHEMA_ARTIFACT)
    if not isinstance(example, dict) and example.dtype == object:
        # Strings (text, WAV bytes, an encoded image): Keras' predict takes no object arrays.
        import tensorflow as tf

        answer = served(tf.constant(list(example)), training=False)
    else:  # named tabular columns or an array: a few rows, one eager call
        answer = predict(served, example)
    signature = infer_signature(example, _as_numpy(answer))
    # Kept whole (bytes too) for deploy's infra validation: the version answers it as served.
    mlflow.log_dict(write_serving_example(example, out_dir / SERVING_EXAMPLE), SERVING_EXAMPLE)
    # MLflow would feed a bytes example back as base64 text: text and numbers only.
    has_bytes = not isinstance(example, dict) and example.dtype == object and any(
        isinstance(v, bytes) for v in example)
    with phase("MLflow log_model"):
        info = mlflow.tensorflow.log_model(
            served, name="model", signature=signature, metadata=metadata,
            input_example=None if has_bytes else example,
            code_paths=[str(Path(__file__).parents[1] / "features" / name)
                        for name in ("layers.py", "text_layers.py", "audio.py", "images.py",
                                     "detection.py", "tabular_layers.py")],
            pip_requirements=serving_requirements(),
        )
    return info.model_uri


def serving_requirements() -> list[str]:
    """What the logged model needs to load elsewhere, pinned to the versions that trained it.

    Stated explicitly: MLflow would otherwise infer them by loading the model in a
    subprocess, which costs about a minute per run on this machine.
    """
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("tensorflow-cpu", "keras", "numpy")]


def cached_result(out_dir: Path, digest: str) -> TrainedModel | None:
    """The result of an earlier training of this run with the same params, if any."""
    if not (Path(out_dir) / TRAIN_RESULT).is_file():
        return None
    cached = read_json(Path(out_dir) / TRAIN_RESULT)
    if cached.get("params_digest") != digest:
        return None
    return TrainedModel.from_xcom(cached)


def train(spec: UseCaseSpec, params: Mapping[str, Any], dataset_dir: Path, out_dir: Path,
          snapshot: Snapshot, s: Settings | None = None) -> TrainedModel | None:
    """Train the use case's model on the preprocessed dataset and track it in MLflow.

    Idempotent per run: when ``out_dir`` already holds a result for the same params, that
    result (MLflow run, model) is returned instead of training again.

    Args:
        spec: The use case.
        params: Run params (epochs, batch_size, learning_rate, variant, ...).
        dataset_dir: Output of the preprocessing step.
        out_dir: The run's train folder (appears atomically).
        snapshot: The run's raw snapshot (run key and checksum are tagged for lineage).
        s: Settings (default: from the environment).

    Returns:
        The result (None in a non-chief worker of a distributed training).

    Raises:
        TrainingDiverged: The loss became NaN or infinite.

    """
    import keras
    import mlflow

    s = s or settings()
    params = resolve_params(spec, params)
    digest = params_digest(params)
    out_dir = Path(out_dir)
    if (cached := cached_result(out_dir, digest)) is not None:
        log.info("training for run %s already done (MLflow run %s); reusing it",
                 snapshot.run_key, cached.run_id)
        return cached
    if workers := distribute.local_workers():  # MLP_DISTRIBUTE=multi_worker, no TF_CONFIG
        distribute.launch_local_cluster(workers, {
            "use_case": spec.name, "params": params, "dataset_dir": str(dataset_dir),
            "out_dir": str(out_dir), "snapshot": snapshot.to_xcom()}, out_dir)
        return cached_result(out_dir, digest)  # the chief's result
    reader = DatasetReader.open(dataset_dir)
    objective = objectives.get(spec.model.objective)
    keras.utils.set_random_seed(int(params.get("seed", 42)))
    build = ModelBuilder(spec, reader.stats, s)
    strategy = distribute.strategy()  # TensorFlow's default one unless configured
    with strategy.scope():
        model = build(params)
    if not distribute.is_chief():  # another worker of the cluster: fit only, log nothing
        fit(model, reader, spec, objective, params, Path(tempfile.mkdtemp()), strategy=strategy)
        return None
    exp_id = tracking.experiment_id(spec.name, s)
    tags = {"use_case": spec.name, "run_key": snapshot.run_key,
            "data_checksum": snapshot.checksum, "git_commit": tracking.git_commit(),
            **build.lineage_tags(params)}
    with atomic_dir(out_dir) as tmp, mlflow.start_run(
            experiment_id=exp_id, run_name=f"{spec.name}-{snapshot.run_key}", tags=tags) as run:
        with phase("MLflow params + datasets"):
            log_training_inputs(spec, params, digest, reader)
            log_data_checks(out_dir.parent)
        with phase("fit"):
            hist, seconds = fit(model, reader, spec, objective, params, tmp / "tensorboard",
                                strategy=strategy)
        model = distribute.plain_copy(model, build, params, strategy)  # exported as usual
        check_finite(spec.name, hist, params)
        with phase("MLflow artifacts + plots"):
            mlflow.log_metric("train_seconds", seconds)
            mlflow.log_artifacts(str(tmp / "tensorboard"), "tensorboard")
            for png in training_pictures(spec.name, model, reader, spec.model, objective,
                                         tmp / "pictures"):
                mlflow.log_artifact(str(png), "plots")
            write_json(tmp / TRAIN_HISTORY, hist)
            mlflow.log_artifact(str(plots.learning_curves([("", hist)],
                                                          tmp / "learning_curves.png")), "plots")
        if spec.model.ablation is not None and params.get("ablation", True):
            from tasks.steps.ablation import run_ablation

            write_json(tmp / ABLATION, run_ablation(spec, params, model, hist, seconds,
                                                    reader, objective, tmp, fit, build))
        with phase("calibrate"):
            calibration = objective.calibrate(model, reader, spec.model)
            log_calibration(calibration, tmp)
        result = TrainedModel(
            run_id=run.info.run_id, experiment_id=exp_id,
            model_uri=export_and_log(spec, model, reader, objective, calibration, tmp),
            model_path=str(out_dir / SERVED_MODEL), trained_path=str(out_dir / TRAINED_MODEL),
            params=params, params_digest=digest, train_seconds=round(seconds, 2),
            calibration=calibration.values,
        )
        write_json(tmp / TRAIN_RESULT, result.to_xcom())
    log.info("trained %s in %.1fs: %s (MLflow run %s)", spec.name, seconds,
             {k: v[-1] for k, v in hist.items()}, result.run_id)
    return result


def _worker(job_file: str) -> int:
    """One worker process of a distributed training (:mod:`tasks.steps.distribute`)."""
    from tasks.spec import catalog

    logging.basicConfig(level=logging.INFO)
    job = json.loads(Path(job_file).read_text())
    train(catalog.get(job["use_case"]), job["params"], Path(job["dataset_dir"]),
          Path(job["out_dir"]), Snapshot.from_xcom(job["snapshot"]))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
