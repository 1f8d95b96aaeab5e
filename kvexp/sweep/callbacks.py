"""Before a run or multirun: refuse an unwritable output folder or no points at all. At its
end: summary on the terminal, the report, the exit code."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def finish(sweep_dir: Path, render: bool) -> int:
    """Print the summary, render the report; 1 if any point failed, else 0."""
    from kvexp.results import load

    try:
        res = load(sweep_dir)
    except FileNotFoundError as exc:
        print(f"[kvexp] {exc}", file=sys.stderr)
        return 1
    from kvexp.report.render import print_summary, render_report, report_catalog

    cat = None
    try:
        cat = report_catalog(res)  # computed once, for the terminal and the report
        print_summary(cat)
    except Exception:  # noqa: BLE001 - a broken summary must not hide the results
        traceback.print_exc()
    rendered = True
    if render:
        try:
            out = render_report(sweep_dir, res, cat)
            print(f"[kvexp] report: {out}")
        except Exception as exc:  # noqa: BLE001 - the results stay; the exit code says so
            rendered = False
            traceback.print_exc()
            print(f"[kvexp] the report could not be rendered ({type(exc).__name__}: {exc}); "
                  f"the measured results are kept in {sweep_dir}; render it again with "
                  f"`python -m kvexp report {sweep_dir}`", file=sys.stderr)
    failed = res.summary[res.summary["status"] != "ok"] if "status" in res.summary else []
    print(f"[kvexp] results: {sweep_dir}  ({len(res.summary)} points, {len(failed)} failed)")
    for _, row in getattr(failed, "iterrows", lambda: [])():
        print(f"[kvexp]   point {row['point']} ({row.get('label', '')}) failed: "
              f"{str(row.get('error', ''))[:500]}", file=sys.stderr)
    return 1 if len(failed) or not rendered else 0


def _refuse(message: str) -> None:
    print(f"[kvexp] refused, nothing was started: {message}", file=sys.stderr)
    raise SystemExit(2)  # Hydra turns Exceptions from callbacks into warnings


class ReportCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from kvexp.sweep.folder_lock import FolderUnwritable, check_writable

        try:
            check_writable(Path(config.hydra.run.dir), "hydra.run.dir")
        except FolderUnwritable as exc:
            _refuse(str(exc))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from kvexp.sweep.folder_lock import FolderUnwritable, check_writable

        if int(config.get("repeats", 1)) < 1:  # range(0, repeats) would make no point
            _refuse(f"repeats must be >= 1, got {config.repeats}")
        try:
            check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")
        except FolderUnwritable as exc:
            _refuse(str(exc))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        # A single run is a sweep of one point: its folder's parent is the sweep folder.
        code = finish(Path(config.hydra.run.dir).parent, bool(config.get("report", True)))
        if code:
            raise SystemExit(code)  # Hydra turns Exceptions from callbacks into warnings

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from kvexp.sweep.server_pool import POOL

        POOL.close()  # the sweep's shared servers, before the report
        code = finish(Path(config.hydra.sweep.dir), bool(config.get("report", True)))
        if code:
            raise SystemExit(code)
