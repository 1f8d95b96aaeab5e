"""kvexp's sweepers as a Hydra plugin (Hydra loads sweepers only from `hydra_plugins`)."""

from kvexp.capacity.sweeper import CapacitySweeper as _Capacity
from kvexp.sweep.sweeper import ValidatingSweeper


class KvexpSweeper(ValidatingSweeper):
    """Hydra's basic sweep, validated whole before it starts (kvexp/sweep/sweeper.py)."""


class CapacitySweeper(_Capacity):
    """The capacity search (experiment=capacity; kvexp/capacity/sweeper.py)."""


__all__ = ["CapacitySweeper", "KvexpSweeper"]
