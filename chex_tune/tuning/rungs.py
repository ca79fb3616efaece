"""Where early stopping's rungs sit (``grace x eta^k`` epochs) and the rule's defaults, apart from the scheduler so
that the sweep's options (and the CLI built from them) can name them without importing Ray."""

from __future__ import annotations

# Chosen on the curve bank (benchmarks/early_stop.md): a CHEX trial's accuracy after one epoch does not rank
# like its final one (Kendall tau 0.06; 0.09 after two), and grace 2 kept the most hypervolume of the rules
# replayed, scored on validation and on test accuracy; eta 3 beat 2 and 4.
DEFAULT_GRACE = 2
DEFAULT_ETA = 3


def check_rule(grace, eta, *, prefix: str = "") -> None:
    """Refuse a grace period or reduction factor that cannot make rungs (``prefix``: "--" for CLI flags)."""
    if isinstance(grace, bool) or not isinstance(grace, int) or grace < 1:
        raise ValueError(f"{prefix}grace must be a positive number of epochs, got {grace!r}")
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise ValueError(f"{prefix}eta must be an integer >= 2 (keep the best 1/eta at each rung), got {eta!r}")
