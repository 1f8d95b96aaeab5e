"""kvexp's sweeper as a Hydra plugin (Hydra loads sweepers only from `hydra_plugins`)."""

from kvexp.sweeper import ValidatingSweeper


class KvexpSweeper(ValidatingSweeper):
    """Hydra's basic sweep, validated whole before it starts (kvexp/sweeper.py)."""


__all__ = ["KvexpSweeper"]
