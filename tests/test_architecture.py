"""The package's shape: no import circle, layers importing only downwards, one owner per idea.

- Every module imports in a fresh interpreter, and the graph of ``import`` statements between
  hetsiren modules (those inside functions included; ``if TYPE_CHECKING:`` blocks, which never
  run, excluded) has no circle. Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``,
  so an import counts as an edge to each package on the way.
- A module imports no module of a higher layer (io, geometry → physics → data → model →
  train.config → rundir → train → analysis → commands, cli).
- Box grids (``arange(d) - d // 2``), Å↔px conversions of lengths and ``fftshift`` appear only
  in their owner modules (geometry/, physics/fourier.py); each check is shown to catch a
  planted offender.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "hetsiren"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.AST) -> list[str]:
    """Dotted names of every import that can run (modules, or module.attribute)."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def _edges(module: str, source: str) -> set[str]:
    """The hetsiren modules that importing ``module`` makes Python run."""
    out: set[str] = set()
    for name in _imported_names(ast.parse(source)):
        if not name.startswith("hetsiren"):
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # every package on the way, then the module
            prefix = ".".join(parts[:i])
            # the packages holding ``module`` are already being imported when it runs
            if prefix in MODULES and prefix != module and not module.startswith(prefix + "."):
                out.add(prefix)
    return out


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    return {m: _edges(m, text) for m, text in sources.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return cycles


def _sources() -> dict[str, str]:
    return {m: p.read_text(encoding="utf-8") for m, p in MODULES.items()}


def test_every_module_imports_in_a_fresh_interpreter():
    # hetsiren.__main__ *runs* the command line (python -m hetsiren, torchrun -m hetsiren)
    names = sorted(m for m in MODULES if m != "hetsiren.__main__")
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "    print('ok', name)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin",
                                 "OMP_NUM_THREADS": "1"}, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("ok ") == len(names)


def test_the_import_graph_has_no_circle():
    graph = import_graph(_sources())
    assert sum(len(e) for e in graph.values()) > 100  # the walk sees the package's imports
    assert find_cycles(graph) == []


def test_the_cycle_finder_finds_a_planted_circle():
    sources = {m: "" for m in MODULES}
    sources["hetsiren.analysis.select"] = "def f():\n    from hetsiren.analysis.analyze import x\n"
    sources["hetsiren.analysis.analyze"] = "from hetsiren.analysis.select import y\n"
    assert ["hetsiren.analysis.analyze", "hetsiren.analysis.select"] in find_cycles(
        import_graph(sources))
    # a TYPE_CHECKING import never runs: no circle
    sources["hetsiren.analysis.analyze"] = ("from typing import TYPE_CHECKING\n"
                                            "if TYPE_CHECKING:\n"
                                            "    from hetsiren.analysis.select import y\n")
    assert find_cycles(import_graph(sources)) == []


# Layers, lowest first; a module may import its own layer and those below.
LAYERS = [
    ("hetsiren", "hetsiren.errors", "hetsiren.outputs", "hetsiren.devices"),
    ("hetsiren.io", "hetsiren.geometry"),
    ("hetsiren.physics",),
    ("hetsiren.data",),
    ("hetsiren.model",),
    ("hetsiren.simulate", "hetsiren.train.config"),
    ("hetsiren.rundir",),
    ("hetsiren.train",),
    ("hetsiren.analysis",),
    ("hetsiren.commands", "hetsiren.cli", "hetsiren.__main__"),
]


def layer_of(module: str) -> int:
    best, rank = "", -1
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > len(best):
                best, rank = name, i
    return rank


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in graph.items():
        for target in targets:
            # importing hetsiren.train.config runs hetsiren/train/__init__, which only
            # re-exports the config (checked by the circle test)
            if target == "hetsiren.train" and module.startswith(("hetsiren.rundir",
                                                                 "hetsiren.train.")):
                continue
            if layer_of(target) > layer_of(module):
                out.append(f"{module} -> {target}")
    return sorted(out)


def test_no_module_imports_a_higher_layer():
    graph = import_graph(_sources())
    assert all(layer_of(m) >= 0 for m in graph), [m for m in graph if layer_of(m) < 0]
    assert layer_violations(graph) == []


