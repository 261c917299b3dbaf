"""Import layering of the project: no cycles, and every import points one way.

The checker parses every ``import`` statement of ``stabstat/``, ``runner/`` and ``schemas/``
with :mod:`ast` (module level, inside functions and under ``if TYPE_CHECKING:`` alike: a
lazy import is still a dependency), resolves relative imports, and maps each to the
project module it loads: ``from pkg import name`` where ``pkg/name.py`` (or
``pkg/name/__init__.py``) exists counts as importing ``pkg.name``; otherwise as importing
``pkg``; ``import a.b.c`` counts as importing the deepest existing module of ``a.b.c``.
Parent packages that Python also executes (``a/__init__.py`` for ``import a.b``) are not
counted, and neither are imports by name string (``importlib.import_module``, as the
lazy sub-commands of ``stabstat.cli`` use). Same rules as ``../shared/tools/structure.py``.

It fails on:

* any cycle between project modules (the cycle is reported as a path ``a -> b -> a``);
* an import that :data:`ALLOWED_IMPORTS` does not allow:
  - ``schemas`` (the run-log contract) imports nothing of the project but itself;
  - ``stabstat`` (analysis side) imports ``stabstat`` and ``schemas``, never ``runner``;
    the library never imports ``stabstat.cli`` (only the CLI itself and the
    ``python -m stabstat`` entry point ``stabstat.__main__`` do);
  - ``runner`` (training side) imports ``runner`` and ``schemas``, and of ``stabstat``
    only ``stabstat.errors`` (the one exception hierarchy) and ``stabstat.remote`` (the
    fsspec helper that the runner's object storage, ``runner.storage``, shares with
    ``stabstat ingest s3://...``).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = ("stabstat", "runner", "schemas")

#: Importing package -> the project packages/modules it may import. A module belongs to the
#: longest key that is its dotted prefix; a target is allowed when it equals or lies under
#: an entry, and that entry is at least as specific as the key the target itself belongs to
#: (so ``"stabstat"`` does not admit ``stabstat.cli``, which has a key of its own).
PACKAGE_RULES: dict[str, frozenset[str]] = {
    "schemas": frozenset({"schemas"}),
    "stabstat": frozenset({"stabstat", "schemas"}),
    "stabstat.cli": frozenset({"stabstat", "stabstat.cli", "schemas"}),
    "stabstat.__main__": frozenset({"stabstat", "stabstat.cli", "schemas"}),
    "runner": frozenset({"runner", "schemas", "stabstat.errors", "stabstat.remote"}),
}


def _layer_rule(*targets: str) -> frozenset[str]:
    return frozenset(targets)


#: The layers inside the analysis side, lowest first: each concept may import only the ones
#: below it (and itself). Every top-level module or package of ``stabstat`` has a key here,
#: so a new one has to say where it sits (``test_every_stabstat_module_has_a_layer``).
STABSTAT_LAYERS: dict[str, frozenset[str]] = {
    # the package itself: its errors and `stabstat.open()`
    "stabstat": _layer_rule("stabstat", "stabstat.errors", "stabstat.store"),
    # leaves: no project imports but the error hierarchy
    "stabstat.errors": _layer_rule(),
    "stabstat._text": _layer_rule("stabstat.errors"),
    "stabstat._lazy": _layer_rule(),
    "stabstat.remote": _layer_rule("stabstat.errors"),
    "stabstat.stats": _layer_rule("stabstat.stats", "stabstat.errors", "stabstat._lazy"),
    "stabstat.charts": _layer_rule("stabstat.charts", "stabstat.errors"),
    "stabstat._browser": _layer_rule("stabstat.errors"),
    # the run-log contract on disk
    "stabstat.rundir": _layer_rule("schemas", "stabstat.errors"),
    "stabstat.validate": _layer_rule("schemas", "stabstat.errors", "stabstat.rundir"),
    # the database: never knows where a run came from
    "stabstat.store": _layer_rule("stabstat.store", "schemas", "stabstat.errors", "stabstat._text",
                                  "stabstat.rundir"),
    # the front door: formats -> store
    "stabstat.ingest": _layer_rule("stabstat.ingest", "schemas", "stabstat.errors", "stabstat.rundir",
                                   "stabstat.validate", "stabstat.remote", "stabstat.store"),
    # questions asked of the store
    "stabstat.analysis": _layer_rule("stabstat.analysis", "stabstat", "stabstat._lazy", "stabstat.errors",
                                     "stabstat.stats", "stabstat.store"),
    "stabstat.chartdata": _layer_rule("stabstat.errors", "stabstat.store"),
    "stabstat.claims": _layer_rule("stabstat", "stabstat.analysis", "stabstat.errors",
                                   "stabstat.stats", "stabstat.store"),
    # the page: reads results, never writes the store
    "stabstat.report": _layer_rule("stabstat.report", "stabstat", "stabstat._text", "stabstat.analysis",
                                   "stabstat.chartdata", "stabstat.charts", "stabstat.claims",
                                   "stabstat.errors", "stabstat.stats", "stabstat.store"),
}

#: The CLI sits on top: it may import every layer of the analysis side.
_CLI_RULE = frozenset({*STABSTAT_LAYERS, "stabstat.cli", "schemas"})

#: What :func:`check` enforces on the real tree.
ALLOWED_IMPORTS: dict[str, frozenset[str]] = {**PACKAGE_RULES, **STABSTAT_LAYERS,
                                              "stabstat.cli": _CLI_RULE, "stabstat.__main__": _CLI_RULE}


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def discover(root: Path, packages: tuple[str, ...] = PROJECT_PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``root/<package>``.

    A package (``x/__init__.py``) wins over a module file of the same name (``x.py``), as it
    does when Python imports ``x``.
    """
    mods: dict[str, Path] = {}
    for top in packages:
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                mods[".".join(parts[:-1])] = path
            else:  # a package shadows a module of the same name, as in Python's import system
                mods.setdefault(".".join(parts), path)
    return mods


