"""`python -m kvexp.report <sweep_or_point_dir>`: render `<dir>/report/` and print a summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvexp.report.render import render_report, report_catalog
from kvexp.report.tables import print_summary
from kvexp.results import load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvexp.report", description=__doc__)
    parser.add_argument("root", type=Path, help="a sweep folder or one point folder")
    parser.add_argument("--quiet", action="store_true", help="do not print the summary table")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"not a folder: {args.root}")
    try:
        results = load(args.root)
    except FileNotFoundError:
        results = None
    cat = report_catalog(results) if results is not None else None
    out = render_report(args.root, results, cat)
    if not args.quiet and cat is not None:
        print_summary(cat)
    print(f"report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
