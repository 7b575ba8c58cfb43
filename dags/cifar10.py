"""Airflow DAG: CIFAR-10 CNN with training-time augmentation (spec in models/cifar10.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("cifar10"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("cifar10")
