"""One-way dependencies: no import cycle among instantsoup's modules (imports inside functions
count too) and no include cycle among the C units (a unit is x.c with its header x.h)."""
from __future__ import annotations

import ast
import os
import re

import instantsoup

PKG = os.path.dirname(os.path.abspath(instantsoup.__file__))
CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")  # the checkout's


def _modules() -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), os.path.dirname(PKG))[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(root, f)
    return out


def python_graph() -> dict[str, set[str]]:
    """module -> instantsoup modules it imports (a package's __init__ is not implied by a
    submodule import: `import instantsoup.data.text` needs instantsoup.data.text only)."""
    mods = _modules()
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        pkg = m if path.endswith("__init__.py") else m.rpartition(".")[0]
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n != m and n != "instantsoup":
                    graph[m].add(n)
    return graph


def c_graph() -> dict[str, set[str]]:
    """C unit -> units whose header it (or its own header) includes; isp.h is util.c's header."""
    units = {f[:-2] for f in os.listdir(CSRC) if f.endswith(".c")}
    owner = {f"{u}.h": u for u in units} | {"isp.h": "util"}
    graph = {u: set() for u in units}
    for u in units:
        for f in (f"{u}.c", f"{u}.h"):
            p = os.path.join(CSRC, f)
            if os.path.isfile(p):
                for h in re.findall(r'#include "([a-z_0-9]+\.h)"', open(p, encoding="utf-8").read()):
                    if owner.get(h, u) != u:
                        graph[u].add(owner[h])
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first search (one per back edge)."""
    found, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    return found


def test_no_import_cycle_in_the_package():
    g = python_graph()
    assert cycles(g) == []
    # the cycles the engine core broke stay broken
    assert "instantsoup.data.text" not in g["instantsoup.data.batching"]
    assert "instantsoup.models" not in g["instantsoup.models.encoder"]
    # the bottom layers: file helpers import nothing of ours, the data layer only itself, the settings'
    # building blocks only data; the methods below the settings they are put together into (config)
    data = {m for m in g if m == "instantsoup.data" or m.startswith("instantsoup.data.")}
    assert g["instantsoup.fileio"] == set()
    assert all(g[m] <= data for m in data) and g["instantsoup.settings_base"] <= data
    assert all("instantsoup.config" not in g[m] for m in g if m.startswith("instantsoup.methods."))


def test_no_include_cycle_between_c_units():
    g = c_graph()
    assert "util" in g and "maskbits" in g["prune"] and "prune" in g["soup"]
    assert cycles(g) == []
    assert not g["maskbits"] & {"prune", "soup"}  # mask bit operations sit below both


def test_the_walker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
