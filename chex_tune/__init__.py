"""chex_tune: CHEX channel prune-and-regrow for timm CNNs, and its multi-objective tuning."""

from chex_tune import _torchvision_fix  # noqa: F401  (first: makes `import timm` work everywhere)

__version__ = "0.1.0"
