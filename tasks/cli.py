"""``mlp``: the operators' command line (argument parsing and printing only).

Every command is a small function of the parsed arguments that calls
:mod:`tasks.operations`, :mod:`tasks.tracking` or :mod:`tasks.serving` and prints the
outcome. User mistakes (a malformed ``--param``, a bad date, an unknown use case) get a
one-line message and exit code 2 before anything starts. Airflow reads its configuration
when first imported, so commands export the platform environment
(:func:`tasks.core.config.apply_env`) before importing it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.core.config import Settings, apply_env, settings

USAGE_ERROR = 2


class UsageError(ValueError):
    """A mistake in the command line; printed as one line, exit code 2."""


def parse_value(text: str) -> Any:
    """A ``--param`` value: JSON when it parses (numbers, booleans), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict.

    Raises:
        UsageError: A pair without ``=`` or with an empty key.

    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param {pair!r}: expected KEY=VALUE, e.g. --param epochs=5")
        out[key.strip()] = parse_value(value)
    return out


def parse_date(text: str | None) -> datetime | None:
    """An ISO date or date-time (UTC when no zone is given).

    Raises:
        UsageError: Not an ISO date.

    """
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--logical-date {text!r}: expected an ISO date such as 2026-05-04 "
                         "or 2026-05-04T03:00:00") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def known_use_case(name: str) -> str:
    """The name, if a use case has it.

    Raises:
        UsageError: Unknown use case (with the known ones and a close match).

    """
    from tasks.spec import catalog

    try:
        catalog.get(name)
    except catalog.UnknownUseCase as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:  # the use case's own module: a syntax, import or spec error
        raise UsageError(f"models/{name}.py does not load: {type(exc).__name__}: "
                         f"{exc}") from None
    return name


def validated(use_case: str, conf: dict[str, Any]) -> str:
    """The use case's name, once its spec, params and source pass ``mlp validate``.

    Raises:
        UsageError: One line per problem (before Airflow or TensorFlow start).

    """
    from tasks.spec import catalog
    from tasks.steps.validate import check_rows, validate

    known_use_case(use_case)
    spec = catalog.get(use_case)
    problems = validate(spec, conf)
    if not problems:  # the rows, once the files and headers are right (seconds: sampled)
        problems, notes = check_rows(spec, conf)
        for note in notes:
            print(f"{use_case} source rows: {note}", file=sys.stderr)
    if problems:
        raise UsageError("\n".join(str(p) for p in problems))
    return use_case


def run_conf(args: argparse.Namespace) -> dict[str, Any]:
    """The run params of ``mlp run``/``mlp retrain`` from their flags."""
    conf = parse_params(args.param)
    if getattr(args, "variant", None):
        conf["variant"] = args.variant
    if args.epochs is not None:  # 0 is meaningful (the variant's default)
        conf["epochs"] = args.epochs
    if getattr(args, "source", None):
        conf["source_dir"] = args.source
    if "source_dir" in conf and not str(conf["source_dir"]).startswith(("synthetic:",
                                                                         "bundled:")):
        conf["source_dir"] = str(Path(conf["source_dir"]).resolve())
    return conf


# ---------------------------------------------------------------------------- printing


