"""Figures against the swept parameter: which overrides vary, and a line per allocator."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns

from kvexp.report.figures.base import DPI, Figure, palette, plt
from kvexp.report.tables import ALLOCATOR_KEYS, REPEAT_KEYS


def swept_parameters(cat: pd.DataFrame) -> list[str]:
    """Override keys that vary across the ok points, allocator and repeat excepted."""
    ok = cat[cat["status"] == "ok"]
    keys: dict[str, set[str]] = {}
    for params in ok["params"]:
        for k, v in params.items():
            if k not in ALLOCATOR_KEYS + REPEAT_KEYS:
                keys.setdefault(k, set()).add(v)
    varying = [k for k, vals in keys.items() if len(vals) > 1]
    varying += [k for k in keys if k not in varying and any(k not in p for p in ok["params"])]
    numeric = [k for k in varying if all(is_number(p.get(k)) for p in ok["params"])]
    return numeric + [k for k in varying if k not in numeric]


def is_number(v: str | None) -> bool:
    try:
        float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def against_param(cat: pd.DataFrame, metrics: list[tuple[str, str, float]], unit: str,
                   key: str, title: str, out_dir: Path) -> Figure:
    params = swept_parameters(cat)
    if not params:
        return Figure(key, title, None, "No swept parameter (all points share one setting).")
    x = params[0]
    style_name = ", ".join(params[1:]) or "other"
    ok = cat[cat["status"] == "ok"]
    rows = []
    for _, r in ok.iterrows():
        xv = r["params"].get(x)
        xv = float(xv) if is_number(xv) else str(xv)
        other = " ".join(f"{k}={r['params'].get(k, '-')}" for k in params[1:])
        other = other or "all"
        for name, col, scale in metrics:
            v = r.get(col)
            if v is not None and not pd.isna(v):
                rows.append({x: xv, "value": float(v) * scale, "metric": name,
                             "allocator": r["allocator"], style_name: other})
    data = pd.DataFrame(rows)
    if data.empty:
        return Figure(key, title, None, "No values for these metrics in the ok points.")
    colours = palette(list(data["allocator"]))
    order = [a for a in colours if a in set(data["allocator"])]
    styles = data[style_name].nunique()
    g = sns.relplot(
        data=data, x=x, y="value", hue="allocator", hue_order=order, palette=colours,
        style=style_name if 1 < styles <= 6 else None, col="metric",
        col_order=[m[0] for m in metrics if m[0] in set(data["metric"])],
        col_wrap=min(2, data["metric"].nunique()), kind="line", marker="o",
        estimator="median", errorbar=("ci", 95), err_style="bars", seed=0, height=3.2,
        aspect=1.4,
        facet_kws={"sharey": False},
    )
    g.set_axis_labels(x, unit)
    xs = data[x].unique()
    if len(xs) <= 12 and all(isinstance(v, float) for v in xs):
        for ax in g.axes.flat:
            ax.set_xticks(sorted(xs))
    g.set_titles("{col_name}")
    g.figure.suptitle(f"{title} (median over repeats, 95% CI)", y=1.02, fontsize=11)
    path = out_dir / f"{key}.png"
    g.figure.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(g.figure)
    note = f"x axis: {x}."
    if styles > 6:
        note += f" Other swept parameters ({', '.join(params[1:])}) are pooled."
    return Figure(key, title, path, note)
