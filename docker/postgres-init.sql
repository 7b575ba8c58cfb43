-- The MLflow tracking server's store; the image's POSTGRES_DB creates Airflow's.
CREATE DATABASE mlflow;
-- Optuna studies of `mlp tune` (RDB storage).
CREATE DATABASE optuna;