def summary_lines(summary: dict[str, Any], s: Settings) -> list[str]:
    """The human-readable end-of-run report (absent parts are left out)."""
    name = summary["use_case"]
    lines = ["", f"== {name} run {summary['run_key']}: {summary['state']}",
             f"  run outputs     {summary['run_dir']}"]
    if "failed_task" in summary:
        lines.append(f"  failed task     {summary['failed_task']}: {summary['error']}")
    elif summary["state"] != "success":
        lines.append("  failed task     none reported (the run failed before or between "
                     "steps; see the full log)")
    if "mlflow_run_id" in summary:
        lines += [f"  MLflow run      {summary['mlflow_run_id']} (experiment {name!r})",
                  f"  params          {summary['params']}",
                  f"  train time      {summary['train_seconds']} s"]
    metrics, book = summary.get("metrics") or {}, summary.get("book_figures") or {}
    if "test_accuracy" in metrics:
        ref = (f" (the book: {book['test_accuracy']:.4f})" if "test_accuracy" in book
               else "")
        lines.append(f"  test accuracy   {metrics['test_accuracy']:.4f}{ref}")
    if ablation := summary.get("ablation"):
        arms = ", ".join(f"{arm} {v:.4f}" for arm, v in ablation["test"].items())
        lines.append(f"  ablation        {ablation['metric']}: {arms}; "
                     f"winner {ablation['winner']}")
    others = {k: v for k, v in metrics.items() if k != "test_accuracy"
              and not k.startswith(("test_precision_", "test_recall_"))}
    if others:
        lines.append("  test metrics    " + ", ".join(f"{k}={v:.4g}" for k, v in others.items()))
    gate, deploy = summary.get("gate"), summary.get("deploy")
    if gate:
        lines.append(f"  gate            {'PASSED' if gate['passed'] else 'FAILED'}: "
                     f"{gate['reason']}")
    if deploy and deploy.get("moved", True) and deploy["alias"] == "challenger":
        lines.append(f"  registered      {name} version {deploy['version']} (alias "
                     f"challenger: {deploy['note']})")
    elif deploy and deploy.get("moved", True):
        lines.append(f"  registered      {name} version {deploy['version']} "
                     f"(alias {deploy['alias']}; previous {deploy['previous'] or 'none'})")
    elif deploy:
        lines.append(f"  registered      {name} version {deploy['version']}, not promoted: "
                     f"{deploy['note']}")
    elif summary["state"] == "success":
        lines.append("  registered      nothing (the run stopped before deployment)")
    if "log_file" in summary:
        lines.append(f"  full log        {summary['log_file']}")
    if wall := summary.get("wall_time"):
        lines.append(f"  wall time       {wall_time_line(wall)}")
    if summary["state"] == "success":
        lines += [
            f"  MLflow UI       .venv/bin/mlflow ui --backend-store-uri {s.tracking_uri} "
            "--port 5000   -> http://127.0.0.1:5000",
            f"  serve           .venv/bin/mlp serve   -> http://{s.serve_host}:{s.serve_port}",
        ]
        if "request" in summary:
            lines.append(f"  query           curl -s -X POST http://{s.serve_host}:"
                         f"{s.serve_port}/v1/models/{name}:predict -H 'Content-Type: "
                         f"application/json' -d @{summary['request']}")
    return [*lines, ""]


def wall_time_line(wall: dict[str, Any]) -> str:
    """``install 95s + start-up 9s + steps 480s (fit 430s) + between steps 6s = 590s``."""
    parts = []
    if "install" in wall:
        parts.append(f"install {wall['install']:.0f}s")
    steps = f"steps {wall['steps']:.0f}s"
    if "fit" in wall:
        steps += f" (fit {wall['fit']:.0f}s)"
    parts += [f"start-up {wall['start_up']:.1f}s", steps,
              f"between steps and exit {wall['other']:.1f}s"]
    total = wall.get("total", wall["run"])
    return " + ".join(parts) + f" = {total:.0f}s ({total / 60:.1f} min)"


def format_outcome(result: dict[str, Any]) -> str:
    """Human-readable end of ``mlp retrain --wait``: state, gate verdict, new version."""
    gate, deploy = result.get("gate") or {}, result.get("deploy") or {}
    lines = [f"run {result.get('run_id') or result.get('run_key')}: {result['state']}"]
    if gate:
        forced = " (forced by operator)" if gate.get("forced") else ""
        lines.append(f"  gate        {'PASSED' if gate.get('passed') else 'FAILED'}{forced}: "
                     f"{gate.get('reason')}")
    else:
        lines.append("  gate        not reached")
    if deploy and not deploy.get("moved", True):
        lines.append(f"  registered  version {deploy.get('version')}, not promoted: "
                     f"{deploy.get('note')}")
    elif deploy:
        lines.append(f"  registered  version {deploy.get('version')} (alias "
                     f"{deploy.get('alias')}; previous {deploy.get('previous')})")
    else:
        lines.append("  registered  nothing (the run stopped before deployment)")
    return "\n".join(lines)


