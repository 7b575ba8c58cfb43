"""Airflow DAG: credit-card fraud pipeline (spec in models/creditcard_fraud.py)."""

from models import get
from tasks.dag_factory import build_dag

dag = build_dag(get("creditcard_fraud"))
