"""Batch scoring: a file or folder in the use case's raw format -> Parquet predictions.

One linear Beam graph (no fan-out: Beam 2.77's DaskRunner runs only one consumer of a
PCollection), on any runner::

    parts ─► read + check (source's row checks, quarantine records ride along)
          ─► RunInference (Keras handler over the served model, as `mlp serve` loads it)
          ─► write one Parquet file per batch + count histograms on the reference's bins
          ─► combine (rows, quarantine, histograms) ─► _summary.json

Elements are column batches, never rows (Beam's per-element overhead would otherwise
dominate). The model handler (:class:`ServedModelHandler`) loads the registered version
with the platform's loader (:func:`tasks.tracking.loader.load_registered`, the one
``mlp serve`` and deploy use: the same artifact, raw inputs in) and feeds it through the
model's own signature (:func:`tasks.steps.model_io.served_inputs`). Beam's
``TFModelHandlerNumpy`` is not used: its module imports ``tensorflow_hub`` (and with it
the Keras 2 package ``tf-keras``), and it loads a path with ``tf.keras``, not a registry
version with the platform's custom layers.

Output, atomically under ``$MLP_HOME/scores/<use case>/<run key>/``:
``predictions/part-*.parquet`` (one table: the row key, ``file`` + ``line`` / ``row``,
or ``file`` for media; the label when the input has it; the model's outputs in its REST
answer's names; ``model``, ``version``), ``quarantine.jsonl`` (the user's file, line,
field, reason), ``summary.json`` and the drift report of the scored data against the
version's training data (``drift/``). An MLflow run (experiment
``<use case>-scoring``) records the version, row and quarantine counts, rows/s and the
report.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, RunInference

from tasks import objectives
from tasks.core.config import Settings, settings
from tasks.core.errors import PermanentError
from tasks.core.files import atomic_dir, read_json, write_json
from tasks.core.run import safe_key
from tasks.data.scoring import ScoringInput, scoring_input
from tasks.features.profile import (
    Histogram,
    bins_of,
    data_columns,
    merge_histograms,
    output_columns,
    prediction_columns,
)
from tasks.spec import UseCaseSpec
from tasks.steps.beam_runner import make_pipeline, run_to_completion
from tasks.steps.drift_check import compare_with
from tasks.steps.drift_report import write_report
from tasks.steps.model_io import served_inputs
from tasks.steps.references import Reference, load_reference, named_outputs

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
PREDICTIONS = "predictions"  # the Parquet folder: pyarrow/pandas read it as one table
QUARANTINE = "quarantine.jsonl"
DRIFT_DIR = "drift"
BATCH = 4096  # rows per element (default): the model's batch, and one Parquet file each
KEY_NAMES = {"_file": "file", "_line": "line", "_row": "row"}


class ScoringError(PermanentError, RuntimeError):
    """Scoring cannot proceed (no valid row, an unknown version); the message says why."""


def scores_root(use_case: str, s: Settings | None = None) -> Path:
    """``$MLP_HOME/scores/<use case>``: every scoring run's folder."""
    return (s or settings()).root / "scores" / use_case


def new_key() -> str:
    """A run key for a scoring run started by hand (UTC time, microseconds)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


# --------------------------------------------------------------------------- elements
@dataclass
class Batch:
    """One element: a part's batch of source columns, its row keys and rejected rows."""

    part: int
    seq: int
    cols: dict[str, Any]
    bad: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.cols.get("row", ()))


class ReadForScoring(beam.DoFn):
    """Emit the column batches of one part of the input (bad rows ride along)."""

    def __init__(self, source: ScoringInput, batch_size: int) -> None:
        self._source = source
        self._batch_size = batch_size

    def process(self, part: int) -> Iterator[Batch]:
        for seq, cols in enumerate(self._source.read_batches(part, self._batch_size)):
            bad = cols.pop("_bad", [])
            yield Batch(part, seq, cols, bad)


