"""A full disk, a folder that cannot be written, a sweep of no points: clear errors, nothing
half-written, and the measured results kept."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kvexp.results import point_record, write_json
from kvexp.results.fold import write_point
from kvexp.results.jsonfile import write_text_atomic
from kvexp.results.records import RequestRow, Sample
from kvexp.sweep import folder_lock
from kvexp.sweep.callbacks import finish

ROOT = Path(__file__).resolve().parents[1]


def _disk_full_for(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Writes to a file whose name holds `name` get half their text in, then ENOSPC."""
    real = Path.write_text

    def write_text(self: Path, text: str, *args: object, **kwargs: object) -> int:
        if name in self.name:
            real(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)


def test_a_full_disk_leaves_the_old_file_whole_and_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_json({"status": "running"}, tmp_path / "point.json")
    write_text_atomic(tmp_path / "config.yaml", "burst_size: 6\n")
    _disk_full_for(monkeypatch, ".")
    with pytest.raises(OSError, match="No space left"):
        write_json({"status": "ok"}, tmp_path / "point.json")
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(tmp_path / "config.yaml", "burst_size: 12\n")
    assert json.loads((tmp_path / "point.json").read_text()) == {"status": "running"}
    assert (tmp_path / "config.yaml").read_text() == "burst_size: 6\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "point.json"]


def test_a_full_disk_while_writing_parquet_leaves_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow.parquet as pq

    def full(table: object, where: Path, **kwargs: object) -> None:
        Path(where).write_bytes(b"PAR1")  # a few bytes in, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pq, "write_table", full)
    from kvexp.results import write_requests

    with pytest.raises(OSError):
        write_requests([], tmp_path)
    assert list(tmp_path.iterdir()) == []


def _one_point(sweep: Path) -> Path:
    """A finished sim point folder, written as the runner writes one (simulated rows)."""
    point = sweep / "0"
    point.mkdir(parents=True)
    meta = {"point": "0", "label": "burst_size=2", "status": "ok", "engine": "sim",
            "clock_start": 0.0, "ready_time": 1.0, "workload_start": 2.0, "workload_end": 5.0,
            "end_time": 6.0, "choices": {"point": "0", "label": "burst_size=2",
                                         "engine": "sim", "allocator": "kvcached",
                                         "burst_size": 2, "repeat": 0}}
    rows = [RequestRow(request_id=i, instance="tiny", wave=0, api="chat", scheduled_time=2.0,
                       sent_time=2.0, send_lag_s=0.0, first_token_time=2.1, end_time=3.0,
                       ttft_s=0.1, e2e_s=1.0, tpot_s=0.01, itl_s=[0.01], completion_tokens=8,
                       max_tokens=8, status=200, ok=True) for i in range(2)]
    samples = [Sample(t, "sim_device", "", "device_used_bytes", 2.0**30) for t in range(7)]
    write_point(point, rows, samples, meta, 0.0)
    return point


def test_a_report_that_cannot_be_written_exits_1_and_keeps_the_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep"
    point = _one_point(sweep)
    _disk_full_for(monkeypatch, "report.html")
    assert finish(sweep, render=True) == 1
    err = capsys.readouterr().err
    assert "the report could not be rendered" in err and "No space left" in err
    assert f"python -m kvexp report {sweep}" in err
    assert not list((sweep / "report").glob("*report.html*"))  # neither half nor temp file
    assert len(pd.read_parquet(point / "requests.parquet")) == 2  # the results are kept
    assert point_record.read(point).status == "ok"
    monkeypatch.undo()
    assert finish(sweep, render=True) == 0  # with room on the disk, the same folder renders
    assert (sweep / "report" / "report.html").stat().st_size > 0


def test_an_unwritable_folder_is_named_with_its_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folder_lock.os, "access", lambda path, mode: False)  # read-only mount
    with pytest.raises(folder_lock.FolderUnwritable) as e:
        folder_lock.check_writable(tmp_path / "sweep", "hydra.sweep.dir")
    assert str(e.value) == (f"cannot write to {tmp_path / 'sweep'} (hydra.sweep.dir): "
                            f"{tmp_path} is read-only; give hydra.sweep.dir a folder you "
                            "can write")
    monkeypatch.undo()

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(folder_lock.FolderUnwritable, match="Read-only file system"):
        folder_lock.hold(tmp_path / "sweep")


def kvexp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KVEXP_SHM_DIR": str(cwd), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "kvexp", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=180)


@pytest.mark.parametrize("multirun", [False, True])
def test_a_sweep_folder_that_cannot_be_made_is_refused_in_one_line(
        tmp_path: Path, multirun: bool) -> None:
    (tmp_path / "afile").write_text("")
    where = tmp_path / "afile" / "sweep"
    args = ["-m", f"hydra.sweep.dir={where}"] if multirun else [f"hydra.run.dir={where}/0"]
    r = kvexp(*args, "engine=sim", cwd=tmp_path)
    assert r.returncode == 2
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    assert r.stderr.strip().splitlines() == [
        f"[kvexp] refused, nothing was started: cannot write to {where}{'' if multirun else '/0'}"
        f" ({key}): {tmp_path / 'afile'} is not a folder; give {key} a folder you can write"]


def test_repeats_below_one_is_refused(tmp_path: Path) -> None:
    r = kvexp("-m", "engine=sim", "repeats=0", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert r.returncode == 2
    assert "repeats must be >= 1, got 0" in r.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("multirun", [False, True])
def test_a_groups_schema_is_not_an_option(tmp_path: Path, multirun: bool) -> None:
    args = (["-m", "allocator=allocator_schema,static", f"hydra.sweep.dir={tmp_path}/s"]
            if multirun else ["allocator=allocator_schema", f"hydra.run.dir={tmp_path}/s/0"])
    r = kvexp(*args, "engine=sim", cwd=tmp_path)
    assert r.returncode == 2
    assert ("allocator.kind is not set: `allocator=allocator_schema` is the schema that the "
            "options of `allocator` build on, not an option; choose one of: kvcached, static"
            ) in r.stderr
    assert "Traceback" not in r.stderr
