"""What a point leaves in its folder and how it is read back: Parquet tables (store.py, loader.py),
point.json (point_record.py), the journals a running point appends to (journal.py) and their
folding into the tables (fold.py), the rows they hold (records.py), a point's headline figures
(summary.py)."""

from kvexp.results.jsonfile import write_json
from kvexp.results.loader import Results, load, point_dirs
from kvexp.results.store import (
    MEMORY_SCHEMA,
    REQUESTS_SCHEMA,
    write_memory,
    write_requests,
    write_summary,
)

__all__ = ["MEMORY_SCHEMA", "REQUESTS_SCHEMA", "Results", "load", "point_dirs", "write_json",
           "write_memory", "write_requests", "write_summary"]
