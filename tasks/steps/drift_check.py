"""Drift against the champion: comparisons, and the training run's check before it trains.

:func:`compare_with` builds a :class:`~tasks.features.drift.DriftReport` from a version's
reference (:mod:`tasks.steps.references`) and new histograms on its bins; batch scoring
and monitoring use it too. :func:`count_histograms` is the Beam pass that counts a data
source's rows on given bins (any runner).

:func:`check_training_data` is the pipeline's ``analyze`` step, between preprocessing
and training: it writes the run's data-analysis page (:mod:`tasks.steps.data_analysis`)
and compares the new snapshot with the champion's training data, per column, plus the
champion's answers on the new test split with its answers on its own test split. A
column past its ``fail`` threshold stops the run here, before training, with a message
naming the columns, unless an operator forces it with a reason (``force_drift=true``,
``force_drift_reason``); the report sits in ``runs/<use case>/<run key>/drift/``, is
logged with the training run and summarised in the model card.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam

from tasks.core.config import Settings, settings
from tasks.core.errors import PermanentError
from tasks.core.files import atomic_dir, read_json, write_json
from tasks.data.tfrecord import DatasetReader
from tasks.features.drift import DriftReport, compare
from tasks.features.profile import (
    Histogram,
    ProfileColumn,
    bins_of,
    data_columns,
    merge_histograms,
)
from tasks.spec import DataSource, UseCaseSpec
from tasks.steps.beam_runner import make_pipeline, run_to_completion
from tasks.steps.drift_report import histograms_of, write_report
from tasks.steps.references import (
    Reference,
    answer,
    champion_reference,
    prediction_histograms,
    served_split_inputs,
)

log = logging.getLogger(__name__)

VERDICT = "verdict.json"


class DriftFailed(PermanentError, RuntimeError):
    """New data drifted past a ``fail`` threshold; the run stops before training."""


def compare_with(reference: Reference, spec: UseCaseSpec, kind: str, current: dict[str, Any],
                 features: Mapping[str, Any] | None = None,
                 predictions: Mapping[str, Any] | None = None,
                 notes: Sequence[str] = ()) -> DriftReport:
    """The report of new histograms (features and/or predictions) against a reference."""
    report = DriftReport(kind, reference.describe(), dict(current), notes=list(notes))
    if features is not None:
        if reference.features:
            report.columns += compare(reference.features, features, spec.drift)
            histograms_of(reference.features, features, "features", report)
        else:
            report.notes.append(f"version {reference.version} has no training histograms "
                                "(trained before they were kept): features not compared")
    if predictions is not None:
        if reference.predictions:
            report.columns += compare(reference.predictions, predictions, spec.drift,
                                      prefix="prediction:")
            histograms_of(reference.predictions, predictions, "predictions", report)
        else:
            report.notes.append(f"version {reference.version} has no prediction reference "
                                "(trained before it was kept): predictions not compared")
    order = {"fail": 0, "warn": 1, "ok": 2, "not judged": 3}
    report.columns.sort(key=lambda c: (order[c.status], -c.severity, c.name))
    return report


# --------------------------------------------------------------------------- Beam pass
class _Count(beam.DoFn):
    """Read one partition of a source and count its valid rows on the given bins."""

    def __init__(self, source: DataSource, files: Mapping[str, str],
                 columns: Sequence[ProfileColumn], bins: Mapping[str, Any],
                 batch_size: int) -> None:
        self._source, self._files = source, dict(files)
        self._columns, self._bins = tuple(columns), dict(bins)
        self._batch_size = batch_size

    def process(self, partition: str) -> Iterator[dict[str, Any]]:
        h = Histogram(self._columns, self._bins)
        for batch in self._source.read_batches(self._files, partition, self._batch_size):
            if len(batch["row"]):
                yield h.finish(h.add(h.create(), batch))


class _Merge(beam.CombineFn):
    def create_accumulator(self) -> dict[str, Any]:
        return {}

    def add_input(self, acc: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
        return merge_histograms(acc, item)

    def merge_accumulators(self, accs: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for acc in accs:
            out = merge_histograms(out, acc)
        return out

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        return acc


def _write(result: dict[str, Any], path: str) -> None:
    write_json(Path(path), result)


def count_histograms(source: DataSource, files: Mapping[str, str],
                     columns: Sequence[ProfileColumn], bins: Mapping[str, Any],
                     work_dir: Path, batch_size: int = 4096, runner: str = "direct",
                     runner_options: Sequence[str] = ()) -> dict[str, Any]:
    """Histograms of every valid row of a source on ``bins`` (a full Beam pass).

    Rows the source rejects are not counted (the caller's quarantine names them).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    out = work_dir / "_histograms.json"
    p = make_pipeline(runner, runner_options)
    _ = (p
         | "Partitions" >> beam.Create(sorted(source.partitions()))
         | "Count" >> beam.ParDo(_Count(source, files, columns, bins, batch_size))
         | "Merge" >> beam.CombineGlobally(_Merge())
         | "Write" >> beam.Map(_write, str(out)))
    run_to_completion(p)
    result = read_json(out)
    out.unlink()
    return result


# --------------------------------------------------------------------------- the step
def champion_predictions(spec: UseCaseSpec, reference: Reference, dataset_dir: Path,
                         s: Settings | None = None) -> tuple[dict[str, Any] | None, str]:
    """The champion's answers on a dataset's test split, counted on its reference bins."""
    from tasks.tracking.loader import load_registered

    if not reference.predictions:
        return None, ""
    reader = DatasetReader.open(dataset_dir)
    inputs, why = served_split_inputs(spec, reader)
    if inputs is None:
        return None, f"predictions not compared: {why}"
    try:
        model = load_registered(spec.name, reference.version, s, reuse=True).model
        outputs = answer(model, inputs)
    except Exception as exc:  # noqa: BLE001 - a champion that cannot take the new rows
        return None, (f"champion v{reference.version} cannot answer the new rows "
                      f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}): "
                      "predictions not compared")
    return prediction_histograms(outputs, bins_of(reference.predictions)), ""


