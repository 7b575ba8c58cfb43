"""Orchestration: the Airflow side of the platform, and nothing else.

- :mod:`tasks.orchestration.dag_factory`: one factory building every use case's DAG
  (ingest → preprocess → train → evaluate → gate → deploy) from its spec; tasks are thin
  wrappers of :mod:`tasks.steps` exchanging typed results through XCom;
- :mod:`tasks.orchestration.assets`: schedules (cron OR new-data asset events).
"""

from tasks.orchestration.dag_factory import build_dag

__all__ = ["build_dag"]