def emit(args: argparse.Namespace, result: Any, text: Callable[[], str]) -> None:
    """Print ``result`` as JSON with ``--json``, else as ``text()``.

    With ``--json`` the command's own output went to stderr (:func:`main`), so stdout
    holds exactly one JSON document for the caller's parser.
    """
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2, default=str), file=getattr(args, "_stdout",
                                                                     sys.stdout))
    else:
        print(text())


# ---------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    """``mlp run``: one DAG run on the embedded stack, concise console, summary."""
    from tasks.operations.local import run_pipeline

    conf, logical = run_conf(args), parse_date(args.logical_date)
    use_case = validated(args.use_case, conf)
    summary = run_pipeline(use_case, conf, logical,
                           echo=(lambda _: None) if args.json else None)
    emit(args, summary, lambda: "\n".join(summary_lines(summary, settings())))
    return 0 if summary["state"] == "success" else 1


def cmd_tune(args: argparse.Namespace) -> int:
    """``mlp tune``: an Optuna search as parallel mapped tasks, then train/gate/deploy."""
    from tasks.operations.tune import tune, tuning_lines

    conf, logical = run_conf(args), parse_date(args.logical_date)
    use_case = validated(args.use_case, conf)
    if not any(p.search for p in known_spec(use_case).params.values()):
        raise UsageError(f"{use_case} declares no search space: add search=... to its run "
                         f"params in models/{use_case}.py (e.g. LogUniform(1e-4, 1e-1))")
    if args.trials < 1 or args.parallel < 1 or (args.timeout is not None and args.timeout <= 0):
        raise UsageError("--trials and --parallel must be >= 1, --timeout > 0 seconds")
    apply_env()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    summary = tune(use_case, conf, args.trials, args.parallel, args.timeout, logical)
    emit(args, summary, lambda: "\n".join(
        (summary_lines(summary, settings()) if summary["via"] == "in-process"
         else [format_outcome(summary)]) + tuning_lines(summary.get("tuning") or {})))
    return 0 if summary["state"] == "success" else 1


def cmd_validate(args: argparse.Namespace) -> int:
    """``mlp validate``: the spec against its source and params, in seconds (exit 2 if not)."""
    conf = run_conf(args)
    use_case = validated(args.use_case, conf)
    spec = known_spec(use_case)
    where = conf.get("source_dir") or spec.source.default_location
    print(f"{use_case}: valid (spec, params, source {where})")
    gate = spec.gate_for(conf)
    if gate is not None and gate.bars():
        print(f"  gate: {gate.bars()}")
    return 0


def known_spec(use_case: str) -> Any:
    """The spec of a known use case."""
    from tasks.spec import catalog

    return catalog.get(known_use_case(use_case))


