"""Airflow DAG: word-level LSTM language model (spec in models/ptb_lm.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("ptb_lm"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("ptb_lm")
