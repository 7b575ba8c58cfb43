"""The use-case contract: what a module in ``models/`` declares, and how the platform finds it.

- :mod:`tasks.spec.usecase`: the typed spec (``UseCaseSpec`` and its parts: data source
  protocol, preprocessing features, split rule, model, gate, run params); cheap to import
  (no TensorFlow, Beam or I/O) because DAG files build specs at parse time;
- :mod:`tasks.spec.monitoring`: drift and skew thresholds (``UseCaseSpec.drift``);
- :mod:`tasks.spec.search`: search spaces of hyper-parameter tuning, declared on the run
  params (``RunParam(search=...)``), and what a trial is judged on (``TuneSpec``);
- :mod:`tasks.spec.catalog`: discovery of use cases by module name.

A use case imports from here, from :mod:`tasks.data` (sources) and from
:mod:`tasks.features`; nothing else of the platform.
"""

from tasks.spec.monitoring import DriftSpec, Threshold
from tasks.spec.search import Choice, IntRange, LogUniform, TuneSpec, Uniform
from tasks.spec.usecase import (
    CLASSES_STATS_KEY,
    RATIO,
    AblationSpec,
    DataSource,
    Feature,
    GateSpec,
    ModelSpec,
    ParentModel,
    PreprocessSpec,
    RunParam,
    SmokeTest,
    SpecError,
    SplitSpec,
    UseCaseSpec,
    data_class_names,
)

__all__ = [
    "CLASSES_STATS_KEY",
    "RATIO",
    "Choice",
    "IntRange",
    "LogUniform",
    "TuneSpec",
    "Uniform",
    "AblationSpec",
    "DataSource",
    "DriftSpec",
    "Feature",
    "GateSpec",
    "ModelSpec",
    "ParentModel",
    "PreprocessSpec",
    "RunParam",
    "SmokeTest",
    "SpecError",
    "SplitSpec",
    "Threshold",
    "UseCaseSpec",
    "data_class_names",
]
