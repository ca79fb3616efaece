"""Tuning sweeps: Ray Tune trials, Optuna multi-objective search, MLflow tracking. Needs the [tune] extra."""
