"""The package layout: no import cycle inside merge_bench, the wings import one way, and the start-up
commands (``merge-bench --help``, ``merge-bench methods``) import no torch.

Imports are read from the source with ``ast``: module-level and function-level (lazy) imports alike,
relative ones resolved to module names. ``from pkg import name`` where ``pkg.name`` is a module counts
as importing that module. Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``, so those
count too, except the packages that contain the importing module: Python has already started their
``__init__`` before the module itself runs, so that implied child → parent edge is never a cycle (an
explicit ``from . import x`` in a child is an explicit edge and does count).
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import merge_bench

PACKAGE = Path(merge_bench.__file__).parent
ROOT = "merge_bench"
# The wings, bottom to top: a module may import its own wing and those ranked below it.
RANKS = {"io": 0, "merging": 1, "backbones": 2, "evaluation": 3, "bench": 4, "leaderboard": 5, "commands": 6,
         "cli": 7}
# The package's own __init__ may import only these, and only lazily (inside a function).
ROOT_LAZY_IMPORTS = {"merge_bench.merging.api"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported merge_bench module
    path: Path
    line: int
    lazy: bool  # inside a function
    type_only: bool  # under ``if TYPE_CHECKING:``: never runs

    def where(self) -> str:
        return f"{self.path.relative_to(PACKAGE.parent)}:{self.line}"


def module_files() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = module_files()


def is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """(node, lazy, type_only) for every import statement, however deeply nested."""

    def visit(node: ast.AST, lazy: bool, type_only: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, lazy, type_only
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from visit(child, True, type_only)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), lazy, True)
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), lazy, type_only)
            else:
                yield from visit(child, lazy, type_only)

    yield from visit(tree, False, False)


def imports_of(module: str) -> list[Import]:
    """The merge_bench modules ``module`` imports (each once per statement and target)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if is_package(module) else module.rpartition(".")[0]
    out: list[Import] = []
    for node, lazy, type_only in _import_nodes(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base_parts = package.split(".")
                if node.level - 1 > len(base_parts) - 1:
                    raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top-level package")
                base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in MODULES else base)
        for target in dict.fromkeys(targets):
            if target == ROOT or target.startswith(ROOT + "."):
                if target not in MODULES:
                    raise AssertionError(f"{path}:{node.lineno}: imports {target}, which is not a merge_bench module")
                out.append(Import(module, target, path, node.lineno, lazy, type_only))
    return out


ALL_IMPORTS = {module: imports_of(module) for module in MODULES}


def runtime_edges() -> dict[str, dict[str, Import]]:
    """module → {module it makes Python run: the Import responsible}, TYPE_CHECKING imports left out."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in MODULES}
    for module, imports in ALL_IMPORTS.items():
        for imp in imports:
            if imp.type_only:
                continue
            parts = imp.target.split(".")
            # The target, then the __init__ of each package above it that does not contain `module`.
            for depth in range(len(parts), 0, -1):
                name = ".".join(parts[:depth])
                contains_module = module == name or module.startswith(name + ".")
                if depth < len(parts) and contains_module:
                    continue
                if name != module:
                    graph[module].setdefault(name, imp)
    return graph


def find_cycle(graph: dict[str, dict[str, Import]]) -> list[str] | None:
    """One cycle (m₀, m₁, …, m₀) of the graph, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {m: WHITE for m in graph}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        color[node] = GREY
        stack.append(node)
        for nxt in sorted(graph[node]):
            if color[nxt] == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if color[nxt] == WHITE:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        color[node] = BLACK
        return None

    for start in sorted(graph):
        if color[start] == WHITE:
            found = dfs(start)
            if found:
                return found
    return None


def describe_cycle(cycle: list[str], graph: dict[str, dict[str, Import]]) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        imp = graph[a][b]
        how = "" if imp.target == b else f" (importing {imp.target} runs {b})"
        steps.append(f"  {a} → {b} at {imp.where()}{' (lazy)' if imp.lazy else ''}{how}")
    return "import cycle: " + " → ".join(cycle) + "\n" + "\n".join(steps)


