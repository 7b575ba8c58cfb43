"""Orchestration: the Airflow side of the platform, and nothing else.

- :mod:`tasks.orchestration.dag_factory`: one factory building every use case's DAG
  (ingest → preprocess → train → evaluate → gate → deploy) from its spec; tasks are thin
  wrappers of :mod:`tasks.steps` exchanging typed results through XCom;
- :mod:`tasks.orchestration.assets`: schedules (cron OR new-data asset events);
- :mod:`tasks.orchestration.tuning`: the tuning DAG ``<use case>_tune`` of each use case
  with a search space (Optuna trials as dynamically mapped tasks, then the same release).
"""

from tasks.orchestration.dag_factory import build_dag, wanted
from tasks.orchestration.tuning import build_tuning_dag, build_tuning_dags

__all__ = ["build_dag", "build_tuning_dag", "build_tuning_dags", "wanted"]