def cmd_new(args: argparse.Namespace) -> int:
    """``mlp new``: write models/<name>.py and dags/<name>.py, nothing else."""
    from tasks.operations.scaffold import ScaffoldError, new_use_case
    from tasks.spec import catalog

    columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
    try:
        written = new_use_case(args.name, from_use_case=args.from_use_case,
                               from_csv=args.from_csv, columns=columns,
                               skip_rows=args.skip_rows, notes=print)
    except (ScaffoldError, catalog.UnknownUseCase) as exc:
        raise UsageError(str(exc)) from None
    for path in written:
        print(f"wrote {path}")
    print(f"next: edit models/{args.name}.py, then `mlp validate {args.name}` and "
          f"`mlp run {args.name}`")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``mlp serve``: every champion over REST."""
    apply_env()
    from tasks.serving import OptionError, serve

    try:
        serve(args.host, args.port, access_log=args.access_log, models=args.models,
              token=args.token, api_keys=args.api_keys, insecure=args.insecure,
              strict_inputs=args.strict_inputs or None,
              log_requests=args.log_requests, batching_parameters=args.batching_parameters,
              batching=not args.no_batching)
    except OptionError as exc:
        raise UsageError(str(exc)) from exc
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """``mlp rollback``: champion back to the previous version."""
    apply_env()
    from tasks.tracking.registry import RegistryError, rollback

    try:
        result = rollback(args.use_case, to=args.to, why=args.reason or "")
    except RegistryError as exc:
        print(f"mlp rollback: {exc}", file=sys.stderr)
        return 1
    back = (f"previous is now version {result['previous']}" if result["previous"]
            else "no earlier champion left")
    print(f"{result['model']}: champion is now version {result['champion']} (version "
          f"{result['demoted']} demoted; {back}); running servers switch on their next "
          "registry poll")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """``mlp models``: registered versions, aliases and gate figures (or one model card)."""
    apply_env()
    from tasks.tracking.registry import (
        RegistryError,
        alias_history,
        format_history,
        format_models,
        list_models,
    )

    if args.history:
        try:
            moves = alias_history(args.history)
        except RegistryError as exc:
            print(f"mlp models: {exc}", file=sys.stderr)
            return 1
        emit(args, moves, lambda: format_history(args.history, moves))
        return 0
    if args.set_challenger or args.clear_challenger:
        return _challenger(args)
    if args.card:
        from tasks.steps.model_card import read_card

        try:
            print(read_card(args.card), end="")
        except LookupError as exc:
            print(f"mlp models: {exc}", file=sys.stderr)
            return 1
        return 0
    rows = list_models()
    emit(args, rows, lambda: format_models(rows))
    return 0


def _challenger(args: argparse.Namespace) -> int:
    """``mlp models --set-challenger NAME/VERSION`` / ``--clear-challenger NAME``."""
    from tasks.tracking.registry import RegistryError

    try:
        if args.clear_challenger:
            from tasks.tracking.challenger import clear_challenger

            old = clear_challenger(args.clear_challenger, why=args.reason or "")
            print(f"{args.clear_challenger}: " + (f"challenger version {old} removed"
                                                   if old else "had no challenger"))
            return 0
        from tasks.operations.challenger import set_challenger_checked

        name, _, version = args.set_challenger.partition("/")
        if not name or not version:
            raise UsageError(f"--set-challenger {args.set_challenger!r}: expected "
                             "NAME/VERSION, e.g. mnist/4")
        result = set_challenger_checked(name, version, why=args.reason or "")
    except RegistryError as exc:
        print(f"mlp models: {exc}", file=sys.stderr)
        return 1
    print(f"{result['model']}: version {result['challenger']} is the challenger (champion "
          f"version {result['champion']}); running servers shadow-score it from their next "
          "registry poll; `mlp promote " + result["model"] + "` when its figures convince")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """``mlp promote``: show the challenger's shadow figures, make it the champion."""
    apply_env()
    from tasks.tracking.challenger import format_figures, promote, shadow_figures
    from tasks.tracking.registry import RegistryError

    try:
        figures = shadow_figures(args.use_case)
        if figures is not None:
            print(format_figures(figures))
        result = promote(args.use_case, why=args.reason or "", require_figures=not args.force)
    except RegistryError as exc:
        print(f"mlp promote: {exc}", file=sys.stderr)
        return 1
    back = f"previous is now version {result['previous']}" if result["previous"] else \
        "there was no champion before"
    print(f"{result['model']}: champion is now version {result['champion']} ({back}; "
          f"`mlp rollback {result['model']}` undoes it); running servers switch on their "
          "next registry poll")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """``mlp approve``: release (or reject) a run waiting for approval, over REST."""
    apply_env()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from tasks.operations.airflow_api import AirflowError
    from tasks.operations.approval import approve

    use_case = known_use_case(args.use_case)
    try:
        result = approve(use_case, args.run, reject=args.reject, reason=args.reason or "")
    except (ValueError, AirflowError) as exc:
        print(f"approve failed: {exc}", file=sys.stderr)
        return 1
    emit(args, result, lambda: (
        f"{use_case} run {result['dag_run_id']}: {result['decision']}"
        + (f" ({result['reason']})" if result["reason"] else "")
        + ("; deploy follows" if result["decision"] == "approved"
           else "; deploy is skipped, nothing is registered")))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """``mlp ingest``: validate and land new raw data, announce it."""
    apply_env()
    from tasks.core.errors import PermanentError
    from tasks.operations.airflow_api import AirflowError
    from tasks.operations.landing import ingest_new_data

    use_case = known_use_case(args.use_case)
    conf = parse_params(args.param)
    unknown = sorted(set(conf) - {"max_bad_fraction"})
    if unknown:
        raise UsageError(f"--param {unknown[0]}: mlp ingest takes only max_bad_fraction")
    if conf:
        from tasks.spec import catalog
        from tasks.steps.validate import check_params

        problems = check_params(catalog.get(use_case), conf)
        if problems:
            raise UsageError(str(problems[0]))
    try:
        result = ingest_new_data(use_case, args.path,
                                 max_bad_fraction=conf.get("max_bad_fraction"),
                                 purpose=args.purpose)
    except (PermanentError, AirflowError) as exc:
        print(f"ingest failed: {exc}", file=sys.stderr)
        return 1
    where = ("Airflow REST API" if result["via"] == "rest"
             else "metadata DB (the scheduler triggers the run when it runs)")
    emit(args, result, lambda: (
        f"landed {result['landing']} (checksum {result['manifest']['checksum']}, "
        f"{result['manifest']['facts']})\nasset event {result['asset']} recorded via "
        f"{where}"))
    return 0


