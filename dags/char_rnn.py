"""Airflow DAG: the book's character RNN (spec in models/char_rnn.py)."""

from tasks.orchestration import build_dag

dag = build_dag("char_rnn")
