"""The run contract: one object owns a run's key, paths and artifact names; typed step results.

Every step of a run reads and writes under two folders of the data root::

    raw/<use case>/<run key>/            the validated raw snapshot (ingest)
    runs/<use case>/<run key>/
        dataset/                         TFRecord shards, feature_spec.json, stats.json,
                                         manifest.json (preprocess)
        dataset.quarantine.jsonl         rejected rows with file, row, field and reason
        analysis/                        the data-analysis page: histograms per split,
                                         class balance, quarantine (analyze)
        drift/                           drift against the champion's data: report,
                                         verdict.json (analyze)
        train/                           model.keras (served), trained.keras, result.json,
                                         history.json, ablation.json, plots (train)
        evaluation/                      evaluation.json and plots (evaluate)
        gate/  gate.json                 side-by-side report and verdict (gate)
        deploy.json                      the registry version (deploy)
        request.json                     a ready-to-send predict request (after a run)

The run key is the DAG run's logical date (``YYYYmmddTHHMMSSZ``) or, for runs without one,
its file-system-safe run id, so re-running a logical date reuses every output of it.

Steps exchange the dataclasses below through XCom as small dicts (``to_xcom`` /
``from_xcom``): paths, ids and scalar metrics, never data.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Self

from tasks.core.config import Settings, settings

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")

# Artifact names inside the run folders (and, for evaluation, in the MLflow run).
SNAPSHOT_MANIFEST = "manifest.json"
DATASET_MANIFEST = "manifest.json"
FEATURE_SPEC = "feature_spec.json"
STATS = "stats.json"
TRAIN_RESULT = "result.json"
TRAIN_HISTORY = "history.json"
ABLATION = "ablation.json"  # the ablation arms' comparison, when the use case has one
SERVED_MODEL = "model.keras"  # what is served: raw inputs in
TRAINED_MODEL = "trained.keras"  # the fitted model on preprocessed inputs
EVALUATION = "evaluation.json"
EVALUATION_ARTIFACT = "evaluation/evaluation.json"
GATE_VERDICT_ARTIFACT = "gate/verdict.json"


def raw_asset_uri(use_case: str) -> str:
    """URI of the asset whose events announce new raw data of a use case."""
    return f"mlp://{use_case}/raw"


def scoring_asset_uri(use_case: str) -> str:
    """URI of the asset whose events announce new batch-scoring input of a use case."""
    return f"mlp://{use_case}/scoring"


def safe_key(text: str) -> str:
    """Turn a run id or date into a file-system-safe partition key."""
    return _UNSAFE.sub("-", text).strip("-")


def run_key(logical_date: datetime | None, run_id: str | None = None) -> str:
    """Partition key of a DAG run: its logical date, else its run id (manual runs).

    Raises:
        ValueError: Neither a logical date nor a run id.

    """
    if logical_date is not None:
        return logical_date.strftime("%Y%m%dT%H%M%SZ")
    if not run_id:
        raise ValueError("a run needs a logical date or a run id to have a key")
    return safe_key(run_id)


def quarantine_file_for(dataset_dir: Path) -> Path:
    """Where the rows rejected while building ``dataset_dir`` are kept (beside it)."""
    return Path(dataset_dir).parent / f"{Path(dataset_dir).name}.quarantine.jsonl"


@dataclass(frozen=True)
class RunLayout:
    """Every path of one run of one use case (nothing is created until a step writes).

    Attributes:
        root: The installation's data root.
        use_case: Use-case name.
        key: The run key (:func:`run_key`).

    """

    root: Path
    use_case: str
    key: str

    @classmethod
    def of(cls, use_case: str, key: str, s: Settings | None = None) -> RunLayout:
        """The layout of ``use_case``'s run ``key`` under the configured data root."""
        return cls((s or settings()).root, use_case, key)

    @property
    def raw_dir(self) -> Path:
        """The validated raw snapshot (ingest)."""
        return self.root / "raw" / self.use_case / self.key

    @property
    def run_dir(self) -> Path:
        """Every derived output of the run."""
        return self.root / "runs" / self.use_case / self.key

    @property
    def dataset_dir(self) -> Path:
        """TFRecord shards, feature spec, statistics and manifest (preprocess)."""
        return self.run_dir / "dataset"

    @property
    def quarantine_file(self) -> Path:
        """Rows preprocessing rejected, one JSON object per line."""
        return quarantine_file_for(self.dataset_dir)

    @property
    def stats_file(self) -> Path:
        """Full-pass statistics per split."""
        return self.dataset_dir / STATS

    @property
    def feature_spec_file(self) -> Path:
        """What the TFRecords hold (names, dtypes, shapes, encodings)."""
        return self.dataset_dir / FEATURE_SPEC

    @property
    def analysis_dir(self) -> Path:
        """The data-analysis page of the run's dataset (analyze)."""
        return self.run_dir / "analysis"

    @property
    def drift_dir(self) -> Path:
        """The drift report against the champion's data and its verdict (analyze)."""
        return self.run_dir / "drift"

    @property
    def train_dir(self) -> Path:
        """The trained and exported models and training reports."""
        return self.run_dir / "train"

    @property
    def evaluation_dir(self) -> Path:
        """The evaluation report and plots."""
        return self.run_dir / "evaluation"

    @property
    def evaluation_file(self) -> Path:
        """The evaluation report (all metrics, per-class figures, confusion matrix)."""
        return self.evaluation_dir / EVALUATION

    @property
    def gate_dir(self) -> Path:
        """The side-by-side gate report."""
        return self.run_dir / "gate"

    @property
    def gate_file(self) -> Path:
        """The gate verdict."""
        return self.run_dir / "gate.json"

    @property
    def deploy_file(self) -> Path:
        """The registry version the run deployed."""
        return self.run_dir / "deploy.json"

    def orphaned_temp_paths(self) -> list[Path]:
        """Temporary files and folders of this run an interrupted step left behind.

        Outputs appear by renaming a temporary sibling (``.<name>.tmp-<id>``,
        :func:`tasks.core.files.atomic_dir`); a killed step leaves that sibling.
        """
        pattern = f".{self.key}.tmp-*"
        found = [*self.raw_dir.parent.glob(pattern), *self.run_dir.parent.glob(pattern)]
        if self.run_dir.is_dir():
            found += self.run_dir.glob(".*.tmp-*")
        return sorted(found)

    @property
    def request_file(self) -> Path:
        """A ready-to-send predict request built from the run's test rows."""
        return self.run_dir / "request.json"


