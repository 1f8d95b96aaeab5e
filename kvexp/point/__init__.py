"""One point's own process (`python -m kvexp.point DIR`): servers or attached ones,
samplers, workload, results (runner.py)."""
