"""Airflow DAG: birth weight on real MASS/birthwt data (spec in models/birthwt.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("birthwt"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("birthwt")
