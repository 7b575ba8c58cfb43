"""Airflow DAG: MNIST-format image classification pipeline (spec in models/mnist.py)."""

from tasks.orchestration import build_dag

dag = build_dag("mnist")
