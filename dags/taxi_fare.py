"""Airflow DAG: taxi-fare linear regression (spec in models/taxi_fare.py)."""

from models import get
from tasks.dag_factory import build_dag

dag = build_dag(get("taxi_fare"))
