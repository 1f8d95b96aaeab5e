"""The driver's progress bar on stderr (requests done, failed)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class Bar:
    """A rich progress bar (total, done, failed); a no-op when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.failed = 0
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("requests"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[failed]} failed"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                refresh_per_second=4,
            )
            self._task = self._progress.add_task("requests", total=total, failed=0)

    def __enter__(self) -> Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def done(self, ok: bool) -> None:
        """One request finished."""
        self.failed += not ok
        if self._progress is not None:
            self._progress.update(self._task, advance=1, failed=self.failed)
