"""Tracking a sweep in MLflow: the store (``store``), the one writer (``recorder``) fed by the Ray Tune and Optuna
callbacks (``ray_callback``, ``optuna_callback``), and reading runs back (``runs``)."""
