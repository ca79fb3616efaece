"""When channel exploration happens during training, and how much is regrown at each step.

CHEX alternates prune-and-regrow steps every ``period`` steps (or epochs) during the first
``explore_until`` fraction of training, then freezes the architecture so the remaining training
fine-tunes a fixed sub-network. The regrowth factor decays with a cosine from ``regrow_ratio`` to 0:
early exploration is bold, and the last exploration step is a pure prune to the target width.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

__all__ = ["ExploreSchedule"]


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class ExploreSchedule:
    """Exploration timetable; ``period`` and ``total`` share one unit (optimizer steps or epochs)."""

    period: int
    total: int
    explore_until: float  # no default here: ChexConfig holds the one default

    def __post_init__(self) -> None:
        if not _is_int(self.period) or self.period <= 0:
            raise ValueError(
                "period must be a positive integer (steps or epochs between prune-regrow steps), "
                f"got {self.period!r}"
            )
        if not _is_int(self.total) or self.total <= 0:
            raise ValueError(
                f"total must be a positive integer (training length in steps or epochs), got {self.total!r}"
            )
        if isinstance(self.explore_until, bool) or not 0 < self.explore_until <= 1:
            raise ValueError(
                "explore_until must be in (0, 1] (fraction of training spent exploring), "
                f"got {self.explore_until!r}"
            )

    @property
    def stop(self) -> int:
        """The last position at which exploration may happen; the architecture is frozen from here on."""
        return max(0, int(round(self.explore_until * self.total)))

    def is_explore_step(self, t: int) -> bool:
        """Whether a prune-regrow step happens at ``t``.

        Every multiple of ``period`` up to ``stop``, plus ``stop`` itself even when it is not a multiple:
        the regrow factor is 0 exactly there, so that last step prunes to the target width and the frozen
        network is the one that was explored. Step 0, the initial pruning, is the caller's business.
        """
        return 0 < t <= self.stop and (t % self.period == 0 or t == self.stop)

    def regrow_factor(self, t: int, regrow_ratio: float) -> float:
        """Fraction of channels regrown at ``t``: ``regrow_ratio * (1 + cos(pi t / stop)) / 2``, then 0.

        The cosine decay lets early steps explore widely and later ones settle; it is ``regrow_ratio`` at
        ``t = 0`` and exactly 0.0 at ``t = stop``.
        """
        if t < 0:
            raise ValueError(f"t must be >= 0 (steps or epochs since the start of training), got {t!r}")
        if not 0 <= regrow_ratio <= 1:
            raise ValueError(f"regrow_ratio must be in [0, 1] (fraction of channels), got {regrow_ratio!r}")
        if t >= self.stop:
            return 0.0
        return regrow_ratio * 0.5 * (1.0 + math.cos(math.pi * t / self.stop))

    def explore_steps(self) -> list[int]:
        """All ``t`` in ``1..stop`` with :meth:`is_explore_step`, in order (for tests and logs)."""
        steps = list(range(self.period, self.stop + 1, self.period))
        if self.stop > 0 and self.stop % self.period:
            steps.append(self.stop)
        return steps

    def is_frozen(self, t: int) -> bool:
        """Whether the architecture is fixed from ``t`` on (``t >= stop``); the final prune at ``stop``
        itself still happens, see :meth:`is_explore_step`."""
        return t >= self.stop
