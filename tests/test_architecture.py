"""The package's shape: layers import one way (no cycles), private names stay in their module,
and the shipped files (presets, manifests) are package data with one source of truth.

See docs/architecture.md for the layers these tests hold the code to.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import vocalatent

PKG = Path(vocalatent.__file__).resolve().parent
ROOT = PKG.parent


# ----------------------------------------------------------------------------- the import graph

def _module_files(pkg: Path) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    out = {}
    for f in sorted(pkg.rglob("*.py")):
        rel = f.relative_to(pkg.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(pkg: Path = PKG) -> tuple[dict[str, set[str]], list[str]]:
    """Module -> modules of the package it imports, and every private name imported across
    modules (``"importer <- module.name"``).

    A private *module* of the importer's own package (``from ._utils import x``) is fine; a
    private *object* taken from another module (``from .model import _n_eval``) is not.
    Imports inside functions count: a lazy import is still a dependency.
    """
    files = _module_files(pkg)
    top = pkg.name
    graph: dict[str, set[str]] = {m: set() for m in files}
    private: list[str] = []
    for mod, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _absolute(mod, path.name == "__init__.py", node)
                if not target or not (target == top or target.startswith(top + ".")):
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    dest = sub if sub in files else target
                    if dest in files and dest != mod:
                        graph[mod].add(dest)
                    if (alias.name.startswith("_") and not alias.name.startswith("__")
                            and sub not in files and target != mod):
                        private.append(f"{mod} <- {target}.{alias.name}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in files and alias.name != mod:
                        graph[mod].add(alias.name)
    return graph, private


def _is_parent_link(a: str, b: str) -> bool:
    """A package and its own submodule: ``__init__`` re-exporting a child is not a cycle."""
    return a.startswith(b + ".") or b.startswith(a + ".")


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (iterative Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            advanced = False
            for w in children:
                if _is_parent_link(v, w):
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    cycles.append(sorted(comp))
    return cycles


def test_cycle_finder_finds_a_known_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "p": {"p.x"}, "p.x": {"p"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_import_graph_on_a_known_package(tmp_path):
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import f\n",
        "_private.py": "x = 1\n",
        "a.py": "from ._private import x\nfrom .b import _hidden\n\ndef f():\n    from . import b\n",
        "b.py": "import toy.sub.c\n_hidden = 2\n",
        "sub/__init__.py": "",
        "sub/c.py": "from ..a import f\nfrom .. import _private\nfrom os import _exit\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph, private = import_graph(pkg)
    assert graph["toy.a"] == {"toy._private", "toy.b"}
    assert graph["toy.b"] == {"toy.sub.c"}
    assert graph["toy.sub.c"] == {"toy.a", "toy._private"}
    # a private module is fine, a private object of another module is not, os is not ours
    assert private == ["toy.a <- toy.b._hidden"]
    assert import_cycles(graph) == [["toy.a", "toy.b", "toy.sub.c"]]

    # the real package: the graph names its modules
    graph, _ = import_graph()
    assert "vocalatent.cli.options" in graph["vocalatent.cli"]
    assert "vocalatent._utils" in graph["vocalatent.resources"]


def test_no_import_cycle_and_no_private_name_across_modules():
    graph, private = import_graph()
    cycles = import_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)
    assert not private, "private names imported across modules: " + "; ".join(private)


# ----------------------------------------------------------------------------- the layers

#: The layers of docs/architecture.md, lowest first; a module may import its own layer and the
#: layers below. A module is placed by its longest listed prefix; a top-level module that is
#: not listed counts as a job (the most permissive layer below the CLI).
LAYERS: dict[str, list[str]] = {
    "base": ["vocalatent._utils", "vocalatent._version", "vocalatent.resources", "vocalatent.locks",
             "vocalatent.outdir"],
    # config imports only base when imported; it reaches the estimator (for [model] defaults)
    # and the owners' dataclasses by name at run time, so every layer may import it
    "config": ["vocalatent.config"],
    "io": ["vocalatent.data", "vocalatent.audio.io", "vocalatent.audio.annotations"],
    "prepare": ["vocalatent.prepare", "vocalatent.audio", "vocalatent.items", "vocalatent.data.simulate",
                "vocalatent.data.repertoire", "vocalatent.analysis.torus"],
    "nn": ["vocalatent.nn", "vocalatent.lattice", "vocalatent.embedding"],
    "models": ["vocalatent.training", "vocalatent.schedules", "vocalatent.model",
               "vocalatent.baselines"],
    "analysis": ["vocalatent.analysis"],
    "plot": ["vocalatent.plot", "vocalatent.figures", "vocalatent.accessor", "vocalatent.audio.figures",
             "vocalatent.interactive", "vocalatent.analysis._demo"],
    "jobs": [],
    "cli": ["vocalatent.cli", "vocalatent.__main__"],
}


def layer_of(module: str) -> str:
    best, best_len = "jobs", 0
    for name, prefixes in LAYERS.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = name, len(p)
    return best


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    order = list(LAYERS)
    out = []
    for a in sorted(graph):
        if a == "vocalatent":       # the package's lazy top-level API may reach any layer
            continue
        for b in sorted(graph[a]):
            if b == "vocalatent":
                continue
            la, lb = layer_of(a), layer_of(b)
            if order.index(lb) > order.index(la):
                out.append(f"{a} ({la}) imports {b} ({lb})")
    return out


def test_layer_rule_on_known_cases():
    assert layer_of("vocalatent.audio.segment") == "prepare"
    assert layer_of("vocalatent.audio.io") == "io"
    assert layer_of("vocalatent.analysis.torus") == "prepare"
    assert layer_of("vocalatent.workflow") == "jobs"
    graph = {"vocalatent.model": {"vocalatent.workflow", "vocalatent.nn.qlvm"},
             "vocalatent.workflow": {"vocalatent.model"}}
    assert layer_violations(graph) == [
        "vocalatent.model (models) imports vocalatent.workflow (jobs)"]


def test_imports_go_down_the_layers():
    graph, _ = import_graph()
    bad = layer_violations(graph)
    assert not bad, "imports against the layers of docs/architecture.md: " + "; ".join(bad)


# ----------------------------------------------------------------------------- package data

def test_presets_and_manifests_are_package_data_with_one_source():
    from vocalatent.config import PIPELINES_DIR, list_pipelines
    from vocalatent.data.manifests import MANIFEST_DIR, list_manifests
    from vocalatent.resources import manifests_dir, pipelines_dir

    assert pipelines_dir() == PIPELINES_DIR and manifests_dir() == MANIFEST_DIR
    # found inside the package...
    assert PIPELINES_DIR.parent == PKG and MANIFEST_DIR.parent == PKG
    if (ROOT / "pyproject.toml").is_file():
        # ...and, in a checkout, the same files as the top-level folders (symbolic links)
        assert PIPELINES_DIR.resolve() == (ROOT / "pipelines").resolve()
        assert MANIFEST_DIR.resolve() == (ROOT / "data_manifests").resolve()
        text = (ROOT / "pyproject.toml").read_text()
        for pattern in ('"pipelines/*.toml"', '"data_manifests/*.toml"'):
            assert pattern in text
    names = {p["name"] for p in list_pipelines()}
    assert {"default", "zebra_finch", "single_cell", "neural"} <= names
    assert len(list_manifests()) == len(list(MANIFEST_DIR.glob("*.toml")))


@pytest.mark.slow
def test_wheel_installs_and_runs_without_editable_copy():
    """scripts/check_wheel.sh (also a CI step): wheel -> fresh venv -> pipelines, data list, embed."""
    script = ROOT / "scripts" / "check_wheel.sh"
    if not script.is_file():  # pragma: no cover - an installed copy has no scripts/
        pytest.skip("not a checkout")
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin:" + str(Path(sys.executable).parent),
                            "PYTHON": sys.executable, "HOME": str(Path.home())})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "ran from the installed wheel" in r.stdout
