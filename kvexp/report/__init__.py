"""The report stage: a sweep's Parquet results as figures, tables and one HTML page.

`render_report(root)` writes `<root>/report/`; `print_summary(results)` prints a short table
to the terminal. Run it by hand with `python -m kvexp.report <sweep_or_point_dir>`.
"""

from kvexp.report.render import render_report
from kvexp.report.tables import print_summary

__all__ = ["print_summary", "render_report"]
