"""Airflow DAG: GTZAN music genres, MFCC statistics + DNN (spec in models/gtzan_genres.py)."""

from tasks.orchestration import build_dag, wanted

if wanted("gtzan_genres"):  # Airflow parsing for another DAG skips this one
    dag = build_dag("gtzan_genres")
