"""``mlp tensorboard``: open TensorBoard on a use case's training logs.

Every training run writes Keras' TensorBoard logs (per-epoch scalars, and histograms of
every layer's weights each epoch, as the books show) into its run folder
(``runs/<use case>/<run key>/train/tensorboard``, ablation arms beside it) and onto its
MLflow run (artifacts ``tensorboard/``). Without ``--run`` TensorBoard reads every run of
the use case, one TensorBoard run each; ``--run`` takes a run key (the folder name, e.g.
``20261206T193527Z``) or an MLflow run id, whose logs are downloaded from the tracking
server when the folder is not on this machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tasks.core.config import Settings, settings
from tasks.core.errors import PermanentError
from tasks.core.run import RunLayout

TENSORBOARD = "tensorboard"


class NoLogs(PermanentError, LookupError):
    """No TensorBoard logs for what was asked; the message says what exists."""


def _has_events(path: Path) -> bool:
    return path.is_dir() and any(path.rglob("events.out.tfevents.*"))


def logdir(use_case: str, run: str | None = None, s: Settings | None = None) -> Path:
    """The folder TensorBoard should read for ``use_case`` (and ``run``).

    Raises:
        NoLogs: The use case has no run with logs, or ``run`` names none.

    """
    s = s or settings()
    runs = s.root / "runs" / use_case
    if run is None:
        if not any(_has_events(d / "train") for d in runs.glob("*")):
            raise NoLogs(f"{use_case}: no training run with TensorBoard logs under {runs}; "
                         f"run `mlp run {use_case}` first")
        return runs
    train = RunLayout.of(use_case, run, s).run_dir / "train"
    if _has_events(train):
        return train
    return _download(use_case, run, s)


def _download(use_case: str, run_id: str, s: Settings) -> Path:
    """An MLflow run's ``tensorboard`` artifacts, downloaded once under ``$MLP_HOME``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from tasks.tracking import configure

    target = s.root / TENSORBOARD / use_case / run_id
    if _has_events(target):
        return target
    client = configure(s)
    try:
        found = client.get_run(run_id)
    except MlflowException:
        keys = sorted(p.name for p in (s.root / "runs" / use_case).glob("*"))
        raise NoLogs(f"{use_case}: {run_id!r} is neither a run key with TensorBoard logs "
                     f"(runs: {', '.join(keys[-5:]) or 'none'}) nor an MLflow run id") from None
    if found.data.tags.get("use_case") not in (None, use_case):
        raise NoLogs(f"MLflow run {run_id} belongs to {found.data.tags['use_case']!r}, "
                     f"not {use_case!r}")
    target.mkdir(parents=True, exist_ok=True)
    try:
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TENSORBOARD,
                                            dst_path=str(target))
    except (MlflowException, OSError) as exc:
        raise NoLogs(f"MLflow run {run_id} has no TensorBoard logs ({exc})") from None
    return target


def command(directory: Path, host: str, port: int) -> list[str]:
    """The TensorBoard command line (the venv's own ``tensorboard``)."""
    exe = Path(sys.executable).with_name(TENSORBOARD)
    return [str(exe), "--logdir", str(directory), "--host", host, "--port", str(port)]


def open_tensorboard(use_case: str, run: str | None, host: str, port: int,
                     s: Settings | None = None) -> None:
    """Replace this process by TensorBoard on the logs (Ctrl-C or a signal stops it)."""
    directory = logdir(use_case, run, s)
    print(f"TensorBoard on {directory}\n  http://{host}:{port}/  (weight histograms: the "
          "HISTOGRAMS tab; Ctrl-C stops it)", flush=True)
    cmd = command(directory, host, port)
    os.execv(cmd[0], cmd)  # signals reach TensorBoard itself; nothing is left behind
