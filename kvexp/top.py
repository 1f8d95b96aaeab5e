"""A live view of kvcached instances (like kvcached's `kvtop`), and `limit` (like `kvctl`).

python -m kvexp.top [NAME ...] [--shm-dir DIR] [--interval S] [--once]
python -m kvexp.top limit NAME SIZE [--shm-dir DIR]      # SIZE: 512MiB, 2GiB, 1.5G
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kvexp import kvcached_segment as seg
from kvexp.kvcached_segment import SegmentInfo

BAR_WIDTH = 20
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgt])i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from '1073741824', '512MiB', '2GiB', '1.5G', '64k' (K/M/G/T are powers of 1024)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 512MiB, 2GiB, 1.5G)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def human_bytes(n: float) -> str:
    """'1.50 GiB', '512.0 MiB', '12.0 KiB', '100 B'."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            digits = 2 if scale >= 1 << 30 else 1
            return f"{n / scale:.{digits}f} {unit}"
    return f"{int(n)} B"


def find_segments(shm_dir: Path | None = None) -> list[str]:
    """Every file in the shm dir that looks like a kvcached segment, as kvtop finds them:
    24 bytes with a limit > 0, whatever its name (a user's own KVCACHED_IPC_NAME shows)."""
    return seg.discover_segments(shm_dir)


def read_infos(names: Sequence[str], shm_dir: Path | None = None) -> dict[str, SegmentInfo | None]:
    """Each name's segment, None where it does not exist (or the name is not a file name)."""
    out: dict[str, SegmentInfo | None] = {}
    for name in names:
        try:
            out[name] = seg.read_segment(name, shm_dir)
        except seg.InvalidSegmentName:
            out[name] = None
    return out


def usage_bar(used: int, limit: int, width: int = BAR_WIDTH) -> Text:
    """A text bar of used/limit with the percentage; '-' when there is no limit."""
    if limit <= 0:
        return Text("-", style="dim")
    frac = used / limit
    filled = min(width, round(frac * width))
    style = "green" if frac < 0.7 else "yellow" if frac < 0.9 else "red"
    bar = Text("█" * filled, style=style)
    bar.append("░" * (width - filled), style="dim")
    bar.append(f" {100 * frac:5.1f}%")
    return bar


def render_table(infos: dict[str, SegmentInfo | None], title: str = "kvcached") -> Table:
    """One row per instance: limit, used, prealloc, held and a used/limit bar."""
    table = Table(title=title, title_justify="left")
    table.add_column("instance", overflow="fold")  # long names wrap rather than being cut
    for col in ("limit", "used", "prealloc", "held"):
        table.add_column(col, justify="right", no_wrap=True, min_width=len("999.99 GiB"))
    table.add_column("used / limit", overflow="fold")
    for name, info in infos.items():
        if info is None:
            table.add_row(name, *(["-"] * 4), Text("no segment", style="dim"))
            continue
        table.add_row(
            name,
            human_bytes(info.limit_bytes),
            human_bytes(info.used_bytes),
            human_bytes(info.prealloc_bytes),
            human_bytes(info.held_bytes),
            usage_bar(info.used_bytes, info.limit_bytes),
        )
    present = [i for i in infos.values() if i is not None]
    if len(present) > 1:
        table.add_section()
        table.add_row(
            Text("total", style="bold"),
            "",
            human_bytes(sum(i.used_bytes for i in present)),
            human_bytes(sum(i.prealloc_bytes for i in present)),
            human_bytes(sum(i.held_bytes for i in present)),
            "",
        )
    return table


PLAIN_COLS = ("limit", "used", "prealloc", "held", "used/limit")
PLAIN_W = 11  # a space and "999.99 GiB"; a longer value shifts the row, never is cut


def render_plain(infos: dict[str, SegmentInfo | None], title: str = "kvcached",
                 width: int = 80) -> str:
    """The table as plain text for a pipe or file: nothing is cut. Figures go in fixed
    columns at the right; a name too long for the space left gets a line of its own."""
    figures_w = PLAIN_W * len(PLAIN_COLS)
    longest = max([len("instance"), *(len(n) for n in infos)])
    name_w = max(8, min(longest, width - figures_w - 1))

    def line(name: str, cells: list[str]) -> list[str]:
        figs = "".join(" " + c.rjust(PLAIN_W - 1) for c in cells)
        if len(name) <= name_w:
            return [name.ljust(name_w) + " " + figs]
        return [name, " " * (name_w + 1) + figs]

    rows = [title, *line("instance", list(PLAIN_COLS))]
    for name, info in infos.items():
        if info is None:
            rows += line(name, ["-"] * 4 + ["no segment"])
            continue
        pct = f"{100 * info.used_bytes / info.limit_bytes:.1f}%" if info.limit_bytes > 0 else "-"
        rows += line(name, [human_bytes(info.limit_bytes), human_bytes(info.used_bytes),
                            human_bytes(info.prealloc_bytes), human_bytes(info.held_bytes), pct])
    present = [i for i in infos.values() if i is not None]
    if len(present) > 1:
        rows += line("total", ["", human_bytes(sum(i.used_bytes for i in present)),
                               human_bytes(sum(i.prealloc_bytes for i in present)),
                               human_bytes(sum(i.held_bytes for i in present)), ""])
    return "\n".join(r.rstrip() for r in rows)


def _view(names: list[str], shm_dir: Path | None, plain: bool = False,
          width: int = 80) -> Table | Text | str:
    shown = names or find_segments(shm_dir)
    if not shown:
        return Text(f"no kvcached segments in {shm_dir or seg.SHM_DIR}", style="dim")
    title = f"kvcached  {time.strftime('%X')}"
    if plain:
        return render_plain(read_infos(shown, shm_dir), title=title, width=width)
    return render_table(read_infos(shown, shm_dir), title=title)


def _top(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m kvexp.top", description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help="segment names (default: every one in the shm dir)")
    p.add_argument("--shm-dir", type=Path, default=None, help=f"default {seg.SHM_DIR}")
    p.add_argument("--interval", type=float, default=0.5, help="refresh period, seconds")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    args = p.parse_args(argv)
    console = Console()
    if args.once:
        if console.is_terminal:
            console.print(_view(args.names, args.shm_dir))
        else:  # a pipe or a file: plain text, never cut to the console width
            print(_view(args.names, args.shm_dir, plain=True, width=console.width))
        return 0
    try:
        with Live(_view(args.names, args.shm_dir), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(args.interval)
                live.update(_view(args.names, args.shm_dir), refresh=True)
    except KeyboardInterrupt:
        return 0


def _limit(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m kvexp.top limit", description="Set a kvcached instance's KV limit."
    )
    p.add_argument("name", help="segment name (KVCACHED_IPC_NAME)")
    p.add_argument("size", help="e.g. 512MiB, 2GiB, 1.5G, or bytes")
    p.add_argument("--shm-dir", type=Path, default=None, help=f"default {seg.SHM_DIR}")
    args = p.parse_args(argv)
    try:
        limit = parse_size(args.size)
    except ValueError as e:
        p.error(str(e))
    try:
        info = seg.set_limit(args.name, limit, args.shm_dir)
    except (FileNotFoundError, seg.InvalidSegmentName, seg.NotASegment) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.name}: limit {human_bytes(info.limit_bytes)} ({info.limit_bytes} bytes)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "limit":
        return _limit(argv[1:])
    return _top(argv)


if __name__ == "__main__":
    sys.exit(main())