def wing_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the package's own __init__
    return parts[1]


def test_the_resolver_sees_relative_lazy_and_submodule_imports():
    star = {i.target: i for i in ALL_IMPORTS["merge_bench.merging.methods.star"]}
    assert not star["merge_bench.merging.methods.base"].lazy
    assert star["merge_bench.merging.methods.factor"].lazy  # `from .factor import …` inside a method
    assert star["merge_bench.merging.delta"].type_only
    writers = {i.target for i in ALL_IMPORTS["merge_bench.merging.writers"]}
    assert {"merge_bench.merging", "merge_bench.io.files", "merge_bench.merging.engine"} <= writers
    methods_init = {i.target for i in ALL_IMPORTS["merge_bench.merging.methods"]}
    assert "merge_bench.merging.methods.star" in methods_init  # a package __init__ importing its child
    # ...which is no cycle: the child → parent edge is implied, not counted.
    assert "merge_bench.merging.methods" not in runtime_edges()["merge_bench.merging.methods.star"]


def test_no_import_cycle():
    graph = runtime_edges()
    cycle = find_cycle(graph)
    assert cycle is None, describe_cycle(cycle, graph)


def test_find_cycle_reports_one():
    def edge(a, b):
        return Import(a, b, PACKAGE / "x.py", 1, False, False)

    graph = {"a": {"b": edge("a", "b")}, "b": {"c": edge("b", "c")}, "c": {"a": edge("c", "a")}, "d": {}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": edge("a", "b")}, "b": {}}) is None


def test_every_module_belongs_to_a_wing():
    unranked = sorted(m for m in MODULES if m != ROOT and wing_of(m) not in RANKS)
    assert not unranked, f"modules outside the wings {sorted(RANKS)}: {unranked}"


def test_wings_import_one_way():
    problems = []
    for module, imports in sorted(ALL_IMPORTS.items()):
        for imp in imports:
            if module == ROOT:
                if imp.target not in ROOT_LAZY_IMPORTS or not imp.lazy:
                    problems.append(f"{imp.where()}: merge_bench/__init__.py imports {imp.target}"
                                    f"{'' if imp.lazy else ' at module level'}; it may only lazily import "
                                    f"{sorted(ROOT_LAZY_IMPORTS)}")
                continue
            target_wing = wing_of(imp.target)
            if target_wing is None:
                continue  # the top-level package (its only import, merging.api, is lazy)
            source_wing = wing_of(module)
            if RANKS[target_wing] > RANKS[source_wing]:
                kind = "TYPE_CHECKING " if imp.type_only else ("lazy " if imp.lazy else "")
                problems.append(f"{imp.where()}: {module} ({source_wing}, rank {RANKS[source_wing]}) {kind}imports "
                                f"{imp.target} ({target_wing}, rank {RANKS[target_wing]})")
    assert not problems, "imports against the wing order " + " → ".join(
        sorted(RANKS, key=RANKS.get, reverse=True)) + ":\n" + "\n".join(problems)


PROBE = """
import json, sys
from merge_bench.cli import main
argv = json.loads(sys.argv[1])
try:
    rc = main(argv)
except SystemExit as exit:
    rc = exit.code
print(json.dumps({"rc": rc, "torch": "torch" in sys.modules}))
"""


def _probe(argv: list[str]) -> tuple[dict, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    *printed, last = proc.stdout.strip().splitlines()
    return json.loads(last), "\n".join(printed)


def test_help_imports_no_torch():
    result, printed = _probe(["--help"])
    assert result == {"rc": 0, "torch": False}
    assert "methods" in printed


def test_methods_command_imports_no_torch():
    result, printed = _probe(["methods"])
    assert result == {"rc": 0, "torch": False}
    assert "star" in printed and "ties" in printed