def check_training_data(spec: UseCaseSpec, files: Mapping[str, str], dataset_dir: Path,
                        out_dir: Path, run_key: str, force_reason: str | None = None,
                        s: Settings | None = None) -> dict[str, Any]:
    """Compare a training run's snapshot with the champion's data; stop on ``fail``.

    Args:
        spec: The use case.
        files: The run's snapshot files (source keys -> paths).
        dataset_dir: The run's preprocessed dataset (its test split feeds the champion).
        out_dir: The run's drift folder (``report.md|json``, ``drift.png``, ``verdict.json``).
        run_key: The run's key (named in the report).
        force_reason: An operator's reason to train despite a failing check, or None.
        s: Settings.

    Returns:
        The verdict (``status``, ``summary``, ``failing``, ``forced``, ``force_reason``,
        ``champion_version``, ``report``), also written to ``verdict.json``.

    Raises:
        DriftFailed: A column is past its fail threshold and the run is not forced.

    """
    s = s or settings()
    out_dir = Path(out_dir)
    reference = champion_reference(spec.name, s)
    if reference is None:
        verdict = {"status": "no champion", "summary": "no champion yet: nothing to compare",
                   "failing": [], "forced": False, "force_reason": "",
                   "champion_version": None, "report": None}
        with atomic_dir(out_dir) as tmp:
            write_json(tmp / VERDICT, verdict)
        return verdict
    columns = data_columns(spec.preprocess, spec.source.schema())
    bins = {k: v for k, v in bins_of(reference.features).items()
            if k in {c.name for c in columns}}
    with atomic_dir(out_dir) as tmp:
        features = count_histograms(spec.source, files, columns, bins, tmp,
                                    spec.preprocess.batch_size, s.beam_runner,
                                    s.beam_options) if bins else {}
        predictions, note = champion_predictions(spec, reference, Path(dataset_dir), s)
        rows = max((h.get("rows", 0) for h in features.values()), default=0)
        current = {"data": f"the raw snapshot of run {run_key}", "rows": rows,
                   "run_key": run_key}
        if force_reason:
            current.update(forced=True, force_reason=force_reason)
        report = compare_with(reference, spec, "drift", current,
                              features if reference.features else None,
                              predictions if reference.predictions else None,
                              [note] if note else [])
        paths = write_report(report, tmp, f"Drift: {spec.name} run {run_key} against "
                             f"champion v{reference.version}")
        failing = [c.name for c in report.failing]
        verdict = {"status": report.status, "summary": report.summary(),
                   "failing": failing, "forced": bool(failing and force_reason),
                   "force_reason": force_reason or "", "champion_version": reference.version,
                   "report": str(out_dir / paths["md"].name)}
        write_json(tmp / VERDICT, verdict)
    log.info("drift of %s run %s against champion v%s: %s", spec.name, run_key,
             reference.version, report.summary())
    if failing and not force_reason:
        shown = ", ".join(f"{c.name} ({c.metric} {c.value:.3g} >= {c.fail:g})"
                          for c in report.failing)
        raise DriftFailed(
            f"{spec.name}: the new data drifted past its fail threshold against champion "
            f"v{reference.version}'s training data in {len(failing)} column(s): {shown}. "
            f"Training stopped before it started; report: {verdict['report']}. To train "
            "on this data anyway: --param force_drift=true --param "
            "force_drift_reason='<why>' (the model card records it)")
    return verdict