class StepResult:
    """Mixin of the typed step results: plain dicts for XCom, and back."""

    def to_xcom(self) -> dict[str, Any]:
        """A small JSON-able dict (Airflow's XCom)."""
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def from_xcom(cls, data: dict[str, Any]) -> Self:
        """Rebuild the result from :meth:`to_xcom` output (unknown keys are an error)."""
        return cls(**data)


@dataclass(frozen=True)
class Snapshot(StepResult):
    """Ingest: where the validated raw snapshot of the run is, and its checksum."""

    run_key: str
    snapshot_dir: str
    checksum: str


@dataclass(frozen=True)
class Dataset(StepResult):
    """Preprocess: the dataset folder and the rows of each split."""

    dataset_dir: str
    rows: dict[str, int]


@dataclass(frozen=True)
class TrainedModel(StepResult):
    """Train: the MLflow run, the logged model and the files of the run's train folder.

    ``calibration`` holds what the objective chose on validation and ships with the model
    (e.g. the anomaly threshold).
    """

    run_id: str
    experiment_id: str
    model_uri: str
    model_path: str
    trained_path: str
    params: dict[str, Any]
    params_digest: str
    train_seconds: float
    calibration: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation(StepResult):
    """Evaluate: the served model's test metrics, the champion's on the same rows.

    ``metrics`` are the candidate's (its exported model on the raw test inputs);
    ``champion`` holds the current champion's ``version``, ``run_id``, ``metrics`` on the
    same rows and ``stored_metrics`` (its figures on its own test split: history only),
    or ``error`` when it could not answer these rows; None when there is no champion.
    ``data`` names the rows (snapshot checksum, split, row count); ``parity`` is the
    served-vs-trained check; ``input_checks`` (tabular models) counts test values outside
    the serving schema per field (unseen categories, numbers outside the training range).
    """

    run_id: str
    metrics: dict[str, float]
    report: str
    data: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    champion: dict[str, Any] | None = None
    input_checks: dict[str, Any] | None = None


@dataclass(frozen=True)
class Verdict(StepResult):
    """Gate: the outcome, with every check spelled out.

    ``checks`` always hold the gate's own outcome; ``forced`` marks a verdict an operator
    overrode (``passed`` is then True whatever the checks say). ``champion`` is the
    champion's figure on the candidate's test rows (what was compared);
    ``champion_stored`` its figure on its own test split (history, never compared);
    ``data`` names the rows both were scored on.
    """

    passed: bool
    reason: str
    metric: str
    candidate: float
    champion: float | None
    champion_version: str | None
    checks: list[dict[str, Any]]
    forced: bool = False
    force_reason: str = ""
    champion_stored: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for MLflow and reports (same as :meth:`to_xcom`)."""
        return self.to_xcom()


@dataclass(frozen=True)
class Deployment(StepResult):
    """Deploy: the registry version and the aliases it moved.

    ``moved`` is False when the version was registered (or reused) but ``champion`` stayed
    where it was (the version is older than the champion); ``note`` says why.
    """

    model: str
    version: str
    alias: str
    previous: str | None
    created: bool
    forced: bool
    moved: bool = True
    note: str = ""
