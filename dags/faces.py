"""Airflow DAG: face recognition pipeline (spec in models/faces.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("faces"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("faces")
