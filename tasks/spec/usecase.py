"""Typed use-case specification: what a module in ``models/`` declares.

A use case is data (a spec object), not code paths in the platform: the DAG factory and
every step read what they need from here. Specs are cheap to import (no TensorFlow, no
Beam, no I/O) because DAG files build them at parse time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tasks.spec.errors import SpecError
from tasks.spec.monitoring import DriftSpec


@dataclass(frozen=True)
class GateSpec:
    """Deployment gate: absolute bounds plus a comparison with the current champion.

    Attributes:
        metric: Metric name as logged by the evaluation step (e.g. ``test_accuracy``).
        min_value: Candidate must reach at least this value (if set).
        max_value: Candidate must stay at or below this value (if set).
        higher_is_better: Direction of the metric, used for the champion comparison.
        max_regression: Largest allowed absolute regression versus the champion
            (``0.0`` = must not be worse; ``None`` = no champion comparison).
        baseline: Another metric of the same evaluation, a reference model measured in
            the same run on the same split (e.g. ``baseline_kn_perplexity``), that the
            candidate must beat strictly in the metric's direction (if set).
        note: Where the value bars come from, shown beside them in the verdict (e.g.
            ``the books' bar for the dnn variant``).

    """

    metric: str
    min_value: float | None = None
    max_value: float | None = None
    higher_is_better: bool = True
    max_regression: float | None = 0.0
    baseline: str | None = None
    note: str = ""

    def bars(self) -> str:
        """The value thresholds in words, e.g. ``test_accuracy >= 0.88``."""
        out = []
        if self.min_value is not None:
            out.append(f"{self.metric} >= {self.min_value:g}")
        if self.max_value is not None:
            out.append(f"{self.metric} <= {self.max_value:g}")
        if self.baseline is not None:
            out.append(f"{self.metric} {'>' if self.higher_is_better else '<'} "
                       f"{self.baseline}")
        return ", ".join(out) + (f" ({self.note})" if self.note else "")

    def __post_init__(self) -> None:
        if self.min_value is None and self.max_value is None and self.baseline is None:
            raise SpecError(
                f"gate on {self.metric!r} has no value threshold: set min_value, max_value "
                "or baseline (a gate without thresholds would bless everything)"
            )
        if self.max_regression is not None and self.max_regression < 0:
            raise SpecError(f"gate max_regression must be >= 0, got {self.max_regression}")


@dataclass(frozen=True)
class RunParam:
    """A typed run-time knob, rendered by Airflow as a field of the trigger form."""

    default: Any
    type: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    enum: tuple[Any, ...] | None = None
    search: Any = None  # a tasks.spec.search distribution: tuning varies this param

    def schema(self) -> dict[str, Any]:
        """JSON-schema keywords for ``airflow.sdk.Param``."""
        out: dict[str, Any] = {"type": self.type, "description": self.description}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.enum is not None:
            out["enum"] = list(self.enum)
        return out


RATIO = "ratio"


@dataclass(frozen=True)
class SplitSpec:
    """How source partitions become train/validation/test.

    Two kinds of rule, per source partition (``partition_to_split``):

    - a fixed split name (``"train"``, ``"test"``): every row goes there, except that
      ``validation_size`` rows of ``validation_from`` are carved out for validation (the
      books' MNIST rule: 55,000/5,000 from train, the 10,000 test file as test);
    - ``"ratio"``: rows are dealt to splits by ``ratios``, per class of ``stratify_by`` when
      set, and ``class_ratios`` overrides the ratios for given classes (the books' fraud
      rule: normal 60/20/20, fraud 0/50/50, i.e. never a fraud row in training).

    Counts are exact (largest remainder per class), assignments seeded and deterministic.

    Attributes:
        validation_from: Source partition the validation split is carved from.
        validation_size: Number of rows moved from ``validation_from`` to validation.
        stratify_by: Column whose class proportions the split preserves (or None).
        partition_to_split: Where each source partition goes (a split name or ``"ratio"``).
        ratios: Split -> fraction for ``"ratio"`` partitions (must sum to 1).
        class_ratios: Class value -> ratios, overriding ``ratios`` for that class.
        seed: Seed of the split and of the global shuffle.
        shards: Number of TFRecord shards per output split.

    """

    validation_from: str = "train"
    validation_size: int = 0
    stratify_by: str | None = None
    partition_to_split: Mapping[str, str] = field(
        default_factory=lambda: {"train": "train", "test": "test"}
    )
    ratios: Mapping[str, float] | None = None
    class_ratios: Mapping[Any, Mapping[str, float]] = field(default_factory=dict)
    seed: int = 42
    shards: Mapping[str, int] = field(
        default_factory=lambda: {"train": 4, "validation": 1, "test": 1}
    )

    def __post_init__(self) -> None:
        for name, r in [("ratios", self.ratios), *((f"class {k}", v)
                                                   for k, v in self.class_ratios.items())]:
            if r is None:
                continue
            if set(r) - {"train", "validation", "test"}:
                raise SpecError(f"{name}: unknown split in {dict(r)}")
            if abs(sum(r.values()) - 1.0) > 1e-9 or min(r.values()) < 0:
                raise SpecError(f"{name}: ratios must be >= 0 and sum to 1, got {dict(r)}")
        if RATIO in self.partition_to_split.values() and self.ratios is None:
            raise SpecError("a partition uses the ratio rule but no ratios are given")
        if self.class_ratios and not self.stratify_by:
            raise SpecError("class_ratios need stratify_by (the class column)")


@dataclass(frozen=True)
class Feature:
    """One input column and the transform preprocessing applies to it.

    Attributes:
        name: Column name in the source.
        transform: ``identity``, ``minmax``, ``zscore``, ``clip``, ``vocab``, ``onehot``,
            ``uint8`` (raw image bytes; see :mod:`tasks.features.transforms`) or
            ``detection`` (an encoded image with its boxes, written as an Object Detection
            API record: :mod:`tasks.data.detection`).
        log1p: Apply ``log1p`` before the analyzer and the transform.
        clip_quantiles: Training-split quantiles ``clip`` clips to.
        top_k: ``vocab``/``onehot``: keep the ``top_k`` most frequent training values
            (ties by value); the others share the out-of-vocabulary bucket. None keeps
            every value seen in training.

    Categorical features (``vocab``, ``onehot``) take text or integer columns: Beam's
    full-pass vocabulary (values by count, then value; one out-of-vocabulary bucket after
    them, as tf.Transform's) becomes a Keras ``StringLookup``/``IntegerLookup`` inside the
    served model (:mod:`tasks.features.tabular_layers`).

    """

    name: str
    transform: str = "identity"
    log1p: bool = False
    clip_quantiles: tuple[float, float] = (0.001, 0.999)
    top_k: int | None = None

    def __post_init__(self) -> None:
        known = {"identity", "minmax", "zscore", "clip", "vocab", "onehot", "uint8",
                 "tokens", "detection"}
        if self.transform not in known:
            raise SpecError(f"feature {self.name!r}: unknown transform {self.transform!r}; "
                            f"choose one of {sorted(known)}")
        if self.top_k is not None and self.top_k < 1:
            raise SpecError(f"feature {self.name!r}: top_k must be >= 1, got {self.top_k}")

    @property
    def is_raw(self) -> bool:
        """Written as raw bytes under its own name (images), not packed into ``features``."""
        return self.transform == "uint8"


@dataclass(frozen=True)
class PreprocessSpec:
    """What preprocessing writes: transformed features, the label and the limits.

    Attributes:
        features: Model inputs in order. ``uint8`` features are written as raw bytes under
            their own name; all others are transformed and packed, in order, into one
            float32 vector named ``features``.
        label: Target column (or None for unsupervised use cases).
        label_dtype: ``int64`` (classes) or ``float32`` (regression targets).
        max_bad_fraction: Largest tolerated fraction of quarantined rows (default 0); the
            run param ``max_bad_fraction`` overrides it per run (ingest and
            preprocessing both apply it).
        batch_size: Rows per Beam element.

    """

    features: tuple[Feature, ...]
    label: str | None = "label"
    label_dtype: str = "int64"
    max_bad_fraction: float = 0.0
    batch_size: int = 4096

    @property
    def packed(self) -> tuple[Feature, ...]:
        """Features transformed and packed, in order, into the float32 ``features`` vector."""
        return tuple(f for f in self.features
                     if not f.is_raw and f.transform not in ("tokens", "detection"))

    @property
    def text(self) -> tuple[Feature, ...]:
        """Text features, written as token-id windows (a ``TextFeature``)."""
        return tuple(f for f in self.features if f.transform == "tokens")

    @property
    def detection(self) -> tuple[Feature, ...]:
        """Box-annotated images, written as Object Detection API records."""
        return tuple(f for f in self.features if f.transform == "detection")

    @property
    def raw(self) -> tuple[Feature, ...]:
        """Features kept as raw bytes under their own names (images)."""
        return tuple(f for f in self.features if f.is_raw)


class DataSource(Protocol):
    """Where raw data comes from and how it is validated and read in batches."""

    default_location: str

    def files(self, location: str) -> dict[str, str]:
        """Resolve the named raw files under ``location``; raise naming what is missing."""
        ...

    def validate(self, files: Mapping[str, str]) -> dict[str, Any]:
        """Check the raw files; raise a clear error naming file and field; return facts."""
        ...

    def check(self, files: Mapping[str, str]) -> dict[str, Any]:
        """Cheap structural check (headers only, seconds); raise naming file and field."""
        ...

    def partitions(self) -> dict[str, dict[str, str]]:
        """Source partitions (``train``, ``test`` ...): field -> key into :meth:`files`."""
        ...

    def read_batches(
        self, files: Mapping[str, str], partition: str, batch_size: int
    ) -> Any:
        """Yield column batches in file order.

        Each batch is a dict of numpy arrays holding only valid rows, with ``row`` (row ids
        in the partition) and ``_bad`` (records of rejected rows: file, row, field, value,
        reason) for the quarantine file.
        """
        ...


    def schema(self) -> dict[str, dict[str, Any]]:
        """Column name -> {dtype, shape} of the batches :meth:`read_batches` yields."""
        ...

    # Optional: ``class_list(files) -> tasks.data.classes.ClassList``, the class names
    # read from the data (a label map, annotations, folders); without it, integer
    # labels are named by their values. Preprocessing records them in stats.json.


@dataclass(frozen=True)
class AblationSpec:
    """Arms trained beside the model in the same run, to show what one choice is worth.

    Each arm is the use case's model built with some run params overridden, trained on the
    same data with the same seed, epochs and batch size (the same budget), tracked as a
    child MLflow run of the model's run. The training step then scores every arm,
    including the model itself, on validation and test with the compiled metrics, and
    logs ``ablation_<arm>_<split>_<metric>`` metrics, ``evaluation/ablation.json`` and the
    arms' learning curves on the model's run. Only the model (the ``baseline`` arm) is
    registered. A run param ``ablation`` (boolean), when the use case has one, switches
    the other arms off.

    Attributes:
        baseline: Name of the model's own arm (its params unchanged), e.g. ``augmentation``.
        arms: Arm name -> run-param overrides, e.g. ``{"no_augmentation": {"augment": False}}``.

    """

    baseline: str
    arms: Mapping[str, Mapping[str, Any]]

    def __post_init__(self) -> None:
        if not self.arms:
            raise SpecError("an ablation needs at least one arm")
        for name in (self.baseline, *self.arms):
            if not name.isidentifier():
                raise SpecError(f"ablation arm name {name!r} must be an identifier")
        if self.baseline in self.arms:
            raise SpecError(f"ablation arm {self.baseline!r} is also the baseline")


@dataclass(frozen=True)
class ParentModel:
    """A registered model another use case's model is built on (transfer learning).

    The training step resolves ``name@alias`` in the model registry when the run starts,
    loads that version and passes it to the builder as ``build(params, stats, parent)``;
    the version is recorded on the training run and on the registered version (tags
    ``parent_model``, ``parent_version``, ``parent_alias``, ``parent_run_id``). The
    builder copies what it takes (weights), so the registered model never refers to the
    parent again: moving or deleting the parent's alias later changes nothing.

    Attributes:
        name: Registered model name (a use case), e.g. ``cifar10``.
        alias: Alias resolved at training time.
        used: Optional ``used(params) -> bool``; when it says False (e.g. a from-scratch
            run) no parent is resolved and the builder gets None.

    """

    name: str
    alias: str = "champion"
    used: Callable[[Mapping[str, Any]], bool] | None = None

    def wanted(self, params: Mapping[str, Any]) -> bool:
        """Whether a run with these params is built on the parent."""
        return self.used is None or bool(self.used(params))


@dataclass(frozen=True)
class ModelSpec:
    """Model side of a use case.

    Attributes:
        build: ``build(params, stats) -> keras.Model`` (compiled) on the training inputs
            (``stats`` is the preprocessing statistics, per split); imports Keras lazily.
        input_key: Feature fed to the model (``features`` for packed tabular inputs).
        label_key: Target feature (None for unsupervised models).
        objective: The model kind, one object of :mod:`tasks.objectives` each:
            ``classification`` (softmax over classes), ``binary`` (one sigmoid),
            ``regression``, ``autoencoder`` (reconstructs its input) or ``anomaly``
            (autoencoder whose reconstruction error scores rows against a threshold
            chosen on validation; the label says which rows are anomalies).
        class_names: Human-readable class labels (classification), fixed by the spec.
            Empty (the default): the classes come from the run's data (a label map, the
            annotations' or folders' names, the label values), recorded by preprocessing
            in ``stats["classes"]``; :meth:`classes` gives the run's list either way.
        target: Optional ``target(x, y, stats)`` in TensorFlow ops giving the training
            target (default: the objective's: the label, or the input for autoencoders).
        extra_metrics: Optional ``extra_metrics(serving_model, stats) -> {name: value}``
            logged with the evaluation (e.g. the fitted slope of a linear model).
        extra_metric_names: The names ``extra_metrics`` returns, declared so that a gate
            on one of them is checked before any run (``mlp validate``).
        default_epochs: Optional ``default_epochs(params) -> int`` used when the run's
            ``epochs`` param is 0 (e.g. per model variant).
        serving_input: Optional front end of the served model for raw media: an object
            with ``build() -> (keras input, tensor)`` and ``example() -> numpy batch of raw
            inputs``. For packed features the tensor holds the source's feature columns
            (e.g. :class:`tasks.features.audio.WavInput`: WAV bytes -> MFCC statistics)
            and the transform layer follows; otherwise it is what the trained model takes
            (e.g. ``models.faces.FaceCropInput``: an encoded face crop -> 96x96 pixels).
            Optionally ``encode(training inputs) -> [bytes]`` (what a client sends for
            test rows: the run's ``request.json``), ``input_name``, and
            ``outputs(trained outputs, class_names)`` (the served outputs, e.g.
            probabilities and the class name).
        extra_plots: Optional ``extra_plots(raw_files, out_dir) -> [png paths]`` drawn
            from the run's raw snapshot by the evaluation step and logged with the run
            (e.g. an MFCC picture of one clip per class).
        ablation: Optional arms trained with the model in the same run
            (:class:`AblationSpec`).
        book_figures: The books' figure per evaluation metric (e.g. ``test_accuracy``),
            printed beside the reached value at the end of ``mlp run``.
        parent: Optional registered model this one is built on (:class:`ParentModel`);
            then ``build`` takes a third argument, the loaded parent (or None).
        strict_inputs: Tabular models: the server refuses (400) an instance with a value
            outside the declared or training range, an unseen category or a missing
            field, instead of answering it with warnings (``mlp serve --strict-inputs``
            makes every model strict).

    """

    build: Callable[[Mapping[str, Any], Mapping[str, Any]], Any]
    input_key: str
    label_key: str | None
    objective: str = "classification"
    class_names: tuple[str, ...] = ()
    target: Callable[[Any, Any, Mapping[str, Any]], Any] | None = None
    extra_metrics: Callable[[Any, Mapping[str, Any]], dict[str, float]] | None = None
    extra_metric_names: tuple[str, ...] = ()
    default_epochs: Callable[[Mapping[str, Any]], int] | None = None
    serving_input: Any = None
    extra_plots: Callable[[Mapping[str, str], Any], list[Any]] | None = None
    ablation: AblationSpec | None = None
    book_figures: Mapping[str, float] = field(default_factory=dict)
    parent: ParentModel | None = None
    strict_inputs: bool = False

    def classes(self, stats: Mapping[str, Any] | None) -> tuple[str, ...]:
        """The run's class names: the spec's when it fixes them, else the data's.

        Args:
            stats: The run's preprocessing statistics (``stats.json``), or None.

        """
        return tuple(self.class_names) or data_class_names(stats)


# Key of stats.json under which preprocessing records the run's classes
# ({"names": [...], "origin": "..."}; see tasks.data.classes).
CLASSES_STATS_KEY = "classes"


def data_class_names(stats: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The class names preprocessing read from the run's data (empty if none).

    A model builder whose output size follows the data (``len(data_class_names(stats))``)
    adapts to new classes without an edit.
    """
    return tuple(((stats or {}).get(CLASSES_STATS_KEY) or {}).get("names") or ())


@dataclass(frozen=True)
class SmokeTest:
    """The use case's tiny end-to-end configuration (``tests/e2e/test_use_cases.py``).

    The test discovers use cases from the catalog and runs each one's DAG with this
    source and these params (gate thresholds relaxed: tiny data cannot reach the real
    bars), registers, serves and queries it. A new use case is covered by declaring this;
    no test is edited. Keep it tiny: the whole test shares a budget of a few minutes.

    Attributes:
        source: Source location for the run (``bundled:``/``synthetic:`` rows, or a
            directory); None means a small real sample in the source's own format that
            the test writes (IDX image sources: scikit-learn's digits as MNIST files).
        params: Run params (few epochs, small batches).
        covered_by: A dedicated end-to-end test (path from the repository root) that runs
            this use case instead, with more assertions; the generic test then skips it
            (and checks that the file exists), to stay within the test budget.

    """

    source: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    covered_by: str | None = None


@dataclass(frozen=True)
class UseCaseSpec:
    """Everything the platform needs to run one use case end to end.

    Attributes:
        schedule: Cron string (UTC) of periodic retraining, or None for data-triggered and
            manual runs only. New data (an event on the ``mlp://<name>/raw`` asset) also
            triggers a run either way.
        catchup: Replay the cron points missed since the DAG's start date. Off by default:
            a deployment or a restart then waits for the next cron point.
        smoke: The tiny end-to-end test's source and params (see :class:`SmokeTest`);
            None leaves the use case out of that test (reported by it).
        require_approval: Default of the ``require_approval`` run param: after a passing
            gate, wait for an operator to approve (Airflow UI or ``mlp approve``) before
            deploying.
        drift: Drift and skew thresholds and the monitoring schedule
            (:class:`~tasks.spec.monitoring.DriftSpec`; defaults fit most use cases).
        tune: What hyper-parameter tuning judges a trial on (:class:`~tasks.spec.search.
            TuneSpec`); the space itself is on the run params (``RunParam.search``).
        variant_gates: A gate per model variant (value of the run param
            ``variant_param``), e.g. the books' bar of each MNIST model; ``gate`` applies
            to variants without one. Every gate judges the same metric in the same
            direction (the champion comparison and the registry rely on it).
        variant_param: The run param choosing the variant.

    """

    name: str
    description: str
    source: DataSource
    preprocess: PreprocessSpec
    split: SplitSpec
    model: ModelSpec | None
    gate: GateSpec | None
    params: Mapping[str, RunParam]
    schedule: str | None = None
    tags: tuple[str, ...] = ()
    catchup: bool = False
    smoke: SmokeTest | None = None
    require_approval: bool = False
    drift: DriftSpec = field(default_factory=DriftSpec)
    tune: Any = None  # tasks.spec.search.TuneSpec; None: val_loss, minimised
    variant_gates: Mapping[str, GateSpec] = field(default_factory=dict)
    variant_param: str = "variant"

    def gate_for(self, params: Mapping[str, Any] | None = None) -> GateSpec | None:
        """The gate of a run with these params: its variant's, else the use case's."""
        if not self.variant_gates:
            return self.gate
        p = self.params.get(self.variant_param)
        variant = (params or {}).get(self.variant_param, p.default if p else None)
        return self.variant_gates.get(variant, self.gate)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise SpecError(f"use-case name {self.name!r} must be a Python identifier")
        if self.schedule is not None:
            from croniter import croniter  # small, and only for specs with a schedule

            if not croniter.is_valid(self.schedule):
                raise SpecError(f"use case {self.name!r}: schedule {self.schedule!r} is not a "
                                "valid cron string (e.g. '0 3 * * 1')")
        if (self.model is None) != (self.gate is None):
            raise SpecError(f"use case {self.name!r}: a model needs a gate and vice versa")
        ablation = self.model.ablation if self.model else None
        for arm, overrides in (ablation.arms.items() if ablation else ()):
            unknown = sorted(set(overrides) - set(self.params))
            if unknown:
                raise SpecError(f"use case {self.name!r}: ablation arm {arm!r} overrides "
                                f"{unknown}, which are not run params")
        for required in ("epochs", "batch_size") if self.model else ():
            if required not in self.params:
                raise SpecError(f"use case {self.name!r} lacks the run param {required!r}")
        self._check_variant_gates()
        if self.smoke is not None and set(self.smoke.params) - set(self.params):
            raise SpecError(f"use case {self.name!r}: smoke params "
                            f"{sorted(set(self.smoke.params) - set(self.params))} are not "
                            f"run params; known: {sorted(self.params)}")

    def _check_variant_gates(self) -> None:
        if not self.variant_gates:
            return
        where = f"use case {self.name!r}: variant_gates"
        p = self.params.get(self.variant_param)
        if p is None or p.enum is None:
            raise SpecError(f"{where} need a run param {self.variant_param!r} with an enum "
                            "of the variants")
        unknown = sorted(set(self.variant_gates) - set(p.enum))
        if unknown:
            raise SpecError(f"{where} name {unknown}, which are not variants; "
                            f"variants: {list(p.enum)}")
        for variant, g in self.variant_gates.items():
            if self.gate is None or (g.metric, g.higher_is_better) != (
                    self.gate.metric, self.gate.higher_is_better):
                raise SpecError(f"{where}: the {variant!r} gate must judge the use case's "
                                "gate metric in the same direction")
