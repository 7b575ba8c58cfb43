"""Airflow DAG: baby-weight regression (spec in models/babyweight.py)."""

from tasks.orchestration import build_dag

dag = build_dag("babyweight")
