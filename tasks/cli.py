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
    from tasks.steps.validate import validate

    known_use_case(use_case)
    problems = validate(catalog.get(use_case), conf)
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
    if deploy and deploy.get("moved", True):
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
    """Print ``result`` as JSON with ``--json``, else as ``text()``."""
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2, default=str))
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


def cmd_validate(args: argparse.Namespace) -> int:
    """``mlp validate``: the spec against its source and params, in seconds (exit 2 if not)."""
    conf = run_conf(args)
    use_case = validated(args.use_case, conf)
    where = conf.get("source_dir") or known_spec(use_case).source.default_location
    print(f"{use_case}: valid (spec, params, source {where})")
    return 0


def known_spec(use_case: str) -> Any:
    """The spec of a known use case."""
    from tasks.spec import catalog

    return catalog.get(known_use_case(use_case))


def cmd_new(args: argparse.Namespace) -> int:
    """``mlp new``: write models/<name>.py and dags/<name>.py, nothing else."""
    from tasks.operations.scaffold import ScaffoldError, new_use_case
    from tasks.spec import catalog

    try:
        written = new_use_case(args.name, from_use_case=args.from_use_case,
                               from_csv=args.from_csv)
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
              token=args.token, api_keys=args.api_keys, insecure=args.insecure)
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
    try:
        result = ingest_new_data(use_case, args.path)
    except (PermanentError, AirflowError) as exc:
        print(f"ingest failed: {exc}", file=sys.stderr)
        return 1
    where = ("Airflow REST API" if result["via"] == "rest"
             else "metadata DB (the scheduler triggers the run when it runs)")
    emit(args, result, lambda: (
        f"landed {result['landing']} (checksum {result['manifest']['checksum']}, "
        f"{result['manifest']['facts']})\nasset event mlp://{use_case}/raw recorded via "
        f"{where}"))
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
        print(json.dumps(result, indent=2, default=str))
    elif result["via"] == "in-process":
        print("\n".join(summary_lines(result, settings())))
    elif args.wait:
        print(format_outcome(result))
    return 0 if result["state"] in ("success", "queued", "running") else 1


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
    p.set_defaults(func=cmd_new)

    p = sub.add_parser("serve", help="serve every champion over REST")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--model", action="append", dest="models", metavar="NAME",
                   help="serve only this registered model (repeatable; default: all)")
    p.add_argument("--token", help="bearer token every request but /healthz must carry "
                                   "(default: MLP_SERVE_TOKEN)")
    p.add_argument("--api-keys", metavar="FILE",
                   help="file of accepted keys, one per line (default: MLP_SERVE_API_KEYS)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without a token or keys")
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
    p.set_defaults(func=cmd_models)

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
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "retrain", help="trigger a run (REST API when Airflow is up, else in-process)")
    _run_flags(p)
    p.add_argument("--wait", action="store_true",
                   help="follow the run to its end, then print gate verdict and version")
    p.add_argument("--timeout", type=float, help="give up waiting after N seconds")
    p.set_defaults(func=cmd_retrain)

    sub.add_parser("list", help="list use cases").set_defaults(func=cmd_list)
    sub.add_parser("env", help="print the environment the platform uses").set_defaults(
        func=cmd_env)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mlp`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "absl", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except UsageError as exc:
        for line in str(exc).splitlines():
            print(f"mlp {args.cmd}: {line}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
