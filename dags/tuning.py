"""Airflow DAGs: ``<use case>_tune`` for every use case whose run params declare a search space.

Hyper-parameter tuning with Optuna, trials as dynamically mapped tasks (see
tasks/orchestration/tuning.py); ``mlp tune <use case>`` runs one.
"""

from tasks.orchestration import build_tuning_dags

globals().update(build_tuning_dags())
