"""Airflow DAG: taxi-fare linear regression (spec in models/taxi_fare.py)."""

from tasks.orchestration import build_dag

dag = build_dag("taxi_fare")
