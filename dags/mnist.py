"""Airflow DAG: MNIST-format image classification pipeline (spec in models/mnist.py)."""

from models import get
from tasks.dag_factory import build_dag

dag = build_dag(get("mnist"))
