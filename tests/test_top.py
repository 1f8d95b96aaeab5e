"""kvexp.top: finding segments, the table, --once output and the limit subcommand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from kvexp.kvcached_segment import read_segment, write_segment
from kvexp.top import find_segments, human_bytes, main, parse_size, render_table

GiB, MiB = 1 << 30, 1 << 20


@pytest.fixture
def shm(tmp_path: Path) -> Path:
    write_segment("kvexp_alpha", 4 * GiB, GiB, 512 * MiB, shm_dir=tmp_path)
    write_segment("kvcached_beta", 2 * GiB, 1536 * MiB, 0, shm_dir=tmp_path)
    (tmp_path / "other_segment").write_bytes(b"\0" * 24)  # wrong prefix
    (tmp_path / "kvexp_device.json").write_text("{}")  # wrong size
    return tmp_path


def test_find_segments(shm: Path) -> None:
    assert find_segments(shm) == ["kvcached_beta", "kvexp_alpha"]
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
    assert "other_segment" not in out and "kvexp_device" not in out


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
    with pytest.raises(SystemExit):
        main(["limit", "kvexp_alpha", "lots", "--shm-dir", str(shm)])


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
