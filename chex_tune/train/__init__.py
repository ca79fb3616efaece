"""Training: timm models, data, the CHEX training loop and checkpoints (no ray/optuna/mlflow)."""
