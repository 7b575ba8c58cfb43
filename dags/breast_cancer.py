"""Airflow DAG: breast-cancer logistic regression (spec in models/breast_cancer.py)."""

from models import get
from tasks.dag_factory import build_dag

dag = build_dag(get("breast_cancer"))
