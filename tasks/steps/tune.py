"""Hyper-parameter tuning with Optuna: a study per run, one trial per Airflow task.

The study lives in the platform's database through Optuna's RDB storage
(``MLP_OPTUNA_STORAGE``; default ``sqlite:///$MLP_HOME/optuna.db``, the scaled profile's
PostgreSQL there) and is named ``<use case>-<run key>``, so re-running a run continues its
study: a slot (one mapped task) whose trial already finished is not trained again.

Three steps, each a pure function of paths and typed inputs:

- :func:`start` creates or loads the study (first trial: the run's own params, so the
  search is always compared with the defaults on the same split), creates the tuning
  run in MLflow (the trials' parent) and names the slots to map over;
- :func:`run_trial` is one slot: it ends what a killed attempt of the slot left (the
  Optuna trial ``FAIL``, its MLflow run ``FAILED``), asks the study for params, trains on
  the run's own TFRecords, reports the validation metric every epoch so the pruner can
  stop it, and tells the study the outcome; the trial is a nested MLflow run of the tuning
  run (pruned ones say so in their name and tags);
- :func:`finish` picks the best trial, writes ``tune/summary.json`` and Optuna's
  optimization-history and parallel-coordinate plots (matplotlib) into the run folder and
  onto the tuning run.

The best params then go through the normal train -> evaluate -> gate -> deploy steps.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tasks import objectives, tracking
from tasks.core.config import Settings, settings
from tasks.core.errors import PermanentError
from tasks.core.files import atomic_dir, write_json
from tasks.core.progress import report
from tasks.core.run import RunLayout
from tasks.data.tfrecord import DatasetReader
from tasks.spec import UseCaseSpec
from tasks.spec.search import Choice, IntRange, LogUniform, TuneSpec, search_space

log = logging.getLogger(__name__)

STORAGE_ENV = "MLP_OPTUNA_STORAGE"
SUMMARY = "summary.json"
HISTORY_PNG = "optimization_history.png"
PARALLEL_PNG = "parallel_coordinate.png"
# Tags of the training run and registry version the best params produced.
TUNE_TAGS = ("tune_study", "tune_trial", "tune_value", "tune_metric", "tune_run_id")


class TuningError(PermanentError, RuntimeError):
    """A tuning run cannot go on (no search space, a metric Keras does not log, no trial)."""


# ---------------------------------------------------------------------------- study


def storage_url(s: Settings | None = None) -> str:
    """The Optuna RDB storage URL of this installation."""
    s = s or settings()
    return os.environ.get(STORAGE_ENV) or f"sqlite:///{s.root / 'optuna.db'}"


def redacted(url: str) -> str:
    """The storage URL without its password (for logs, reports and tags)."""
    return re.sub(r"(://[^:/@]+):[^@]+@", r"\1:***@", url)


def study_name(use_case: str, run_key: str) -> str:
    """The study of one run: a rerun of the run finds and continues it."""
    return f"{use_case}-{run_key}"


def tune_dir(layout: RunLayout) -> Path:
    """Where a run's tuning summary and plots are kept."""
    return layout.run_dir / "tune"


def tune_spec(spec: UseCaseSpec) -> TuneSpec:
    """What the use case's trials are judged on (default: ``val_loss``, minimised)."""
    return spec.tune or TuneSpec()


