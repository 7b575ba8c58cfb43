"""Airflow DAG: birth weight on real MASS/birthwt data (spec in models/birthwt.py)."""

from models import get
from tasks.dag_factory import build_dag

dag = build_dag(get("birthwt"))
