"""Airflow DAG: birth weight on real MASS/birthwt data (spec in models/birthwt.py)."""

from tasks.orchestration import build_dag

dag = build_dag("birthwt")
