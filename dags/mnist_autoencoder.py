"""Airflow DAG: MNIST-format image autoencoder (spec in models/mnist_autoencoder.py)."""

from tasks.orchestration import build_dag

dag = build_dag("mnist_autoencoder")
