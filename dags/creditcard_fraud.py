"""Airflow DAG: credit-card fraud pipeline (spec in models/creditcard_fraud.py)."""

from tasks.orchestration import build_dag

dag = build_dag("creditcard_fraud")
