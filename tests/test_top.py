"""kvexp.top: finding segments, the table, --once output and the limit subcommand."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from rich.console import Console

from kvexp.kvcached_segment import SegmentInfo, read_segment, write_segment
from kvexp.top import find_segments, human_bytes, main, parse_size, render_table

GiB, MiB = 1 << 30, 1 << 20


@pytest.fixture
def shm(tmp_path: Path) -> Path:
    write_segment("kvexp_alpha", 4 * GiB, GiB, 512 * MiB, shm_dir=tmp_path)
    write_segment("kvcached_beta", 2 * GiB, 1536 * MiB, 0, shm_dir=tmp_path)
    write_segment("my-own-name", GiB, 0, 0, shm_dir=tmp_path)  # a user's KVCACHED_IPC_NAME
    (tmp_path / "zero_limit").write_bytes(b"\0" * 24)  # 24 bytes, but limit 0: not kvcached's
    (tmp_path / "kvexp_device.json").write_text("{}")  # wrong size
    (tmp_path / "kvcached_dir").mkdir()
    return tmp_path


def test_find_segments_by_size_and_content(shm: Path) -> None:
    assert find_segments(shm) == ["kvcached_beta", "kvexp_alpha", "my-own-name"]
    assert find_segments(shm / "absent") == []


def test_once_prints_names_and_figures(shm: Path) -> None:
    env = {**os.environ, "COLUMNS": "160"}
    out = subprocess.run(
        [sys.executable, "-m", "kvexp.top", "--once", "--shm-dir", str(shm)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    ).stdout
    for text in ("kvexp_alpha", "kvcached_beta", "4.00 GiB", "1.00 GiB", "512.0 MiB", "1.50 GiB"):
        assert text in out
    assert "25.0%" in out and "75.0%" in out
    assert "zero_limit" not in out and "kvexp_device" not in out


LONG = "kvcached_qwen2.5-0.5b-instruct-kvcached-0_3fa9c2"  # the default model's kind of name


@pytest.mark.parametrize("columns", [None, "80"])
def test_once_through_a_pipe_at_80_columns_cuts_nothing(tmp_path: Path,
                                                        columns: str | None) -> None:
    write_segment(LONG, 73 * GiB + 123 * MiB, 4321 * MiB, 240 * MiB, shm_dir=tmp_path)
    write_segment(LONG + "_g1", 2 * GiB, 48 * MiB, 0, shm_dir=tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns:
        env["COLUMNS"] = columns
    cmd = f"{sys.executable} -m kvexp.top --once --shm-dir {tmp_path} | cat"
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True, env=env,
                         timeout=30, check=True).stdout
    assert "…" not in out
    for text in (LONG, LONG + "_g1", "instance", "limit", "used", "prealloc", "held",
                 "used/limit", "73.12 GiB", "4.22 GiB", "240.0 MiB", "4.45 GiB", "5.8%",
                 "2.00 GiB", "48.0 MiB", "2.3%", "total"):
        assert text in out, text
    assert max(len(line) for line in out.splitlines()) <= 80


def test_terminal_table_at_80_columns_wraps_names_and_cuts_no_figure(tmp_path: Path) -> None:
    write_segment(LONG, 73 * GiB + 123 * MiB, 4321 * MiB, 240 * MiB, shm_dir=tmp_path)
    with open(os.devnull, "w") as devnull:
        console = Console(width=80, record=True, file=devnull)
        console.print(render_table({LONG: read_segment(LONG, tmp_path)}))
    text = console.export_text()
    assert "…" not in text
    for value in ("73.12 GiB", "4.22 GiB", "240.0 MiB", "4.45 GiB", "limit", "prealloc"):
        assert value in text, value
    first_cells = [line.split("│")[1].strip() for line in text.splitlines()
                   if line.startswith("│")]
    assert LONG in "".join(first_cells)  # folded over lines, whole


def test_once_with_names_and_a_missing_one(
    shm: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["kvexp_alpha", "kvexp_gone", "--once", "--shm-dir", str(shm)]) == 0
    out = capsys.readouterr().out
    assert "kvexp_alpha" in out and "kvexp_gone" in out and "no segment" in out
    assert "kvcached_beta" not in out


def test_once_without_segments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--once", "--shm-dir", str(tmp_path)]) == 0
    assert "no kvcached segments" in capsys.readouterr().out


def test_render_table_rows(shm: Path) -> None:
    infos = {n: read_segment(n, shm) for n in ("kvexp_alpha", "kvcached_beta")}
    table = render_table(infos)
    assert table.row_count == 3  # two instances and the total
    with open(os.devnull, "w") as devnull:
        console = Console(width=160, record=True, file=devnull)
        console.print(table)
    text = console.export_text()
    assert "total" in text and "2.00 GiB" in text  # held: 1.5 GiB + 0.5 GiB


def test_limit_subcommand_writes_the_segment(shm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["limit", "kvexp_alpha", "2GiB", "--shm-dir", str(shm)]) == 0
    info = read_segment("kvexp_alpha", shm)
    assert info is not None
    assert (info.limit_bytes, info.used_bytes, info.prealloc_bytes) == (2 * GiB, GiB, 512 * MiB)
    assert "2.00 GiB" in capsys.readouterr().out
    assert main(["limit", "kvexp_absent", "1G", "--shm-dir", str(shm)]) == 1
    assert not (shm / "kvexp_absent").exists()
    assert main(["limit", "kvexp_device.json", "1G", "--shm-dir", str(shm)]) == 1
    assert (shm / "kvexp_device.json").read_text() == "{}"
    assert "2 bytes; a kvcached segment is exactly 24" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["limit", "kvexp_alpha", "lots", "--shm-dir", str(shm)])


def test_limit_refuses_a_path_outside_the_shm_dir(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    shm = tmp_path / "dev" / "shm"
    shm.mkdir(parents=True)
    victim = tmp_path / "tmp" / "victim.txt"
    victim.parent.mkdir()
    victim.write_bytes(b"precious content, 24 by")  # 23 bytes
    before = victim.read_bytes()
    for name in ("../../tmp/victim.txt", str(victim), "..", "a/../../tmp/victim.txt"):
        assert main(["limit", name, "2GiB", "--shm-dir", str(shm)]) == 1, name
        err = capsys.readouterr().err
        assert "invalid kvcached segment name" in err and repr(name) in err
    assert victim.read_bytes() == before


def test_limit_refuses_a_symlink_and_a_file_not_24_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x" * 24)
    shm = tmp_path / "shm"
    shm.mkdir()
    (shm / "kvcached_link").symlink_to(outside)
    assert main(["limit", "kvcached_link", "1G", "--shm-dir", str(shm)]) == 1
    assert "outside" in capsys.readouterr().err
    assert outside.read_bytes() == b"x" * 24
    (shm / "kvcached_empty").write_bytes(b"")  # a segment being created gets 0.5 s to grow
    threading.Timer(0.1, (shm / "kvcached_empty").write_bytes, (bytes(24),)).start()
    assert main(["limit", "kvcached_empty", "1G", "--shm-dir", str(shm)]) == 0
    assert read_segment("kvcached_empty", shm) == SegmentInfo(GiB, 0, 0)
    (shm / "kvcached_short").write_bytes(b"\1" * 16)
    assert main(["limit", "kvcached_short", "1G", "--shm-dir", str(shm)]) == 1
    assert "16 bytes; a kvcached segment is exactly 24" in capsys.readouterr().err
    assert (shm / "kvcached_short").read_bytes() == b"\1" * 16


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MiB", 512 * MiB),
        ("2GiB", 2 * GiB),
        ("1.5G", 3 * GiB // 2),
        ("2gb", 2 * GiB),
        ("64k", 64 << 10),
        ("1T", 1 << 40),
        ("1000", 1000),
        ("1000B", 1000),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "2X", "iB", "-1G", "1..5G"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_human_bytes() -> None:
    assert human_bytes(3 * GiB // 2) == "1.50 GiB"
    assert human_bytes(512 * MiB) == "512.0 MiB"
    assert human_bytes(100) == "100 B"


def test_instance_ipc_names_are_kept_whole_by_kvcached() -> None:
    from kvexp.kvcached_segment import IPC_NAME_MAX, ipc_name, kvcached_ipc_name

    name = ipc_name("a-very-long-instance-name-" * 4, "abc123")
    assert len(name) <= IPC_NAME_MAX and kvcached_ipc_name(name) == name
    assert name.endswith("_abc123")
