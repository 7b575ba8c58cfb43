"""Airflow DAG: word-level LSTM language model (spec in models/ptb_lm.py)."""

from tasks.orchestration import build_dag

dag = build_dag("ptb_lm")
