"""Platform steps, DAG factory, serving and CLI."""
