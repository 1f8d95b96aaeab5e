"""Workloads: seeded arrival schedules and the streaming driver that sends them."""

from kvexp.workloads.driver import drive, request_body, run_workload
from kvexp.workloads.schedules import KINDS, build_schedule, chains_waves, check_workload

__all__ = [
    "KINDS",
    "build_schedule",
    "chains_waves",
    "check_workload",
    "drive",
    "request_body",
    "run_workload",
]
