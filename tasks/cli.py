"""``mlp``: run use-case pipelines, serve models, open the MLflow UI.

Airflow reads its configuration when first imported, so every command exports the
platform environment (:func:`tasks.config.apply_env`) before importing Airflow.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tasks.config import Settings, apply_env, settings


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def migrate_airflow_db() -> None:
    """Create or upgrade the Airflow metadata database (idempotent)."""
    out = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"],
                         capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
        raise SystemExit(f"airflow db migrate failed (exit {out.returncode})")


def run_pipeline(use_case: str, conf: dict[str, Any], logical_date: datetime | None = None
                 ) -> dict[str, Any]:
    """Run one use case's DAG end to end in-process with Airflow's ``dag.test()``.

    Returns:
        Summary dict: state, run key, MLflow run, metrics, gate verdict, registry version.

    """
    s = apply_env()
    migrate_airflow_db()
    import models
    from tasks.dag_factory import build_dag

    spec = models.get(use_case)
    dag = build_dag(spec)
    logical = logical_date or datetime.now(UTC).replace(microsecond=0)
    dag_run = dag.test(logical_date=logical, run_conf=conf)
    key = logical.strftime("%Y%m%dT%H%M%SZ")
    return summarise(s, use_case, key, str(dag_run.state))


def summarise(s: Settings, use_case: str, key: str, state: str) -> dict[str, Any]:
    """Collect what a run produced from its run directory."""
    run_dir = s.run_dir(use_case, key)

    def load(rel: str) -> dict[str, Any]:
        p = run_dir / rel
        return json.loads(p.read_text()) if p.is_file() else {}

    train = load("train/result.json")
    request = write_example_request(use_case, run_dir) if state == "success" else None
    evaluation = load("evaluation/evaluation.json")
    return {
        "use_case": use_case,
        "run_key": key,
        "state": state,
        "run_dir": str(run_dir),
        "mlflow_run_id": train.get("run_id"),
        "params": train.get("params"),
        "train_seconds": train.get("train_seconds"),
        "test_accuracy": evaluation.get("test_accuracy"),
        "metrics": {k: v for k, v in evaluation.items() if isinstance(v, int | float)},
        "gate": load("gate.json"),
        "deploy": load("deploy.json"),
        "request": str(request) if request else None,
    }


def print_summary(summary: dict[str, Any], s: Settings) -> None:
    """Human-readable end-of-run report."""
    gate, deploy = summary["gate"], summary["deploy"]
    name = summary["use_case"]
    lines = [
        "",
        f"== {name} run {summary['run_key']}: {summary['state']}",
        f"  run outputs     {summary['run_dir']}",
        f"  MLflow run      {summary['mlflow_run_id']} (experiment {name!r})",
        f"  params          {summary['params']}",
        f"  train time      {summary['train_seconds']} s",
    ]
    if summary["test_accuracy"] is not None:
        lines.append(f"  test accuracy   {summary['test_accuracy']:.4f}")
    others = {k: v for k, v in (summary.get("metrics") or {}).items() if k != "test_accuracy"}
    if others:
        lines.append("  test metrics    " + ", ".join(f"{k}={v:.4g}" for k, v in others.items()))
    if gate:
        lines.append(f"  gate            {'PASSED' if gate['passed'] else 'FAILED'}: "
                     f"{gate['reason']}")
    if deploy:
        lines.append(f"  registered      {name} version {deploy['version']} "
                     f"(alias {deploy['alias']}; previous {deploy['previous']})")
    else:
        lines.append("  registered      nothing (the run stopped before deployment)")
    lines += [
        f"  MLflow UI       .venv/bin/mlflow ui --backend-store-uri {s.tracking_uri} "
        "--port 5000   -> http://127.0.0.1:5000",
        f"  serve           .venv/bin/mlp serve   -> http://{s.serve_host}:{s.serve_port}",
        f"  query           curl -s -X POST http://{s.serve_host}:{s.serve_port}/v1/models/"
        f"{name}:predict -H 'Content-Type: application/json' -d @{summary['request']}",
        "",
    ]
    print("\n".join(lines))


def write_example_request(use_case: str, run_dir: Path, n: int = 2) -> Path | None:
    """Write a ready-to-send predict request from the first ``n`` test rows of a run."""
    import models
    from tasks.train import make_dataset

    dataset = run_dir / "dataset"
    if not (dataset / "feature_spec.json").is_file():
        return None
    mk = models.get(use_case).model
    spec = json.loads((dataset / "feature_spec.json").read_text())
    x, _ = next(iter(make_dataset(dataset, "test", spec, mk.input_key, mk.label_key, n)))
    path = run_dir / "request.json"
    path.write_text(json.dumps({"instances": x.numpy().tolist()}))
    return path


def add_operate_commands(sub: Any) -> None:
    """Register ``mlp ingest`` and ``mlp retrain`` (see :mod:`tasks.operate`)."""
    p_ingest = sub.add_parser(
        "ingest", help="validate and land new raw data; emit the mlp://<use_case>/raw event")
    p_ingest.add_argument("use_case")
    p_ingest.add_argument("path", help="directory with the new raw files")
    p_ingest.add_argument("--json", action="store_true", help="print the result as JSON")

    p_retrain = sub.add_parser(
        "retrain", help="trigger a run (REST API when Airflow is up, else in-process)")
    p_retrain.add_argument("use_case")
    p_retrain.add_argument("--epochs", type=int)
    p_retrain.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                           help="any other run param (JSON values)")
    p_retrain.add_argument("--logical-date", help="ISO date (default: now)")
    p_retrain.add_argument("--wait", action="store_true",
                           help="follow the run to its end, then print gate verdict and version")
    p_retrain.add_argument("--timeout", type=float, help="give up waiting after N seconds")
    p_retrain.add_argument("--json", action="store_true", help="print the result as JSON")


def run_operate_command(args: argparse.Namespace) -> int:
    """Run ``mlp ingest`` or ``mlp retrain``; returns the exit code."""
    apply_env()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    from tasks import operate
    from tasks.io.idx import IdxFormatError
    from tasks.sources import SourceError

    if args.cmd == "ingest":
        try:
            result = operate.ingest_new_data(args.use_case, args.path)
        except (SourceError, IdxFormatError, KeyError, operate.AirflowError) as exc:
            print(f"ingest failed: {exc.args[0] if isinstance(exc, KeyError) else exc}",
                  file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(result, indent=2, default=str))
        else:
            where = ("Airflow REST API" if result["via"] == "rest"
                     else "metadata DB (the scheduler triggers the run when it runs)")
            print(f"landed {result['landing']} (checksum {result['manifest']['checksum']}, "
                  f"{result['manifest']['facts']})\nasset event mlp://{args.use_case}/raw "
                  f"recorded via {where}")
        return 0
    conf = {k: _parse_value(v) for k, v in (kv.split("=", 1) for kv in args.param)}
    if args.epochs is not None:  # 0 is meaningful (the variant's default)
        conf["epochs"] = args.epochs
    if "source_dir" in conf:
        conf["source_dir"] = str(Path(conf["source_dir"]).resolve())
    logical = datetime.fromisoformat(args.logical_date) if args.logical_date else None
    if logical is not None and logical.tzinfo is None:
        logical = logical.replace(tzinfo=UTC)

    def triggered(run: dict[str, Any]) -> None:
        if args.json:
            return
        print(f"triggered {args.use_case} run {run['run_id']} via the REST API: {run['url']}",
              flush=True)
        if run["paused"]:
            print(f"warning: DAG {args.use_case} is paused; the run waits until it is unpaused")

    try:
        result = operate.retrain(args.use_case, conf, wait=args.wait, logical_date=logical,
                                 timeout=args.timeout, on_triggered=triggered)
    except (KeyError, ValueError, operate.AirflowError, TimeoutError) as exc:
        print(f"retrain failed: {exc.args[0] if isinstance(exc, KeyError) else exc}",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif result["via"] == "in-process":
        print_summary(result, settings())
    elif args.wait:
        print(operate.format_outcome(result))
    return 0 if result["state"] in ("success", "queued", "running") else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mlp`` command."""
    parser = argparse.ArgumentParser(prog="mlp", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p_run = sub.add_parser("run", help="run a use case end to end (embedded defaults)")
    p_run.add_argument("use_case")
    p_run.add_argument("--variant")
    p_run.add_argument("--epochs", type=int)
    p_run.add_argument("--source", help="directory with the raw input files")
    p_run.add_argument("--logical-date", help="ISO date; re-using one re-runs that run")
    p_run.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                       help="any other run param (JSON values)")
    p_run.add_argument("--json", action="store_true", help="print the summary as JSON")

    p_serve = sub.add_parser("serve", help="serve every champion over REST")
    p_serve.add_argument("--host")
    p_serve.add_argument("--port", type=int)
    p_serve.add_argument("--access-log", action="store_true", help="log every request")
    p_serve.add_argument("--model", action="append", dest="models", metavar="NAME",
                         help="serve only this registered model (repeatable; default: all)")

    p_rollback = sub.add_parser(
        "rollback", help="make the previous version champion again (champion -> previous)")
    p_rollback.add_argument("use_case")

    p_models = sub.add_parser("models", help="registered models, versions, aliases, gate metric")
    p_models.add_argument("--json", action="store_true", help="print the rows as JSON")

    add_operate_commands(sub)
    sub.add_parser("list", help="list use cases")
    sub.add_parser("env", help="print the environment the platform uses")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apache_beam", "absl", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    if args.cmd == "run":
        conf: dict[str, Any] = dict(kv.split("=", 1) for kv in args.param)
        conf = {k: _parse_value(v) for k, v in conf.items()}
        if args.variant:
            conf["variant"] = args.variant
        if args.epochs:
            conf["epochs"] = args.epochs
        if args.source:
            conf["source_dir"] = str(Path(args.source).resolve())
        logical = datetime.fromisoformat(args.logical_date) if args.logical_date else None
        if logical is not None and logical.tzinfo is None:
            logical = logical.replace(tzinfo=UTC)
        summary = run_pipeline(args.use_case, conf, logical)
        if args.json:
            print(json.dumps(summary, indent=2, default=str))
        else:
            print_summary(summary, settings())
        return 0 if summary["state"] == "success" else 1
    if args.cmd == "serve":
        apply_env()
        from tasks.serve import serve

        serve(args.host, args.port, access_log=args.access_log, models=args.models)
        return 0
    if args.cmd == "rollback":
        apply_env()
        from tasks.registry import RegistryError, rollback

        try:
            result = rollback(args.use_case)
        except RegistryError as exc:
            print(f"rollback failed: {exc}", file=sys.stderr)
            return 1
        print(f"{result['model']}: champion is now version {result['champion']} "
              f"(version {result['previous']} demoted to previous); running servers switch "
              "on their next registry poll")
        return 0
    if args.cmd == "models":
        apply_env()
        from tasks.registry import format_models, list_models

        rows = list_models()
        print(json.dumps(rows, indent=2) if args.json else format_models(rows))
        return 0
    if args.cmd in ("ingest", "retrain"):
        return run_operate_command(args)
    if args.cmd == "list":
        import models

        for name in models.names():
            print(name)
        return 0
    if args.cmd == "env":
        from tasks.config import service_env

        for k, v in sorted(service_env().items()):
            print(f"export {k}={v}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
