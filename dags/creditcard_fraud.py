"""Airflow DAG: credit-card fraud pipeline (spec in models/creditcard_fraud.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("creditcard_fraud"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("creditcard_fraud")
