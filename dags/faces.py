"""Airflow DAG: face recognition pipeline (spec in models/faces.py)."""

from tasks.orchestration import build_dag

dag = build_dag("faces")
