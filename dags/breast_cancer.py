"""Airflow DAG: breast-cancer logistic regression (spec in models/breast_cancer.py)."""

from tasks.orchestration import build_dag

dag = build_dag("breast_cancer")