class ServedModelHandler(ModelHandler[Batch, Batch, Any]):
    """RunInference's model handler: a registered version loaded as ``mlp serve`` loads it.

    Elements are already batches (used with ``with_no_batching()``): ``run_inference``
    gets one :class:`Batch`, feeds its columns through the model's signature and returns
    it with the answers, named as the REST answer names them.
    """

    def __init__(self, spec_name: str, version: str, s: Settings) -> None:
        super().__init__()
        self._name, self._version, self._s = spec_name, version, s

    def load_model(self) -> Any:
        from tasks.tracking.loader import load_registered

        return load_registered(self._name, self._version, self._s)

    def run_inference(self, batch: Batch, model: Any,
                      inference_args: dict[str, Any] | None = None) -> Iterator[Batch]:
        from tasks.spec import catalog

        if len(batch):
            x = served_inputs(catalog.get(self._name), model.model, batch.cols)
            out = model.predict(x) if not isinstance(x, dict) else \
                model.model(x, training=False)
            batch.outputs = named_outputs(model.model, out)
        yield batch

    def get_num_bytes(self, batch: Any) -> int:
        return int(sum(np.asarray(v).nbytes for v in batch.cols.values()
                       if isinstance(v, np.ndarray) and v.dtype != object))

    def get_metrics_namespace(self) -> str:
        return "mlp_scoring"


def _arrow_column(values: np.ndarray) -> Any:
    import pyarrow as pa

    v = np.asarray(values)
    if v.dtype == object:
        if len(v) and isinstance(v[0], str):
            return pa.array(v, type=pa.string())  # file names: no per-row Python loop
        return pa.array([x.decode("utf-8", "replace") if isinstance(x, bytes) else x
                         for x in v.tolist()])
    if v.ndim == 1:
        return pa.array(v)
    flat = pa.array(v.reshape(-1))
    for width in reversed(v.shape[1:]):  # nested fixed-size lists, innermost first
        flat = pa.FixedSizeListArray.from_arrays(flat, width)
    return flat


