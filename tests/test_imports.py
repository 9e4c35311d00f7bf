"""The layout's import rules, read from the source with ``ast`` (nothing is imported or run).

- ``proxy`` and ``indexer`` never import each other; the services (``catalog``, ``proxy``,
  ``indexer``) never import a tool (``devstack``, ``benchmarks``, ``loadtest``, ``relevance``, tests);
  ``devstack`` is imported only by the CLI's ``dev`` command, the benchmarks and the tests.
- A benchmark imports only its kit (``benchmarks.kit``), never another bench nor ``devstack`` (the
  kit's ``stack`` module is its door to it); the kit never imports
  a bench; ``loadtest`` and ``relevance`` never import ``benchmarks``; nothing outside ``benchmarks``
  and the tests imports it.
- No private name (``_x``) crosses a module: neither ``from m import _x`` nor ``m._x`` on a project
  module ``m``.
- No ``sys.path`` edits anywhere.
- No import cycles between the project's modules (imports under ``if TYPE_CHECKING:`` excepted:
  they never run).
- Every ``python -m X`` of the Makefile and of ``make bench``'s list names a module of the tree.

Each rule is also run on a small tree that breaks it, so a rule that can no longer fail is noticed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_SKIPPED_DIRS = {"build", "dist", "node_modules", "target", "__pycache__"}
SERVICES = ("catalog", "proxy", "indexer")
TOOLS = ("devstack", "benchmarks", "loadtest", "relevance", "tests")


@dataclass(frozen=True)
class Import:
    """One imported module (and the name taken from it, for ``from m import name``)."""

    importer: str
    module: str
    name: str | None
    line: int
    type_checking: bool  # under ``if TYPE_CHECKING:``: never executed


@dataclass
class Tree:
    modules: dict[str, Path]  # dotted name -> file
    imports: list[Import]
    problems: list[str]  # sys.path edits and private attribute reads, found while walking

    def resolve(self, dotted: str) -> str | None:
        """The project module ``dotted`` names (itself or its nearest parent package), else None."""
        while dotted:
            if dotted in self.modules:
                return dotted
            dotted = dotted.rpartition(".")[0]
        return None


def _python_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") or p in _SKIPPED_DIRS or p.endswith(".egg-info") for p in parts[:-1]):
            continue
        yield path


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class _Reader(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.imports: list[Import] = []
        self.problems: list[str] = []
        self.aliases: dict[str, str] = {}  # local name -> imported module, for ``m._x`` reads
        self.type_checking = False

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        guarded = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        if not guarded:
            self.generic_visit(node)
            return
        self.type_checking = True
        for child in node.body:
            self.visit(child)
        self.type_checking = False
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.imports.append(Import(self.module, alias.name, None, node.lineno, self.type_checking))
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                self.aliases[alias.name.split(".")[0]] = alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".") if self.package else []
            base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            source = ".".join([*base, *([node.module] if node.module else [])])
        else:
            source = node.module or ""
        if source == "__future__":
            return
        if source == "sys" and any(alias.name == "path" for alias in node.names):
            self.problems.append(f"{self.module}:{node.lineno}: edits sys.path (from sys import path)")
        for alias in node.names:
            self.imports.append(Import(self.module, source, alias.name, node.lineno, self.type_checking))
            self.aliases[alias.asname or alias.name] = f"{source}.{alias.name}"

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = _dotted(node)
        if dotted is not None:
            head, *rest = dotted.split(".")
            if head == "sys" and rest[:1] == ["path"] and self.aliases.get("sys") == "sys":
                self.problems.append(f"{self.module}:{node.lineno}: edits sys.path ({dotted})")
                return
            if head in self.aliases and rest and _is_private(rest[-1]):
                self.problems.append(
                    f"{self.module}:{node.lineno}: reads private {rest[-1]} of {self.aliases[head]}"
                    f"{'.' + '.'.join(rest[:-1]) if rest[:-1] else ''}"
                )
                return
        self.generic_visit(node)


def _dotted(node: ast.expr) -> str | None:
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(names)])


def read_tree(root: Path) -> Tree:
    modules = {_module_name(root, path): path for path in _python_files(root)}
    tree = Tree(modules, [], [])
    for module, path in modules.items():
        reader = _Reader(module, path.name == "__init__.py")
        reader.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        tree.imports += reader.imports
        # ``sys.path`` reads by a project module, and private reads of *project* modules only.
        tree.problems += [
            p for p in reader.problems if "sys.path" in p or tree.resolve(p.rsplit(" of ", 1)[-1]) is not None
        ]
    return tree


def _top(module: str) -> str:
    return module.split(".")[0]


def _target(tree: Tree, imp: Import) -> str | None:
    """The project module an import loads: ``from a.b import c`` is ``a.b.c`` when that is a module."""
    if imp.name is not None and f"{imp.module}.{imp.name}" in tree.modules:
        return f"{imp.module}.{imp.name}"
    return tree.resolve(imp.module)


# --- the rules -------------------------------------------------------------------------------------


def layering_problems(tree: Tree) -> list[str]:
    problems = []
    for imp in tree.imports:
        target = _target(tree, imp)
        if target is None:
            continue
        src, dst = _top(imp.importer), _top(target)
        where = f"{imp.importer}:{imp.line} imports {target}"
        if {src, dst} == {"proxy", "indexer"}:
            problems.append(f"{where}: proxy and indexer never import each other")
        elif src in SERVICES and dst in TOOLS:
            problems.append(f"{where}: a service never imports a tool")
        elif dst == "devstack" and src not in ("devstack", "benchmarks", "tests") and imp.importer != "hos_search.cli":
            problems.append(f"{where}: only the CLI's dev command, benchmarks and tests import devstack")
        elif dst == "benchmarks" and src not in ("benchmarks", "tests"):
            problems.append(f"{where}: only benchmarks (and tests) import benchmarks")
        elif dst == "benchmarks" and src == "tests" and not target.startswith("benchmarks.kit"):
            problems.append(f"{where}: tests may use the kit, never a bench")
        elif src == "benchmarks" and dst == "devstack" and not imp.importer.startswith("benchmarks.kit"):
            problems.append(f"{where}: a bench reaches devstack through its kit (benchmarks.kit.stack)")
        elif src == "benchmarks" and dst == "benchmarks":
            importer_in_kit = imp.importer.startswith("benchmarks.kit")
            if importer_in_kit and not target.startswith("benchmarks.kit"):
                problems.append(f"{where}: the kit never imports a bench")
            elif not importer_in_kit and not target.startswith("benchmarks.kit") and target != "benchmarks":
                problems.append(f"{where}: a bench imports only its kit")
    return problems


def private_name_problems(tree: Tree) -> list[str]:
    problems = [p for p in tree.problems if "private" in p]
    for imp in tree.imports:
        if imp.name is None or not _is_private(imp.name) or tree.resolve(imp.module) is None:
            continue
        if tree.resolve(imp.module) != imp.importer:
            problems.append(f"{imp.importer}:{imp.line}: imports private {imp.name} from {imp.module}")
    return problems


def sys_path_problems(tree: Tree) -> list[str]:
    return [p for p in tree.problems if "sys.path" in p]


def import_cycles(tree: Tree) -> list[str]:
    """Each cycle of module-to-module imports, once, as ``a -> b -> a``."""
    edges: dict[str, set[str]] = {m: set() for m in tree.modules}
    for imp in tree.imports:
        target = _target(tree, imp)
        if target is not None and target != imp.importer and not imp.type_checking:
            edges[imp.importer].add(target)
    # Tarjan's strongly connected components, iteratively (no recursion limit on a big tree).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[str] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(" <-> ".join(sorted(component)))
    return cycles


# --- the tree as it is -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree() -> Tree:
    return read_tree(ROOT)


def test_the_tree_is_read_whole(tree: Tree) -> None:
    """A reader that found nothing would pass every rule below."""
    for package in ("catalog", "proxy", "indexer", "devstack", "benchmarks", "benchmarks.kit", "loadtest", "relevance"):
        assert package in tree.modules, f"{package} not found"
    assert "benchmarks.cache" in tree.modules and "tests.test_imports" in tree.modules
    assert len(tree.imports) > 500


def test_parts_import_only_what_the_layering_allows(tree: Tree) -> None:
    assert layering_problems(tree) == []


def test_no_private_name_crosses_a_module(tree: Tree) -> None:
    assert private_name_problems(tree) == []


def test_nothing_edits_sys_path(tree: Tree) -> None:
    assert sys_path_problems(tree) == []


def test_no_module_imports_itself_through_a_cycle(tree: Tree) -> None:
    assert import_cycles(tree) == []


# --- each rule can fail ----------------------------------------------------------------------------


def _write(root: Path, files: dict[str, str]) -> Tree:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return read_tree(root)


def test_a_bench_importing_another_bench_or_the_runner_importing_a_bench_is_caught(tmp_path: Path) -> None:
    tree = _write(
        tmp_path,
        {
            "benchmarks/__init__.py": "",
            "benchmarks/kit/__init__.py": "",
            "benchmarks/kit/wrk.py": "from benchmarks.cache import HOT\n",
            "benchmarks/cache.py": "HOT = 1\n",
            "benchmarks/stress.py": "from benchmarks.cache import HOT\nfrom benchmarks.kit.wrk import x\n",
            "benchmarks/seed.py": "from devstack.servers import start_postgres\n",
            "loadtest/__init__.py": "",
            "loadtest/runner.py": "from benchmarks.kit import wrk\n",
            "proxy/__init__.py": "import indexer.sink\n",
            "indexer/__init__.py": "",
            "indexer/sink.py": "from devstack.servers import free_port\n",
            "devstack/__init__.py": "",
            "devstack/servers.py": "",
            "relevance/__init__.py": "",
            "relevance/__main__.py": "def main():\n    from devstack.servers import free_port\n",
        },
    )
    assert sorted(p.split(": ", 1)[1] for p in layering_problems(tree)) == [
        "a bench imports only its kit",
        "a bench reaches devstack through its kit (benchmarks.kit.stack)",
        "a service never imports a tool",
        "only benchmarks (and tests) import benchmarks",
        "only the CLI's dev command, benchmarks and tests import devstack",
        "proxy and indexer never import each other",
        "the kit never imports a bench",
    ]


def test_private_names_taken_from_another_module_are_caught(tmp_path: Path) -> None:
    tree = _write(
        tmp_path,
        {
            "load/__init__.py": "",
            "load/bench_proxy.py": "def _stop(p): ...\ndef _own(): ...\n_own()\n",
            "load/runner.py": "from load.bench_proxy import _stop\n",
            "load/report.py": "import load.bench_proxy as bp\nimport os\nbp._stop(1)\nos._exit(0)\n",
        },
    )
    assert sorted(private_name_problems(tree)) == [
        "load.report:3: reads private _stop of load.bench_proxy",
        "load.runner:1: imports private _stop from load.bench_proxy",
    ]


def test_sys_path_edits_are_caught(tmp_path: Path) -> None:
    tree = _write(
        tmp_path,
        {
            "load/__init__.py": "",
            "load/bench.py": "import sys\nsys.path.insert(0, '.')\n",
            "load/other.py": "import sys\nsys.path[:0] = ['.']\n",
        },
    )
    assert sorted(sys_path_problems(tree)) == [
        "load.bench:2: edits sys.path (sys.path.insert)",
        "load.other:2: edits sys.path (sys.path)",
    ]


def test_import_cycles_are_caught_even_through_a_function_level_import(tmp_path: Path) -> None:
    tree = _write(
        tmp_path,
        {
            "load/__init__.py": "",
            "load/bench_cache.py": "from load.report import Results\n",
            "load/report.py": "def main():\n    from load.bench_cache import cpus\n",
            "load/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from load.hints import X\n",
            "load/hints.py": "from load.typed import Y\n",
        },
    )
    assert import_cycles(tree) == ["load.bench_cache <-> load.report"]


# --- what runs the homes names modules that exist -----------------------------------------------


def test_every_make_target_and_report_bench_runs_a_module_that_exists() -> None:
    """``make bench``, ``make load``, ``make relevance`` … run ``python -m X``: X must be a module here."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    named = set(re.findall(r"\$\(BIN\)/python -m ([\w.]+)", makefile)) - {"pip", "pytest"}  # tools, not ours
    report = (ROOT / "benchmarks" / "report.py").read_text(encoding="utf-8")
    benches = set(re.findall(r'"-m", "(benchmarks\.\w+)"', report))
    assert {"benchmarks.report", "benchmarks.cache", "loadtest", "relevance"} <= named
    # The report runs every bench module there is.
    bench_modules = {f"benchmarks.{p.stem}" for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__"}
    assert benches == bench_modules - {"benchmarks.report"}
    tree = read_tree(ROOT)
    missing = sorted(m for m in named | benches if m not in tree.modules and f"{m}.__main__" not in tree.modules)
    assert missing == []