def _resolve(name: str, mods: Mapping[str, Path]) -> str | None:
    """Deepest existing project module of a dotted name (None outside the project)."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_edges(root: Path, packages: tuple[str, ...] = PROJECT_PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules its import statements load (itself excluded)."""
    mods = discover(root, packages)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    # level 1 is the current package, each further level one package up.
                    parts = package.split(".")
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                names = submodules or [base]
            for name in names:
                target = _resolve(name, mods)
                if target is not None and target != mod:
                    edges[mod].add(target)
    return edges


def find_cycles(edges: Mapping[str, set[str]]) -> list[tuple[list[str], list[str]]]:
    """(cycle path, component) per strongly connected component of more than one module.

    Tarjan's algorithm, iterative. The path is the shortest cycle through the component's
    smallest module name (breadth-first within it), first node repeated at the end; the
    component lists every module on some cycle with it, sorted.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    components.append(sorted(comp))
    return [(_cycle_through(comp[0], set(comp), edges), comp) for comp in sorted(components)]


def _cycle_through(start: str, comp: set[str], edges: Mapping[str, set[str]]) -> list[str]:
    """Shortest path start -> ... -> start inside one strongly connected component."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & comp):
                if w == start:
                    path = [v]  # v, its parent, ..., start
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [*reversed(path), start]
                if w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is in a component but on no cycle")


def _layer(module: str, allowed: Mapping[str, frozenset[str]]) -> str | None:
    """The longest key of ``allowed`` that ``module`` lies under."""
    keys = [k for k in allowed if _under(module, k)]
    return max(keys, key=len) if keys else None


def forbidden_edges(
    edges: Mapping[str, set[str]], allowed: Mapping[str, frozenset[str]] = ALLOWED_IMPORTS
) -> list[str]:
    """``"wrong way: a imports b"`` for every edge that ``allowed`` does not admit."""
    out = []
    for mod in sorted(edges):
        source = _layer(mod, allowed)
        if source is None:
            continue
        for target in sorted(edges[mod]):
            target_layer = _layer(target, allowed) or target
            ok = any(_under(target, entry) and _under(entry, target_layer) for entry in allowed[source])
            if not ok:
                out.append(f"wrong way: {mod} imports {target} ({source} may import "
                           f"only {', '.join(sorted(allowed[source]))}; see ALLOWED_IMPORTS)")
    return out


def check(root: Path, packages: tuple[str, ...] = PROJECT_PACKAGES, *,
          allowed: Mapping[str, frozenset[str]] = ALLOWED_IMPORTS) -> list[str]:
    """Every layering problem under ``root``: cycles first, then wrong-way imports."""
    edges = import_edges(root, packages)
    cycles = [f"import cycle: {' -> '.join(path)}"
              + (f" (one of the cycles among {', '.join(comp)})" if len(comp) + 1 > len(path) else "")
              for path, comp in find_cycles(edges)]
    return cycles + forbidden_edges(edges, allowed)


def test_project_imports_are_layered_and_acyclic() -> None:
    problems = check(ROOT)
    assert not problems, "\n".join(problems)


def test_every_stabstat_module_has_a_layer() -> None:
    tops = {".".join(m.split(".")[:2]) for m in discover(ROOT, ("stabstat",))}
    missing = sorted(t for t in tops if t not in ALLOWED_IMPORTS)
    assert not missing, f"add these to STABSTAT_LAYERS (where do they sit?): {missing}"