def test_the_layer_check_catches_an_upward_import():
    sources = {m: "" for m in MODULES}
    sources["hetsiren.physics.ctf"] = "from hetsiren.data import Batch\n"
    assert layer_violations(import_graph(sources)) == ["hetsiren.physics.ctf -> hetsiren.data"]


# --------------------------------------------------------------------------------------------
# one owner per convention
# --------------------------------------------------------------------------------------------
def _code_lines(source: str) -> list[tuple[int, str]]:
    """(line number, code) without comments and docstrings/strings."""
    strings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return [(n, line.split("#")[0]) for n, line in enumerate(source.splitlines(), 1)
            if n not in strings]


_GRID = re.compile(r"arange\(\s*(\w+)\b[^)]*\)\s*-\s*\(?\s*\1\s*//\s*2")
_FFTSHIFT = re.compile(r"\b(i?fftshift)\b")
# a length in Å divided by a pixel size, or one in pixels multiplied by a pixel size
_A_TO_PX = re.compile(r"\b(?!pixel)\w+_A\b.*?/\s*[\w.]*pixel\w*")
_PX_TO_A = re.compile(r"\b\w+_px\b.*?\*\s*[\w.]*pixel\w*")

OWNERS = {
    "grid (arange(d) - d // 2)": (_GRID, ("hetsiren/geometry/",)),
    "fftshift": (_FFTSHIFT, ("hetsiren/physics/fourier.py",)),
    "Å→px conversion": (_A_TO_PX, ("hetsiren/geometry/",)),
    "px→Å conversion": (_PX_TO_A, ("hetsiren/geometry/",)),
}


def owner_violations(files: dict[str, str]) -> list[str]:
    found = []
    for rel, source in files.items():
        for what, (pattern, owners) in OWNERS.items():
            if rel.startswith(owners):
                continue
            for n, code in _code_lines(source):
                if pattern.search(code):
                    found.append(f"{rel}:{n}: {what}: {code.strip()}")
    return found


def _package_files() -> dict[str, str]:
    return {p.relative_to(SRC).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(PACKAGE.rglob("*.py"))}


def test_grids_unit_conversions_and_fftshift_live_in_their_owner_modules():
    assert owner_violations(_package_files()) == []


@pytest.mark.parametrize("code, what", [
    ("axis = torch.arange(d, dtype=dtype) - d // 2\n", "grid"),
    ("x = torch.fft.fftshift(y)\n", "fftshift"),
    ("s = particles.shifts_A[rows] / prep.pixel_size_A\n", "Å→px"),
    ("pos = np.asarray(points_A, dtype=float) / pixel_size_A\n", "Å→px"),
    ("s = shifts_px.numpy() * prep.pixel_size_A\n", "px→Å"),
])
def test_the_owner_check_catches_a_planted_offender(code, what):
    found = owner_violations({"hetsiren/physics/projection.py": code})
    assert len(found) == 1 and what in found[0]
    assert owner_violations({"hetsiren/physics/projection.py": f'"""{code}"""\n'}) == []


def run_file_names_outside_rundir(files: dict[str, str]) -> list[str]:
    """String constants that are the name of a run-folder file, outside hetsiren/rundir.py."""
    from hetsiren import rundir

    names = {rundir.CONFIG, rundir.MODEL, rundir.LATENT, rundir.LOG, rundir.POSES, rundir.LOCK,
             rundir.SNAPSHOTS, rundir.ANALYSIS_DIR, rundir.NOTEBOOK,
             *(v for v in rundir.ANALYSIS_FILES.values() if "." in v)}
    found = []
    for rel, source in files.items():
        if rel == "hetsiren/rundir.py":
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    return found


def test_run_file_names_live_in_rundir():
    assert run_file_names_outside_rundir(_package_files()) == []
    planted = {"hetsiren/analysis/x.py": 'path = run / "latent.npy"\n'}
    assert run_file_names_outside_rundir(planted) == ["hetsiren/analysis/x.py:1: 'latent.npy'"]
