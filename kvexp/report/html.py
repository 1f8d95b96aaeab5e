"""One self-contained HTML page: the report's sections, tables and figures (base64 PNG)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from kvexp.report.figures import Figure

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td:nth-child(-n+4) { text-align: left; }
tr.failed td { background: #fde8e8; }
#headline { border-left: 4px solid #2a6; padding: 0.2em 1em; background: #f4fbf6; }
#headline h3 { font-size: 1em; margin: 0.6em 0 0.2em; } #headline p { margin: 0.2em 0; }
.note { color: #555; font-size: 0.9em; } .lines { font-family: monospace; }
img { max-width: 100%; border: 1px solid #eee; }
dt { font-weight: 600; margin-top: 0.4em; } dd { margin-left: 1.2em; }
"""


@dataclass
class Section:
    """A heading, an optional intro, and a table of display strings; `key` names it."""

    heading: str
    table: pd.DataFrame
    intro: str = ""
    key: str = ""


@dataclass
class Page:
    """What the report page shows, in order."""

    title: str
    headline: list[str]  # verdicts.headline_lines: the answer, shown first
    facts: list[str]
    lines: list[str]
    failed: pd.DataFrame
    sections: list[Section]
    figures: list[Figure]
    definitions: list[tuple[str, str]] = field(default_factory=list)


def table_html(df: pd.DataFrame) -> str:
    """A plain HTML table; rows whose status is not ok are marked."""
    if df.empty:
        return '<p class="note">(none)</p>'
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = []
    for _, row in df.iterrows():
        cls = ' class="failed"' if str(row.get("status", "ok")) not in ("ok",) else ""
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image_html(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


HEADLINE_TITLE = "Answer: kvcached vs static"
NO_PAIR = "No setting has both a kvcached and a static ok point on one engine: nothing to compare."


def is_group_line(line: str) -> bool:
    """A headline line naming a setting and engine (the others are its memory/latency)."""
    return not line.startswith(("memory saved", "latency"))


def headline_html(lines: list[str]) -> str:
    """The headline block: per setting and engine, its memory and latency lines."""
    esc = html.escape
    body = [f"<h3>{esc(x)}</h3>" if is_group_line(x) else f"<p>{esc(x)}</p>" for x in lines]
    return (f"<section id='headline'><h2>{HEADLINE_TITLE}</h2>"
            + ("".join(body) or f"<p>{NO_PAIR}</p>") + "</section>")


def render_html(page: Page) -> str:
    """The whole page as one string."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(page.title)}"
             f"</title><style>{STYLE}</style></head><body><h1>{esc(page.title)}</h1>"]
    parts.append(headline_html(page.headline))
    parts.append("<ul>" + "".join(f"<li>{esc(f)}</li>" for f in page.facts) + "</ul>")
    if page.lines:
        parts.append("<h2>Per allocator (single-model points)</h2><div class='lines'>"
                     + "<br>".join(esc(line) for line in page.lines) + "</div>")
    parts.append("<h2>Failed points</h2>")
    parts.append(table_html(page.failed) if not page.failed.empty
                 else "<p class='note'>None: every point completed.</p>")
    for s in page.sections:
        parts.append(f"<h2>{esc(s.heading)}</h2>")
        if s.intro:
            parts.append(f"<p class='note'>{esc(s.intro)}</p>")
        parts.append(table_html(s.table))
    parts.append("<h2>Figures</h2>")
    for f in page.figures:
        parts.append(f"<h3>{esc(f.title)}</h3>")
        if f.path is not None and f.path.exists():
            parts.append(image_html(f.path, f.title))
            if f.note:
                parts.append(f"<p class='note'>{esc(f.note)}</p>")
        else:
            parts.append(f"<p class='note'>Skipped: {esc(f.note)}</p>")
    if page.definitions:
        parts.append("<h2>Definitions</h2><dl>")
        parts += [f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in page.definitions]
        parts.append("</dl>")
    parts.append("</body></html>")
    return "\n".join(parts)
