"""Model registration in MLflow and the promotion gate (challenger → champion only when it wins)."""