class WriteScores(beam.DoFn):
    """Write a batch's predictions as one Parquet file; emit counts and histograms."""

    def __init__(self, out_dir: str, model: str, version: str, key_columns: Sequence[str],
                 label: str | None, feature_bins: Mapping[str, Any],
                 prediction_bins: Mapping[str, Any] | None, spec_name: str) -> None:
        self._out, self._model, self._version = out_dir, model, version
        self._keys, self._label = tuple(key_columns), label
        self._fbins, self._pbins = dict(feature_bins), prediction_bins
        self._spec_name = spec_name

    def process(self, batch: Batch) -> Iterator[dict[str, Any]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from tasks.spec import catalog

        out: dict[str, Any] = {"bad": batch.bad, "rows": len(batch), "features": {},
                               "predictions": {}}
        if not len(batch):
            yield out
            return
        spec = catalog.get(self._spec_name)
        table: dict[str, Any] = {KEY_NAMES[k]: _arrow_column(batch.cols[k]) for k in self._keys}
        if self._label and self._label in batch.cols:
            table[self._label] = _arrow_column(batch.cols[self._label])
        for name, value in (batch.outputs or {}).items():
            table[name if name not in table else f"{name}_output"] = _arrow_column(value)
        table["model"] = pa.array([self._model] * len(batch))
        table["version"] = pa.array([self._version] * len(batch))
        name = f"{PREDICTIONS}/part-{batch.part:05d}-{batch.seq:05d}.parquet"
        pq.write_table(pa.table(table), str(Path(self._out) / name))
        if self._fbins:
            h = Histogram(data_columns(spec.preprocess, spec.source.schema()), self._fbins)
            out["features"] = h.finish(h.add(h.create(), batch.cols))
        if self._pbins:
            cols = output_columns(batch.outputs or {})
            h = Histogram(prediction_columns(cols), self._pbins)
            out["predictions"] = h.finish(h.add(h.create(), cols))
        out["file"] = name
        yield out


class Summarize(beam.CombineFn):
    """Rows, files, quarantine records and histograms of every written batch."""

    def create_accumulator(self) -> dict[str, Any]:
        return {"rows": 0, "files": [], "bad": [], "features": {}, "predictions": {}}

    def add_input(self, acc: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
        acc["rows"] += item["rows"]
        acc["bad"] += item["bad"]
        if item.get("file"):
            acc["files"].append(item["file"])
        for key in ("features", "predictions"):
            acc[key] = merge_histograms(acc[key], item[key])
        return acc

    def merge_accumulators(self, accs: Any) -> dict[str, Any]:
        out = self.create_accumulator()
        for acc in accs:
            out["rows"] += acc["rows"]
            out["bad"] += acc["bad"]
            out["files"] += acc["files"]
            for key in ("features", "predictions"):
                out[key] = merge_histograms(out[key], acc[key])
        return out

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        acc["files"] = sorted(acc["files"])
        return acc


def _write_summary(summary: dict[str, Any], path: str) -> None:
    write_json(Path(path), summary)


def build_pipeline(p: beam.Pipeline, source: ScoringInput, spec: UseCaseSpec, version: str,
                   work_dir: Path, reference: Reference | None, batch_size: int = BATCH,
                   s: Settings | None = None) -> beam.PCollection:
    """Attach the scoring graph to ``p``; it writes the parts and ``_summary.json``."""
    s = s or settings()
    fbins = bins_of(reference.features) if reference and reference.features else {}
    pbins = bins_of(reference.predictions) if reference and reference.predictions else None
    handler = ServedModelHandler(spec.name, version, s).with_no_batching()
    return (
        p
        | "Parts" >> beam.Create(list(range(len(source.parts))))
        | "Read" >> beam.ParDo(ReadForScoring(source, batch_size))
        | "RunInference" >> RunInference(handler)
        | "Write" >> beam.ParDo(WriteScores(str(work_dir), spec.name, version,
                                            source.key_columns, source.label, fbins, pbins,
                                            spec.name))
        | "Summarize" >> beam.CombineGlobally(Summarize())
        | "WriteSummary" >> beam.Map(_write_summary, str(work_dir / "_summary.json"))
    )


# --------------------------------------------------------------------------- the step
@dataclass(frozen=True)
class ScoreResult:
    """What a scoring run did (also ``summary.json`` in its folder).

    Attributes:
        out_dir: The run's folder (Parquet parts, quarantine, summary, drift report).
        model: Registered model name.
        version: The version that scored.
        rows: Rows scored.
        quarantined: Rows rejected by the source checks.
        seconds: Wall time of the Beam pipeline.
        rows_per_s: Rows scored per second of it.
        files: The Parquet files written.
        drift: The drift report's status and summary line.
        metrics: Figures against the input's label, when it has one.
        run_id: The MLflow run.

    """

    out_dir: str
    model: str
    version: str
    rows: int
    quarantined: int
    seconds: float
    rows_per_s: float
    files: list[str]
    drift: dict[str, Any]
    metrics: dict[str, float]
    run_id: str | None = None


def resolve_version(name: str, version: str | None, alias: str | None,
                    s: Settings | None = None) -> str:
    """The registry version to score with (``version``, else the one ``alias`` names).

    Raises:
        ScoringError: No such version or alias.

    """
    from mlflow.exceptions import MlflowException

    from tasks.tracking import CHAMPION, configure

    client = configure(s)
    try:
        if version:
            return str(client.get_model_version(name, str(version)).version)
        return str(client.get_model_version_by_alias(name, alias or CHAMPION).version)
    except MlflowException:
        what = f"version {version}" if version else f"alias {alias or CHAMPION!r}"
        raise ScoringError(f"model {name!r} has no {what} in the registry (see `mlp models`)"
                           ) from None


def _label_metrics(spec: UseCaseSpec, out_dir: Path, label: str, files: list[str],
                   outputs: list[str]) -> dict[str, float]:
    """The objective's figures of the answers against the input's label (all parts)."""
    import pyarrow.parquet as pq

    from tasks.objectives import TestRows

    if not files:
        return {}
    cols = {}
    for name in [label, *outputs]:
        parts = [pq.read_table(str(out_dir / f), columns=[name])[name].to_numpy(
            zero_copy_only=False) for f in files]
        cols[name] = np.concatenate([np.stack(p) if p.dtype == object and len(p) and
                                     isinstance(p[0], np.ndarray | list) else p
                                     for p in parts])
    labels = cols.pop(label)
    rows = TestRows("scored", np.zeros((len(labels), 0)), np.zeros((len(labels), 0)),
                    labels, {})
    cols = {k: v for k, v in cols.items() if v.dtype != object}  # numbers, not class names
    if not cols:
        return {}
    answers = cols if len(cols) > 1 else next(iter(cols.values()))
    try:
        report = objectives.get(spec.model.objective).score(answers, rows, spec.model, None)
    except Exception as exc:  # noqa: BLE001 - a kind that needs more than labels
        log.warning("no figures against the label: %s", exc)
        return {}
    return {f"scored_{k.removeprefix('test_')}": float(v) for k, v in report.report.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def source_with_classes(spec: UseCaseSpec, version: str, s: Settings) -> Any:
    """The use case's source, its classes those of the version scored with.

    A source whose classes come from the data (image folders) declares none in the spec:
    label folders of the scoring input are then read against the classes the version was
    trained on (its evaluation report), so their ids are the model's.
    """
    src = spec.source
    if not hasattr(src, "classes") or src.classes:
        return src
    from dataclasses import replace

    import mlflow

    from tasks.core.run import EVALUATION_ARTIFACT
    from tasks.tracking import configure

    try:
        run_id = configure(s).get_model_version(spec.name, version).run_id
        names = mlflow.artifacts.load_dict(f"runs:/{run_id}/{EVALUATION_ARTIFACT}"
                                           ).get("class_names") or []
    except Exception:  # a version logged outside the pipeline: flat folders only
        return src
    return replace(src, classes=tuple(str(n) for n in names)) if names else src


def score(spec: UseCaseSpec, location: str, *, version: str | None = None,
          alias: str | None = None, out_dir: Path | None = None, run_key: str | None = None,
          origins: Mapping[str, str] | None = None, batch_size: int | None = None,
          s: Settings | None = None, track: bool = True) -> ScoreResult:
    """Score a file or folder with a registered version; Parquet out, MLflow run.

    Args:
        spec: The use case.
        location: The user's file or folder (the use case's raw format; label optional),
            or a landed snapshot of one (``mlp ingest --for scoring``).
        version: Registry version (default: the one ``alias`` names).
        alias: Registry alias (default ``champion``).
        out_dir: Output folder (default ``$MLP_HOME/scores/<use case>/<run key>``).
        run_key: The run's key (default: now, UTC).
        origins: Snapshot file -> the user's file (messages and quarantine name it).
        batch_size: Rows per batch (one model call and one Parquet file each; default
            the use case's ``PreprocessSpec.batch_size``, e.g. 64 face photos).
        s: Settings (runner, data root, MLflow).
        track: Record an MLflow run.

    Raises:
        SourceError: A file is missing or malformed (named), before anything runs.
        ScoringError: No such version, or no valid row to score.

    """
    s = s or settings()
    if spec.model is None:
        raise ScoringError(f"{spec.name} has no model to score with")
    origins = dict(origins or {})
    batch_size = batch_size or spec.preprocess.batch_size or BATCH
    label_col = spec.preprocess.label
    version = resolve_version(spec.name, version, alias, s)
    source = scoring_input(source_with_classes(spec, version, s), location, label_col)
    key = safe_key(run_key or new_key())
    out_dir = Path(out_dir) if out_dir else scores_root(spec.name, s) / key
    if (out_dir / SUMMARY).is_file():
        log.info("scoring run %s already complete; reusing it", out_dir)
        return ScoreResult(**{k: v for k, v in read_json(out_dir / SUMMARY).items()
                              if k in ScoreResult.__dataclass_fields__})
    reference = load_reference(spec.name, version, s=s)
    with atomic_dir(out_dir) as tmp:
        (tmp / PREDICTIONS).mkdir()
        started = time.perf_counter()
        p = make_pipeline(s.beam_runner, s.beam_options)
        build_pipeline(p, source, spec, version, tmp, reference, batch_size, s)
        run_to_completion(p)
        seconds = time.perf_counter() - started
        summary = read_json(tmp / "_summary.json")
        (tmp / "_summary.json").unlink()
        bad = [_user_file(b, origins) for b in summary["bad"]]
        if bad:
            (tmp / QUARANTINE).write_text("".join(json.dumps(b, default=str) + "\n"
                                                  for b in bad))
        if summary["rows"] == 0:
            first = f"; first: {_where(bad[0])}" if bad else ""
            raise ScoringError(f"{location}: no valid row to score ({len(bad)} rejected"
                               f"{first})")
        shown = [origins.get(f, f) for f in source.files()]
        report = compare_with(reference, spec, "drift", {
            "data": f"batch-scoring input {', '.join(shown[:3])}"
                    + (f" and {len(shown) - 3} more" if len(shown) > 3 else ""),
            "rows": summary["rows"]}, summary["features"] or None,
            summary["predictions"] or None)
        write_report(report, tmp / DRIFT_DIR, f"Drift: {spec.name} scoring run {key} "
                     f"against version {version}'s training data",
                     labels=(f"v{version} training data", "scored data"))
        outputs = [f.name for f in _schema_outputs(tmp, summary["files"], source.label)]
        metrics = (_label_metrics(spec, tmp, source.label, summary["files"], outputs)
                   if source.label else {})
        result = ScoreResult(
            out_dir=str(out_dir), model=spec.name, version=version, rows=summary["rows"],
            quarantined=len(bad), seconds=round(seconds, 3),
            rows_per_s=round(summary["rows"] / seconds, 1) if seconds > 0 else 0.0,
            files=summary["files"], drift={"status": report.status,
                                           "summary": report.summary()},
            metrics=metrics)
        write_json(tmp / SUMMARY, result.__dict__)
    log.info("scored %d rows of %s with %s v%s in %.1fs (%.0f rows/s), %d quarantined",
             result.rows, location, spec.name, version, seconds, result.rows_per_s,
             result.quarantined)
    if track:
        run_id = log_scoring_run(spec.name, key, location, result, out_dir, s)
        result = ScoreResult(**{**result.__dict__, "run_id": run_id})
        write_json(out_dir / SUMMARY, result.__dict__)
    return result


def _schema_outputs(out_dir: Path, files: list[str], label: str | None) -> list[Any]:
    """The output columns of the written Parquet files (not keys, label, model, version)."""
    import pyarrow.parquet as pq

    if not files:
        return []
    schema = pq.read_schema(str(out_dir / files[0]))
    skip = {*KEY_NAMES.values(), "model", "version", label}
    return [f for f in schema if f.name not in skip]


def _user_file(record: dict[str, Any], origins: Mapping[str, str]) -> dict[str, Any]:
    if record.get("file") in origins:
        record = {**record, "snapshot_file": record["file"], "file": origins[record["file"]]}
    return record


def _where(record: Mapping[str, Any]) -> str:
    at = f"line {record['line']}" if "line" in record else f"row {record.get('row')}"
    return (f"{record.get('file')} {at} field {record.get('field')!r}: "
            f"{record.get('reason')}")


def log_scoring_run(use_case: str, key: str, location: str, result: ScoreResult,
                    out_dir: Path, s: Settings | None = None) -> str:
    """Record a scoring run in MLflow (experiment ``<use case>-scoring``)."""
    import mlflow

    from tasks.tracking import configure, experiment_id

    configure(s)
    exp = experiment_id(f"{use_case}-scoring", s)
    with mlflow.start_run(experiment_id=exp, run_name=f"score-{key}", tags={
            "mlp.kind": "scoring", "use_case": use_case, "score_key": key,
            "model_version": result.version, "drift.status": result.drift["status"]}) as run:
        mlflow.log_params({"model": result.model, "version": result.version,
                           "input": location[:500], "output": str(out_dir),
                           "runner": (s or settings()).beam_runner})
        mlflow.log_metrics({"rows": result.rows, "quarantined_rows": result.quarantined,
                            "seconds": result.seconds, "rows_per_s": result.rows_per_s,
                            **result.metrics})
        mlflow.log_artifacts(str(Path(out_dir) / DRIFT_DIR), DRIFT_DIR)
        mlflow.log_artifact(str(Path(out_dir) / SUMMARY))
        quarantine = Path(out_dir) / QUARANTINE
        if quarantine.is_file() and quarantine.stat().st_size < 5 << 20:
            mlflow.log_artifact(str(quarantine))
    return run.info.run_id
