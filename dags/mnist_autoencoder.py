"""Airflow DAG: MNIST-format image autoencoder (spec in models/mnist_autoencoder.py)."""

from models import get
from tasks.dag_factory import build_dag

dag = build_dag(get("mnist_autoencoder"))
