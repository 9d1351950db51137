"""How services start: local Prefect, MLflow and Ray, and cluster configs."""
