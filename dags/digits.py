"""Airflow DAG: handwritten digits for the draw-a-digit page (spec in models/digits.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("digits"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("digits")
