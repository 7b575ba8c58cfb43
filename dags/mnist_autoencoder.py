"""Airflow DAG: MNIST-format image autoencoder (spec in models/mnist_autoencoder.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("mnist_autoencoder"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("mnist_autoencoder")
