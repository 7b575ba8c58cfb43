"""Pipeline steps: pure functions of paths and typed inputs, one module per step.

``ingest`` (validate + snapshot raw data) → ``preprocess`` (Beam: full-pass statistics,
split, shuffle, sharded TFRecords; ``beam_runner`` picks the runner) → ``train`` (Keras
fit, export, MLflow) → ``evaluate`` (the objective's test metrics and plots) → ``gate``
(thresholds and champion comparison; ``gate_report`` renders it) → ``deploy`` (registry
version and aliases). Each writes under its run's :class:`~tasks.core.run.RunLayout`,
atomically, and returns a small typed result; orchestration (Airflow) only wraps them.
"""
