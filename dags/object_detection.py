"""Airflow DAG: detection on the cifar10 backbone (spec in models/object_detection.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("object_detection"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("object_detection")
