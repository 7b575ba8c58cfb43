"""The garbage collector's thresholds for the platform's one-shot processes.

A run process (``mlp run``'s child, an Airflow task process) imports Airflow, TensorFlow,
Beam and MLflow: millions of long-lived objects. With CPython's default thresholds
(700, 10, 10) a young collection runs every 700 net allocations of container objects, so
imports trigger full collections over and over, and each walks every object loaded so
far. In ``mlp run breast_cancer`` 13 full collections took 2.8-3.0 s of a 24 s run
(measured with :data:`gc.callbacks`; all collections 3.4 s). With a first threshold of
10,000 young collections are 15x rarer, so full ones are: one full collection, 1.2-1.4 s
of collecting in all. Nothing is frozen or disabled: cyclic garbage is still collected,
only after more allocations (at most 10,000 objects' worth in the youngest generation).
"""

from __future__ import annotations

import gc

DEFAULT_THRESHOLDS = (700, 10, 10)  # CPython's
THRESHOLDS = (10_000, 10, 10)


def tune() -> None:
    """Raise the first threshold, unless the process already set its own."""
    if gc.get_threshold() == DEFAULT_THRESHOLDS:
        gc.set_threshold(*THRESHOLDS)