# ---------------------------------------------------------------- the checker itself


def _tree(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


LEGAL = {
    "schemas/__init__.py": "import json\nfrom schemas import contract\n",
    "schemas/contract.py": "",
    "stabstat/__init__.py": "from stabstat.errors import Error\n",
    "stabstat/errors.py": "class Error(Exception): ...\n",
    "stabstat/remote.py": "from .errors import Error\n",
    "stabstat/stats/__init__.py": "from .core import mean\n",
    "stabstat/stats/core.py": "from .. import errors\nimport numpy\n",
    "stabstat/stats.py": "import runner\n",  # shadowed by the package stabstat/stats/
    "stabstat/report.py": "import schemas\ndef f():\n    from stabstat import stats as S\n",
    "stabstat/cli/__init__.py": "def main(): ...\n",
    "stabstat/cli/cmds.py": "from . import main\nfrom ..report import f\n",
    "stabstat/__main__.py": "from stabstat.cli import main\n",
    "runner/__init__.py": "",
    "runner/train.py": "from stabstat.errors import Error\nfrom stabstat.remote import x\nimport schemas\n",
}


def test_checker_accepts_a_legal_tree_and_resolves_relative_imports(tmp_path: Path) -> None:
    root = _tree(tmp_path, LEGAL)
    edges = import_edges(root)
    assert edges["stabstat.stats.core"] == {"stabstat.errors"}  # `from .. import errors`
    assert edges["stabstat.stats"] == {"stabstat.stats.core"}  # the package, not stats.py
    assert edges["stabstat.report"] == {"schemas", "stabstat.stats"}  # lazy import counted
    assert edges["stabstat.cli.cmds"] == {"stabstat.cli", "stabstat.report"}
    assert edges["runner.train"] == {"stabstat.errors", "stabstat.remote", "schemas"}
    assert check(root, allowed=PACKAGE_RULES) == []


@pytest.mark.parametrize(
    "files, expected",
    [
        # A cycle through a lazy import and a `from . import module`.
        ({"stabstat/a.py": "from . import b\n", "stabstat/b.py": "def f():\n    from stabstat.a import g\n"},
         ["import cycle: stabstat.a -> stabstat.b -> stabstat.a"]),
        ({"stabstat/a.py": "import stabstat.b\n", "stabstat/b.py": "from stabstat import c\n",
          "stabstat/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\n"},
         ["import cycle: stabstat.a -> stabstat.b -> stabstat.c -> stabstat.a"]),
        ({"schemas/extra.py": "from stabstat.errors import Error\n"},
         ["wrong way: schemas.extra imports stabstat.errors"]),
        ({"stabstat/x.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import runner.train\n"},
         ["wrong way: stabstat.x imports runner.train"]),
        ({"stabstat/x.py": "def f():\n    from stabstat.cli.cmds import main\n"},
         ["wrong way: stabstat.x imports stabstat.cli.cmds"]),
        ({"runner/y.py": "from stabstat import report\n"},
         ["wrong way: runner.y imports stabstat.report"]),
        ({"runner/y.py": "from stabstat.stats.core import mean\n"},
         ["wrong way: runner.y imports stabstat.stats.core"]),
    ],
)
def test_checker_reports_cycles_and_forbidden_imports(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    root = _tree(tmp_path, {**LEGAL, **files})
    problems = check(root, allowed=PACKAGE_RULES)
    assert [p.split(" (")[0] for p in problems] == expected, problems


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"stabstat/store/__init__.py": "def f():\n    from stabstat.ingest import ingest\n",
          "stabstat/ingest/__init__.py": "from stabstat.store import Store\n"},
         ["import cycle: stabstat.ingest -> stabstat.store -> stabstat.ingest",
          "wrong way: stabstat.store imports stabstat.ingest"]),
        ({"stabstat/stats/core.py": "from stabstat.store import Store\n", "stabstat/store/__init__.py": ""},
         ["wrong way: stabstat.stats.core imports stabstat.store"]),
        ({"stabstat/report.py": "from stabstat.ingest import ingest\n", "stabstat/ingest/__init__.py": ""},
         ["wrong way: stabstat.report imports stabstat.ingest"]),
    ],
)
def test_checker_enforces_the_analysis_side_layers(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    root = _tree(tmp_path, {**LEGAL, **files})
    problems = [p.split(" (")[0] for p in check(root)]
    assert [p for p in problems if "stabstat.cli" not in p and "schemas" not in p] == expected, problems
