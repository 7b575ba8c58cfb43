"""Airflow DAG: handwritten digits for the draw-a-digit page (spec in models/digits.py)."""

from tasks.orchestration import build_dag

dag = build_dag("digits")
