"""Airflow DAG: detection on the cifar10 backbone (spec in models/object_detection.py)."""

from tasks.orchestration import build_dag

dag = build_dag("object_detection")
