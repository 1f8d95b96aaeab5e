"""`python -m kvexp [overrides]`: the sweep process (kvexp/sweep/app.py)."""

from kvexp.sweep.app import entry, main

__all__ = ["entry", "main"]

if __name__ == "__main__":
    entry()