def storage(url: str) -> Any:
    """Optuna's RDB storage; SQLite waits for the lock rather than failing at once."""
    import optuna

    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {
        "pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def distributions(spec: UseCaseSpec) -> dict[str, Any]:
    """The spec's search space as Optuna distributions.

    Raises:
        TuningError: The use case declares no search space.

    """
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    space = search_space(spec.params)
    if not space:
        raise TuningError(f"{spec.name} has no search space: declare one on its run params "
                          "(RunParam(..., search=LogUniform(1e-4, 1e-1)), tasks.spec.search)")
    out: dict[str, Any] = {}
    for name, d in space.items():
        if isinstance(d, Choice):
            out[name] = CategoricalDistribution(list(d.values))
        elif isinstance(d, IntRange):
            out[name] = IntDistribution(d.low, d.high, step=d.step, log=d.log)
        else:
            out[name] = FloatDistribution(d.low, d.high, log=isinstance(d, LogUniform))
    return out


def open_study(spec: UseCaseSpec, run_key: str, seed: int = 42, url: str | None = None,
               create: bool = False) -> Any:
    """The run's study with a seeded TPE sampler and a median pruner.

    The sampler's seed differs per process (``seed``): parallel trials with one seed would
    draw the same random start-up points. ``constant_liar`` keeps parallel TPE trials
    apart while others are still running.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ts = tune_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=ts.startup_trials,
                                             constant_liar=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=ts.startup_trials,
                                         n_warmup_steps=ts.warmup_epochs)
    store = storage(url or storage_url())
    name = study_name(spec.name, run_key)
    if create:
        return optuna.create_study(storage=store, study_name=name, direction=ts.direction,
                                   sampler=sampler, pruner=pruner, load_if_exists=True)
    return optuna.load_study(study_name=name, storage=store, sampler=sampler, pruner=pruner)


def start(spec: UseCaseSpec, params: Mapping[str, Any], run_key: str, trials: int,
          timeout: float | None = None, parallel: int = 1,
          s: Settings | None = None) -> dict[str, Any]:
    """Create (or load) the run's study and its MLflow tuning run; name the trial slots.

    The first trial of a new study is the run's own params (the defaults unless the
    operator changed them), marked ``default``: the search is compared with it.

    Returns:
        A small dict for XCom: ``study``, ``storage`` (redacted), ``parent_run_id``,
        ``slots`` (``0 .. trials-1``), ``deadline`` (epoch seconds or None), ``parallel``.

    """
    s = s or settings()
    dists = distributions(spec)
    study = open_study(spec, run_key, int(params.get("seed", 42)), create=True)
    ts = tune_spec(spec)
    if not study.trials:
        defaults = {k: params[k] for k in dists if k in params}
        study.enqueue_trial(defaults, user_attrs={"default": True})
        study.set_user_attr("use_case", spec.name)
        study.set_user_attr("run_key", run_key)
        study.set_user_attr("metric", ts.metric)
        study.set_user_attr("search_space", {k: p.search.describe()
                                             for k, p in spec.params.items() if p.search})
    client = tracking.configure(s)
    parent = study.user_attrs.get("mlflow_parent_run_id")
    if parent is None:
        exp = tracking.experiment_id(spec.name, s)
        run = client.create_run(exp, run_name=f"{spec.name}-{run_key}-tuning", tags={
            "use_case": spec.name, "run_key": run_key, "mlp.tuning": study.study_name,
            "optuna_storage": redacted(storage_url(s)), "git_commit": tracking.git_commit()})
        parent = run.info.run_id
        client.log_param(parent, "tune_metric", ts.metric)
        client.log_param(parent, "tune_direction", ts.direction)
        for name, text in study.user_attrs.get("search_space", {}).items():
            client.log_param(parent, f"search_{name}", text)
        # The trials attach to it as children; nothing stays RUNNING between tasks.
        client.set_terminated(parent, "FINISHED")
        study.set_user_attr("mlflow_parent_run_id", parent)
    return {"study": study.study_name, "storage": redacted(storage_url(s)),
            "parent_run_id": parent, "slots": list(range(int(trials))),
            "deadline": time.time() + float(timeout) if timeout else None,
            "parallel": max(1, int(parallel)), "metric": ts.metric,
            "direction": ts.direction}


# ---------------------------------------------------------------------------- one trial


def _state(trial: Any) -> str:
    return trial.state.name


def _slot_trials(study: Any, slot: int) -> list[Any]:
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("slot") == slot]


def fail_orphaned_trials(study: Any, slots: Sequence[int] | None = None,
                         s: Settings | None = None) -> list[int]:
    """Mark trials left RUNNING by a killed process ``FAIL``, and end their MLflow runs.

    Only one attempt of a slot runs at a time (a mapped task instance), so a RUNNING
    trial of a slot whose task (re)starts is an orphan; so is every RUNNING trial once all
    slots have ended (``slots=None``).

    Returns:
        The numbers of the trials marked ``FAIL``.

    """
    from optuna.trial import TrialState

    from tasks.tracking.store import ORPHANED_TAG

    failed, client = [], None
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if slots is not None and t.user_attrs.get("slot") not in slots:
            continue
        why = (f"its process (pid {t.user_attrs.get('pid')} on {t.user_attrs.get('host')}) "
               "ended without telling the study (killed); marked FAIL when its slot was "
               "resumed")
        study._storage.set_trial_user_attr(t._trial_id, "failed_because", why)
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        failed.append(t.number)
        if t.user_attrs.get("default"):  # keep the comparison with the defaults
            study.enqueue_trial(dict(t.params), user_attrs={"default": True})
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id:
            client = client or tracking.configure(s)
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_tag(run_id, ORPHANED_TAG, why)
                client.set_tag(run_id, "optuna_state", "FAIL")
                client.set_terminated(run_id, "FAILED")
        log.warning("trial %d of %s: %s", t.number, study.study_name, why)
    return failed


def _pruning_callback(trial: Any, metric: str, lines: bool, label: str) -> Any:
    import keras

    class Prune(keras.callbacks.Callback):
        """Report the validation metric every epoch; stop when the pruner says so."""

        pruned_at: int | None = None

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            if metric not in logs:
                raise TuningError(f"the tuning metric {metric!r} is not in the epoch logs "
                                  f"{sorted(logs)}; set UseCaseSpec.tune=TuneSpec(metric=...)")
            value = float(logs[metric])
            if not math.isfinite(value):
                self.model.stop_training = True
                return
            trial.report(value, epoch)
            if lines:
                report("  %s epoch %d/%d %s=%.4f", label, epoch + 1, self.params["epochs"],
                       metric, value)
            if trial.should_prune():
                self.pruned_at = epoch + 1
                self.model.stop_training = True

    return Prune()


def _limit_threads(parallel: int) -> None:
    """Share the host's cores among the trials running at once."""
    import tensorflow as tf

    threads = max(1, (os.cpu_count() or 1) // max(1, parallel))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already initialised in this process
        pass


def run_trial(spec: UseCaseSpec, params: Mapping[str, Any], dataset_dir: str | Path,
              run_key: str, slot: int, started: Mapping[str, Any], attempt: int = 1,
              s: Settings | None = None) -> dict[str, Any]:
    """Run (or reuse) the trial of one slot; returns its outcome as a small dict.

    Raises:
        TuningError: The tuning metric is not logged by the model.

    """
    from optuna.trial import TrialState

    s = s or settings()
    seed = int(params.get("seed", 42))
    study = open_study(spec, run_key, seed + 1000 * (slot + 1) + attempt)
    fail_orphaned_trials(study, [slot], s)
    for t in _slot_trials(study, slot):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
                t.state == TrialState.FAIL and t.user_attrs.get("diverged")):
            log.info("slot %d: trial %d already %s; reusing it", slot, t.number, t.state.name)
            return {**_outcome(t), "reused": True}
    if started.get("deadline") and time.time() > float(started["deadline"]):
        return {"slot": slot, "state": "SKIPPED", "number": None, "value": None,
                "params": {}, "reason": "the tuning timeout had passed before it started"}
    # TensorFlow only now: a rerun whose slot already finished needs none of it.
    import keras
    import mlflow

    from tasks.steps.train import ModelBuilder, fit, resolve_params

    _limit_threads(int(started.get("parallel", 1)))
    trial = study.ask(distributions(spec))
    for key, value in {"slot": slot, "attempt": attempt, "pid": os.getpid(),
                       "host": socket.gethostname()}.items():
        trial.set_user_attr(key, value)
    trial_params = resolve_params(spec, {**params, **trial.params})
    label = f"trial {trial.number}"
    reader = DatasetReader.open(dataset_dir)
    objective = objectives.get(spec.model.objective)
    keras.utils.set_random_seed(seed)
    model = ModelBuilder(spec, reader.stats, s)(trial_params)
    metric = started["metric"]
    tags = {"use_case": spec.name, "run_key": run_key, "mlp.tuning": study.study_name,
            "optuna_trial": str(trial.number), "mlp.slot": str(slot),
            "optuna_default": str(bool(trial.user_attrs.get("default"))).lower()}
    tracking.configure(s)
    exp = tracking.experiment_id(spec.name, s)
    prune = _pruning_callback(trial, metric, True, label)
    with mlflow.start_run(experiment_id=exp, run_name=label,
                          parent_run_id=started["parent_run_id"], tags=tags) as run, \
            tempfile.TemporaryDirectory(prefix="mlp-trial-tb-") as tb:
        trial.set_user_attr("mlflow_run_id", run.info.run_id)
        mlflow.log_params({**trial_params, "optuna_trial": trial.number})
        try:
            hist, seconds = fit(model, reader, spec, objective, trial_params, Path(tb),
                                callbacks=[prune], epoch_lines=False)
        except TuningError:
            study.tell(trial, state=TrialState.FAIL)
            raise
        values = hist.get(metric) or [float("nan")]
        value = float(values[-1])
        mlflow.log_metric("train_seconds", seconds)
        if prune.pruned_at is not None:
            study.tell(trial, state=TrialState.PRUNED)
            mlflow.set_tags({"optuna_state": "PRUNED",
                             "mlflow.runName": f"{label} (pruned at epoch {prune.pruned_at})",
                             "pruned_at_epoch": str(prune.pruned_at)})
        elif not all(math.isfinite(v) for vals in hist.values() for v in vals):
            trial.set_user_attr("diverged", True)
            study.tell(trial, state=TrialState.FAIL)
            mlflow.set_tags({"optuna_state": "FAIL", "diverged": "true"})
        else:
            study.tell(trial, value)
            mlflow.log_metric("trial_value", value)
            mlflow.set_tag("optuna_state", "COMPLETE")
    done = study._storage.get_trial(trial._trial_id)
    outcome = {**_outcome(done), "seconds": round(seconds, 1), "reused": False}
    report("  %s %s: %s=%s after %d epochs (%.0fs) %s", label, outcome["state"], metric,
           "—" if outcome["value"] is None else f"{outcome['value']:.4f}",
           len(values), seconds, _short(trial.params))
    return outcome