def quiet_mlflow_downloads() -> None:
    """No MLflow download progress bars on the console (model and report downloads)."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def cmd_score(args: argparse.Namespace) -> int:
    """``mlp score``: a file or folder -> Parquet predictions of a registered version."""
    apply_env()
    quiet_mlflow_downloads()
    from tasks.core.errors import PermanentError
    from tasks.steps.score import score

    spec = known_spec(args.use_case)
    if spec.model is None:
        raise UsageError(f"{args.use_case} has no model to score with")
    if args.version and args.alias:
        raise UsageError("give --version or --alias, not both")
    if not Path(args.path).exists():
        raise UsageError(f"{args.path}: no such file or folder")
    try:
        result = score(spec, str(Path(args.path).resolve()), version=args.version,
                       alias=args.alias, out_dir=Path(args.out).resolve() if args.out else None)
    except PermanentError as exc:
        raise UsageError(str(exc)) from None
    emit(args, result.__dict__, lambda: format_score(result, args.path))
    return 0


def format_score(result: Any, path: str) -> str:
    """The console summary of a scoring run."""
    out = Path(result.out_dir)
    lines = [f"scored {result.rows:,} rows of {path} with {result.model} v{result.version} "
             f"in {result.seconds:.1f} s ({result.rows_per_s:,.0f} rows/s)",
             f"  predictions  {out}/predictions/ ({len(result.files)} Parquet files)"]
    quarantine = out / "quarantine.jsonl"
    if result.quarantined:
        first = json.loads(quarantine.read_text().splitlines()[0])
        at = f"line {first['line']}" if "line" in first else f"row {first.get('row')}"
        lines.append(f"  quarantined  {result.quarantined} rows -> {quarantine} (first: "
                     f"{first['file']} {at} field {first.get('field')!r}: {first['reason']})")
    else:
        lines.append("  quarantined  none")
    lines.append(f"  drift        {result.drift['summary']} -> {out}/drift/report.md")
    if result.metrics:
        lines.append("  vs label     " + ", ".join(f"{k}={v:.4f}" for k, v in
                                                   sorted(result.metrics.items())))
    if result.run_id:
        lines.append(f"  MLflow run   {result.run_id} (experiment {result.model}-scoring)")
    return "\n".join(lines)


def format_drift_table(report: dict[str, Any]) -> str:
    """A drift/skew report's per-column table (worst first)."""
    names = {"psi": "PSI", "jensen_shannon": "JS", "linf": "L-inf"}
    rows = [f"{'column':<34} {'kind':<11} {'distance':<8} {'value':>8} {'warn':>6} "
            f"{'fail':>6}  status"]
    for c in report["columns"]:
        value = "—" if c["value"] is None else f"{c['value']:.3f}"
        fail = "—" if c["fail"] is None else f"{c['fail']:g}"
        status = c["status"].upper() if c["status"] in ("warn", "fail") else c["status"]
        if c.get("note"):
            status += f" ({c['note']})"
        rows.append(f"{c['name'][:34]:<34} {c['kind']:<11} {names[c['metric']]:<8} "
                    f"{value:>8} {c['warn']:>6g} {fail:>6}  {status}")
    return "\n".join(rows)


