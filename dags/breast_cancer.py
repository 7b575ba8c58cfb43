"""Airflow DAG: breast-cancer logistic regression (spec in models/breast_cancer.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("breast_cancer"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("breast_cancer")