def _short(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def _outcome(t: Any) -> dict[str, Any]:
    value = t.value
    if value is None and t.intermediate_values:  # pruned: its last reported value
        value = t.intermediate_values[max(t.intermediate_values)]
    return {"slot": t.user_attrs.get("slot"), "number": t.number, "state": _state(t),
            "value": value, "params": dict(t.params), "default": bool(t.user_attrs.get(
                "default")), "epochs": len(t.intermediate_values),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id")}


# ---------------------------------------------------------------------------- the best


def _plots(study: Any, names: Sequence[str], out_dir: Path) -> list[Path]:
    """Optuna's optimization-history and parallel-coordinate plots (matplotlib) as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ov

    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, draw in ((HISTORY_PNG, lambda: ov.plot_optimization_history(study)),
                           (PARALLEL_PNG, lambda: ov.plot_parallel_coordinate(
                               study, params=list(names)))):
            ax = draw()
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            fig.savefig(out_dir / name, dpi=100)
            plt.close(fig)
            paths.append(out_dir / name)
    return paths


def finish(spec: UseCaseSpec, run_key: str, started: Mapping[str, Any],
           results: Sequence[Mapping[str, Any]], s: Settings | None = None) -> dict[str, Any]:
    """Pick the best trial; write the summary and plots; log them on the tuning run.

    Raises:
        TuningError: No trial completed (all pruned, failed or skipped).

    """
    from optuna.trial import TrialState

    s = s or settings()
    layout = RunLayout.of(spec.name, run_key, s)
    study = open_study(spec, run_key)
    fail_orphaned_trials(study, None, s)  # every slot has ended: RUNNING ones are orphans
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        states = {st.name: sum(t.state == st for t in trials) for st in TrialState}
        raise TuningError(f"study {study.study_name}: no trial completed "
                          f"({ {k: v for k, v in states.items() if v} }); nothing to train")
    best = study.best_trial
    defaults = [t for t in trials if t.user_attrs.get("default")]  # a killed one is re-asked
    default = next((t for t in defaults if t.state == TrialState.COMPLETE),
                   defaults[0] if defaults else None)
    ts = tune_spec(spec)
    summary = {
        "study": study.study_name, "storage": started.get("storage"),
        "metric": ts.metric, "direction": ts.direction,
        "search_space": study.user_attrs.get("search_space", {}),
        "parent_run_id": started["parent_run_id"],
        "best": _outcome(best),
        "default": _outcome(default) if default is not None else None,
        "counts": {st.name: sum(t.state == st for t in trials) for st in TrialState
                   if any(t.state == st for t in trials)},
        "trials": [{**_outcome(t), "seconds": _seconds(t)} for t in trials],
        "this_run": [dict(r) for r in results],
    }
    with atomic_dir(tune_dir(layout)) as tmp:
        write_json(tmp / SUMMARY, summary)
        plots = _plots(study, list(distributions(spec)), tmp)
    client = tracking.configure(s)
    parent = started["parent_run_id"]
    for path in plots:
        client.log_artifact(parent, str(tune_dir(layout) / path.name), "tuning")
    client.log_artifact(parent, str(tune_dir(layout) / SUMMARY), "tuning")
    client.log_metric(parent, f"best_{ts.metric}", float(best.value))
    if default is not None and default.value is not None:
        client.log_metric(parent, f"default_{ts.metric}", float(default.value))
    for state, n in summary["counts"].items():
        client.log_metric(parent, f"trials_{state.lower()}", n)
    client.set_tag(parent, "best_trial", str(best.number))
    for k, v in best.params.items():
        client.log_param(parent, f"best_{k}", v)
    return {"study": study.study_name, "best_trial": best.number, "best_value": best.value,
            "best_params": dict(best.params), "metric": ts.metric,
            "default_value": None if default is None else default.value,
            "parent_run_id": parent, "counts": summary["counts"],
            "summary": str(tune_dir(layout) / SUMMARY)}


def _seconds(t: Any) -> float | None:
    if t.datetime_start and t.datetime_complete:
        return round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
    return None


def tune_tags(best: Mapping[str, Any]) -> dict[str, str]:
    """Tags of the training run (and so of the registered version) of the best params."""
    return {"tune_study": best["study"], "tune_trial": str(best["best_trial"]),
            "tune_value": f"{best['best_value']:.6g}", "tune_metric": best["metric"],
            "tune_run_id": best["parent_run_id"]}
