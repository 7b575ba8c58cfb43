"""Airflow DAG: baby-weight regression (spec in models/babyweight.py)."""

from models import get
from tasks.dag_factory import build_dag

dag = build_dag(get("babyweight"))
