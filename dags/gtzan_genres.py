"""Airflow DAG: GTZAN music genres, MFCC statistics + DNN (spec in models/gtzan_genres.py)."""

from tasks.orchestration import build_dag

dag = build_dag("gtzan_genres")
