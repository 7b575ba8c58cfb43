"""Airflow DAG: the book's character RNN (spec in models/char_rnn.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("char_rnn"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("char_rnn")
