"""point.json through its one module: old files load, writes are strict JSON, failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from kvexp.results import point_record
from kvexp.results.point_record import PointRecord, label_of, mark_failed

FIXTURE = Path(__file__).parent / "fixtures" / "h200_point.json"  # from docs/h200/run6-*


def test_an_old_h200_point_json_loads_and_writes_back_unchanged(tmp_path: Path) -> None:
    shutil.copy(FIXTURE, tmp_path / "point.json")
    rec = point_record.read(tmp_path)
    assert rec is not None and rec.status == "ok" and rec.engine == "vllm"
    assert rec.servers and rec.servers[0]["argv"]
    point_record.write(rec, tmp_path)
    assert json.loads((tmp_path / "point.json").read_text()) == json.loads(FIXTURE.read_text())


def test_unknown_keys_are_kept(tmp_path: Path) -> None:
    point_record.write({"point": "0", "status": "ok", "from_a_newer_kvexp": 3}, tmp_path)
    rec = point_record.read(tmp_path)
    assert rec is not None and rec.extra == {"from_a_newer_kvexp": 3}


def test_nan_is_written_as_null(tmp_path: Path) -> None:
    point_record.write(PointRecord(point="0", summary={"e2e_p50_s": float("nan")}), tmp_path)
    text = (tmp_path / "point.json").read_text()
    assert "NaN" not in text and json.loads(text)["summary"] == {"e2e_p50_s": None}


def test_mark_failed_writes_point_json_and_a_summary_row(tmp_path: Path) -> None:
    meta = {"point": "3", "label": "burst_size=2", "status": "running",
            "choices": {"point": "3", "label": "burst_size=2", "burst_size": 2}}
    mark_failed(tmp_path, meta, "server died")
    assert point_record.read(tmp_path).error == "server died"  # type: ignore[union-attr]
    row = pd.read_parquet(tmp_path / "summary.parquet").iloc[0]
    assert (row["status"], row["error"], row["burst_size"]) == ("failed", "server died", 2)


def test_label_leaves_out_keys_declared_not_in_the_label() -> None:
    assert label_of(["allocator=static", "repeat=1", "reuse_servers=false"]) == \
        "allocator=static"
    assert label_of(["repeat=0"]) == "defaults"
