"""Airflow DAG: baby-weight regression (spec in models/babyweight.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("babyweight"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("babyweight")