def cmd_monitor(args: argparse.Namespace) -> int:
    """``mlp monitor``: the per-column drift/skew table of logged requests or new data."""
    apply_env()
    quiet_mlflow_downloads()
    from tasks.core.errors import PermanentError
    from tasks.core.files import read_json
    from tasks.steps.monitor import monitor_requests, monitoring_root
    from tasks.steps.score import new_key, score

    spec = known_spec(args.use_case)
    if spec.model is None:
        raise UsageError(f"{args.use_case} has no model to monitor")
    path = Path(args.path).resolve() if args.path else None
    if path is not None and not path.exists():
        raise UsageError(f"{args.path}: no such file or folder")
    key = new_key()
    logs = path is None or path.suffix == ".jsonl" or (path.is_dir() and any(
        path.glob("requests-*.jsonl")))
    try:
        if logs:
            summary = monitor_requests(spec, key, path, advance=False)
            reports = [(r["version"], read_json(Path(r["report"]).with_suffix(".json")),
                        r["report"]) for r in summary["reports"]]
            head = (f"{spec.name}: {summary['requests']} logged requests "
                    f"({summary['instances']} instances) in {len(summary['files'])} files")
        else:  # raw data: the champion scores it, and both are compared
            result = score(spec, str(path), out_dir=monitoring_root(spec.name) / key,
                           track=False)
            summary = {"status": result.drift["status"]}
            drift = Path(result.out_dir) / "drift"
            reports = [(result.version, read_json(drift / "report.json"),
                        str(drift / "report.md"))]
            head = f"{spec.name}: {result.rows} rows of {path} scored by v{result.version}"
    except PermanentError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        emit(args, {"summary": summary, "reports": [r for _, r, _ in reports]}, str)
    else:
        print(head)
        if not reports:
            print(f"  nothing to compare: {summary.get('summary')}")
        for version, report, md in reports:
            print(f"\nagainst version {version}'s training data: {report['summary']}")
            print(format_drift_table(report))
            print(f"report: {md}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """``mlp retrain``: trigger a run (REST API when Airflow is up, else in-process)."""
    apply_env()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    from tasks.operations.airflow_api import AirflowError
    from tasks.operations.retrain import retrain

    conf, logical = run_conf(args), parse_date(args.logical_date)
    use_case = validated(args.use_case, conf)

    def triggered(run: dict[str, Any]) -> None:
        if args.json:
            return
        print(f"triggered {use_case} run {run['run_id']} via the REST API: {run['url']}",
              flush=True)
        if run["paused"]:
            print(f"warning: DAG {use_case} is paused; the run waits until it is unpaused")

    try:
        result = retrain(use_case, conf, wait=args.wait, logical_date=logical,
                         timeout=args.timeout, on_triggered=triggered)
    except (ValueError, AirflowError, TimeoutError) as exc:
        print(f"retrain failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        emit(args, result, str)
    elif result["via"] == "in-process":
        print("\n".join(summary_lines(result, settings())))
    elif args.wait:
        print(format_outcome(result))
    return 0 if result["state"] in ("success", "queued", "running") else 1


def cmd_tensorboard(args: argparse.Namespace) -> int:
    """``mlp tensorboard``: TensorBoard on a use case's training logs (weight histograms)."""
    from tasks.operations.tensorboard import NoLogs, open_tensorboard

    known_use_case(args.use_case)
    try:
        open_tensorboard(args.use_case, args.run, args.host, args.port)
    except NoLogs as exc:
        raise UsageError(str(exc)) from None
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """``mlp list``: the use cases."""
    from tasks.spec import catalog

    for name in catalog.names():
        print(name)
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """``mlp env``: the environment the platform's processes use."""
    from tasks.core.config import service_env

    for k, v in sorted(service_env().items()):
        print(f"export {k}={v}")
    return 0


# ---------------------------------------------------------------------------- parser


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("use_case")
    p.add_argument("--epochs", type=int)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other run param (JSON values)")
    p.add_argument("--logical-date", help="ISO date; re-using one re-runs that run")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def build_parser() -> argparse.ArgumentParser:
    """The ``mlp`` argument parser; each subcommand carries its handler as ``func``."""
    parser = argparse.ArgumentParser(prog="mlp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="run a use case end to end (embedded defaults)")
    _run_flags(p)
    p.add_argument("--variant")
    p.add_argument("--source", help="directory with the raw input files")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("tune", help="tune a use case's search space with Optuna (trials "
                       "as parallel Airflow mapped tasks), then train, gate and deploy the best")
    _run_flags(p)
    p.add_argument("--variant")
    p.add_argument("--source", help="directory with the raw input files")
    p.add_argument("--trials", type=int, default=8, help="trials of the study (default 8)")
    p.add_argument("--parallel", type=int, default=2, help="trials at once (default 2)")
    p.add_argument("--timeout", type=float, help="no new trial starts after S seconds")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("validate", help="check a use case's spec, params and source "
                       "files in seconds, without starting anything")
    p.add_argument("use_case")
    p.add_argument("--source", help="directory with the raw input files")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a run param to check (JSON values)")
    p.add_argument("--epochs", type=int)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("new", help="start a use case: writes models/NAME.py and "
                       "dags/NAME.py from a commented template, a use case or a CSV")
    p.add_argument("name")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from", dest="from_use_case", metavar="USE_CASE",
                     help="copy an existing use case")
    src.add_argument("--from-csv", metavar="FILE",
                     help="infer the columns (dtype, range, allowed values) from a CSV; "
                          "the last column is the label")
    p.add_argument("--columns", metavar="NAMES",
                   help="--from-csv: the column names, comma-separated, of a file without "
                        "a header row")
    p.add_argument("--skip-rows", type=int, default=0, metavar="N",
                   help="--from-csv: lines before the header (or before the data with "
                        "--columns), e.g. scikit-learn's count line")
    p.set_defaults(func=cmd_new)

    p = sub.add_parser("serve", help="serve every champion over REST")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--model", action="append", dest="models", metavar="NAME",
                   help="serve only this registered model (repeatable; default: all)")
    p.add_argument("--token", help="bearer token every request but /healthz must carry: "
                                   "at least 16 characters without spaces "
                                   "(default: MLP_SERVE_TOKEN)")
    p.add_argument("--api-keys", metavar="FILE",
                   help="file of accepted keys, one per line (default: MLP_SERVE_API_KEYS)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without a token or keys")
    p.add_argument("--strict-inputs", action="store_true",
                   help="refuse (400) tabular instances outside their model's schema "
                        "(out of range, unseen category, missing field) instead of "
                        "answering them with warnings")
    p.add_argument("--log-requests", action="append", metavar="[NAME=]RATE",
                   help="sample this share of answered requests into $MLP_HOME/requests/"
                        "<model>/ (repeatable; default: MLP_SERVE_LOG_SAMPLE, off)")
    p.add_argument("--batching-parameters", metavar="FILE",
                   help="JSON micro-batching parameters, global and per model "
                        "(max_batch_size, batch_timeout_micros, max_enqueued_batches)")
    p.add_argument("--no-batching", action="store_true",
                   help="call the model once per request (no micro-batching)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("rollback", help="move champion one step back in its history "
                       "(repeat to go further back), or to --to VERSION")
    p.add_argument("use_case")
    p.add_argument("--to", metavar="VERSION", help="the version to make champion")
    p.add_argument("--reason", help="why (kept in the alias history)")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("models", help="registered models, versions, aliases, gate metric")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--history", metavar="NAME",
                   help="every recorded champion move of one model (who, when, why)")
    p.add_argument("--card", metavar="NAME[/VERSION]",
                   help="print the model card of a version (default: the champion)")
    p.add_argument("--set-challenger", metavar="NAME/VERSION",
                   help="shadow-score this version beside the champion (infra-validated "
                        "first); `mlp promote NAME` makes it the champion")
    p.add_argument("--clear-challenger", metavar="NAME", help="stop shadow-scoring")
    p.add_argument("--reason", help="why (kept in the alias history)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("promote", help="show the challenger's shadow agreement figures and "
                       "make it the champion (recorded; mlp rollback undoes it)")
    p.add_argument("use_case")
    p.add_argument("--reason", help="why (kept in the alias history)")
    p.add_argument("--force", action="store_true",
                   help="promote even if no server has shadow-scored the challenger")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser(
        "approve", help="approve (or --reject) a run waiting after a passing gate (REST API)")
    p.add_argument("use_case")
    p.add_argument("--run", help="the DAG run id (default: the only run waiting)")
    p.add_argument("--reject", action="store_true", help="reject: deploy is skipped")
    p.add_argument("--reason", help="why (required with --reject; kept on the MLflow run)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser(
        "ingest", help="validate and land new raw data; emit the mlp://<use_case>/raw event")
    p.add_argument("use_case")
    p.add_argument("path", help="directory with the new raw files")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="max_bad_fraction=F: tolerate (quarantine) up to this fraction of "
                        "bad rows; the triggered run applies it too (default: the use "
                        "case's)")
    p.add_argument("--for", dest="purpose", choices=("training", "scoring"),
                   default="training", help="scoring: land batch-scoring input (label "
                   "optional) and emit mlp://<use_case>/scoring for the <use_case>_score DAG")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "score", help="score a file or folder (raw format, label optional) with a "
                      "registered version: Parquet predictions, quarantine, drift report")
    p.add_argument("use_case")
    p.add_argument("path", help="file or folder to score")
    p.add_argument("--version", help="registry version (default: the alias's)")
    p.add_argument("--alias", help="registry alias (default: champion)")
    p.add_argument("--out", help="output folder (default: $MLP_HOME/scores/<use_case>/<key>)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "monitor", help="per-column drift/skew table: the server's logged requests (or a "
                        "log file/folder, or raw data) against the champion's training data")
    p.add_argument("use_case")
    p.add_argument("path", nargs="?", help="request-log file/folder, or raw data to compare "
                   "(default: the model's request logs)")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser(
        "retrain", help="trigger a run (REST API when Airflow is up, else in-process)")
    _run_flags(p)
    p.add_argument("--wait", action="store_true",
                   help="follow the run to its end, then print gate verdict and version")
    p.add_argument("--timeout", type=float, help="give up waiting after N seconds")
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("tensorboard", help="open TensorBoard on a use case's training logs "
                       "(scalars, weight histograms)")
    p.add_argument("use_case")
    p.add_argument("--run", help="a run key or MLflow run id (default: every run)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6006)
    p.set_defaults(func=cmd_tensorboard)

    sub.add_parser("list", help="list use cases").set_defaults(func=cmd_list)
    sub.add_parser("env", help="print the environment the platform uses").set_defaults(
        func=cmd_env)
    return parser


# Warnings Beam logs on the root logger at every pipeline start, about optional Google Cloud
# clients and a Windows-only module: nothing a user can act on.
_BEAM_NOISE = ("apitools not found", "Resource module is not available")


def _drop_beam_noise(record: logging.LogRecord) -> bool:
    return not (record.name == "root" and record.getMessage().startswith(_BEAM_NOISE))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mlp`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "absl", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_beam_noise)
    try:
        if getattr(args, "json", False):
            # Libraries that log or print to stdout (Airflow's console logging) would
            # break the JSON a caller parses: everything but the document goes to stderr.
            args._stdout = sys.stdout
            with contextlib.redirect_stdout(sys.stderr):
                return args.func(args)
        return args.func(args)
    except UsageError as exc:
        for line in str(exc).splitlines():
            print(f"mlp {args.cmd}: {line}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
