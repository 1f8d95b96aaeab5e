"""kvexp's sweeper as a Hydra plugin (Hydra loads sweepers only from `hydra_plugins`)."""

from kvexp.sweep.sweeper import ValidatingSweeper


class KvexpSweeper(ValidatingSweeper):
    """Hydra's basic sweep, validated whole before it starts (kvexp/sweep/sweeper.py)."""


__all__ = ["KvexpSweeper"]
