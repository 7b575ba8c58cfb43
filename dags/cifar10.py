"""Airflow DAG: CIFAR-10 CNN with training-time augmentation (spec in models/cifar10.py)."""

from tasks.orchestration import build_dag

dag = build_dag("cifar10")
