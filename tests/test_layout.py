"""The code's layout holds: no import circle in kvexp/, every kvexp import resolves, engines
asked by kind only inside kvexp/engines/, and the sweep process reaching the point process
only as a subprocess."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "kvexp"


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """Module -> the kvexp modules it imports (at the top or inside a function)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods
                         else node.module for a in node.names]
            graph[mod] |= {n for n in names if n in mods and n != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle, each once (depth-first search)."""
    found, state = [], dict.fromkeys(graph, 0)
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m], _ = 1, stack.append(m)
        for n in sorted(graph[m]):
            if state[n] == 1:
                found.append(stack[stack.index(n):] + [n])
            elif state[n] == 0:
                visit(n)
        state[m], _ = 2, stack.pop()

    for m in sorted(graph):
        if state[m] == 0:
            visit(m)
    return found


def test_no_import_circle_in_kvexp() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_engine_kinds_are_tested_only_inside_kvexp_engines() -> None:
    kinds = sorted(p.name for p in (ROOT / "engines").iterdir()
                   if (p / "__init__.py").exists())
    assert {"sim", "vllm"} <= set(kinds)
    names = "|".join(kinds)
    pattern = re.compile(r"engine\.kind\s*(==|!=|in\b|not in\b)"
                         rf"""|kind\s*(==|!=)\s*["']({names})["']""")
    offenders = [f"{f.relative_to(ROOT.parent)}:{i}: {line.strip()}"
                 for f in ROOT.rglob("*.py") if "engines" not in f.relative_to(ROOT).parts
                 for i, line in enumerate(f.read_text().splitlines(), 1)
                 if pattern.search(line)]
    assert offenders == []


def test_the_sweep_side_imports_nothing_of_the_point_process() -> None:
    graph = import_graph()
    sweep_side = [m for m in graph if m.startswith("kvexp.sweep")]
    assert sweep_side
    bad = {m: sorted(n for n in graph[m] if n.startswith("kvexp.point")) for m in sweep_side}
    assert {m: v for m, v in bad.items() if v} == {}


def unresolved_imports(mods: dict[str, Path]) -> list[str]:
    """`from kvexp.X import Y` (at the top or inside a function) whose module X is not a
    module of kvexp/, or whose name Y is neither a submodule nor defined at X's top level."""
    bad = []
    for mod, f in sorted(mods.items()):
        for node in ast.walk(ast.parse(f.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.split(".")[0] == "kvexp"):
                continue
            if node.module not in mods:
                bad.append(f"{mod}:{node.lineno}: no module {node.module}")
                continue
            top = ast.parse(mods[node.module].read_text())
            defined = {t.id for n in top.body if isinstance(n, ast.Assign) for t in n.targets
                       if isinstance(t, ast.Name)}
            defined |= {n.target.id for n in top.body if isinstance(n, ast.AnnAssign)
                        and isinstance(n.target, ast.Name)}
            defined |= {n.name for n in top.body if isinstance(
                n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
            defined |= {a.asname or a.name.split(".")[0] for n in top.body
                        if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
            defined |= {n.id for n in ast.walk(top)  # also names bound in if / try blocks
                        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            for a in node.names:
                if a.name != "*" and a.name not in defined \
                        and f"{node.module}.{a.name}" not in mods:
                    bad.append(f"{mod}:{node.lineno}: {node.module} has no {a.name}")
    return bad


def test_every_kvexp_import_resolves_also_those_inside_functions() -> None:
    """A function-level import runs only on its path (e.g. the real GPU's): an import of a
    module that does not exist must fail here, not on the GPU."""
    assert unresolved_imports(_modules()) == []


def test_the_import_checker_finds_a_missing_module(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def source():\n    from kvexp.nvml import nvml_index\n"
                 "    from kvexp.gpus import no_such_name\n")
    mods = {**_modules(), "kvexp.fake": f}
    found = [b for b in unresolved_imports(mods) if b.startswith("kvexp.fake")]
    assert found == ["kvexp.fake:2: no module kvexp.nvml",
                     "kvexp.fake:3: kvexp.gpus has no no_such_name"]
