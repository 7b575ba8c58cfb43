"""Airflow DAG: taxi-fare linear regression (spec in models/taxi_fare.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("taxi_fare"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("taxi_fare")
