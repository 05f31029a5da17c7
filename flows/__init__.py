"""Prefect flows, MLflow tracking, registry and the pyfunc model (imports stay lazy)."""
