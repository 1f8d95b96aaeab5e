"""Signals both processes handle alike."""

from __future__ import annotations

import signal


def ignore_interrupts() -> None:
    """Ignore Ctrl-C and SIGTERM from now on: clean-up under way must not be cut short."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
