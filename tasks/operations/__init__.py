"""Operations: what operators do to a running platform, from the CLI or scripts.

- :mod:`tasks.operations.airflow_api`: the Airflow REST API (official
  ``apache-airflow-client``) with JWT login;
- :mod:`tasks.operations.landing`: land new raw data and announce it (asset events);
- :mod:`tasks.operations.retrain`: trigger a run with typed params and follow it;
- :mod:`tasks.operations.local`: one DAG run on the embedded stack with a concise console
  and a log file; run summaries;
- :mod:`tasks.operations.examples`: ready-to-send predict requests of a run;
- :mod:`tasks.operations.challenger`: infra-validate a version, make it the challenger.
"""
