"""Airflow DAG: MNIST-format image classification pipeline (spec in models/mnist.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("mnist"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("mnist")
