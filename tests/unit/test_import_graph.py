"""The import graph of the plmkit package: no cycles beyond a short allowlist, and the layering rules.

Every module is parsed with `ast`; every import counts, those inside functions too (a lazy import is
still a dependency), except those under `if TYPE_CHECKING:`. `from plmkit.x import y` is an edge to the
module plmkit.x.y when there is one, else to plmkit.x; a package's __init__ is the package itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import plmkit

ROOT = Path(plmkit.__file__).resolve().parent
PACKAGE = "plmkit"

# Cycles between modules that are allowed, each as the set of modules of one strongly connected component.
# Keep it minimal: every entry says why the cycle is there. The test fails when an entry is no longer a cycle,
# so that the list stays true. Empty today: the one cycle there was (plmkit.models.encoders imported
# plmkit.models.vocab to prune e5-small, and vocab imported encoders to resolve model names) was fixed by
# resolving names in plmkit.api.prune_vocab instead.
KNOWN_CYCLES: dict[frozenset[str], str] = {}

# (importer prefix, forbidden prefixes): a module at or under the importer prefix may not import, directly or
# through other plmkit modules, anything at or under a forbidden prefix.
LAYERS = [
    ("plmkit.report", ("plmkit.api", "plmkit.experiments", "plmkit.train", "plmkit.cli")),
    ("plmkit.api", ("plmkit.experiments", "plmkit.cli")),
]
CLI_IMPORTERS = {"plmkit.cli", "plmkit.__main__"}  # the only modules that may import plmkit.cli


def module_names(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> its file; a package's __init__.py is named as the package."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join((package,) + parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every Import and ImportFrom node, at any depth, skipping the bodies of `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # `else:` of a TYPE_CHECKING block runs
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name: str, modules) -> str | None:
    """The module `name` names, or the nearest enclosing one that exists; None outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def module_imports(source: str, module: str, modules, is_package: bool = False) -> dict[str, list[int]]:
    """The plmkit modules that `module`'s source imports -> the line numbers of those imports."""
    edges: dict[str, list[int]] = {}
    here = module if is_package else module.rpartition(".")[0]  # the package relative imports start from
    for node in _imports(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [_resolve(alias.name, modules) for alias in node.names]
        else:
            if node.level:
                parts = here.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else _resolve(base, modules)
                for alias in node.names
            ]
        for target in targets:
            if target is not None and target != module:
                edges.setdefault(target, []).append(node.lineno)
    return {target: sorted(set(at)) for target, at in edges.items()}


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], list[int]]]:
    """The package's module graph, and the import lines behind each edge."""
    modules = module_names()
    graph, lines = {}, {}
    for name, path in modules.items():
        edges = module_imports(path.read_text(encoding="utf-8"), name, modules, path.name == "__init__.py")
        graph[name] = set(edges)
        lines.update({(name, target): at for target, at in edges.items()})
    return graph, lines


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def path_between(graph: dict[str, set[str]], start: str, goal, within=None) -> list[str] | None:
    """A shortest import chain start -> ... -> goal (a module, or a test of one), through `within` only when
    given; None if there is none."""
    is_goal = goal if callable(goal) else goal.__eq__
    parents, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if is_goal(child):
                    goal = child
                    chain = [goal, node]
                    while parents[chain[-1]] is not None:
                        chain.append(parents[chain[-1]])
                    return chain[::-1]
                if child not in parents and (within is None or child in within):
                    parents[child] = node
                    nxt.append(child)
        frontier = nxt
    return None


def cycle_path(graph: dict[str, set[str]], component: frozenset[str]) -> list[str]:
    """One cycle through the component, from its first module back to it."""
    first = min(component)
    return path_between(graph, first, first, within=component)


def _describe(chain: list[str], lines) -> str:
    steps = [
        f"    {a} imports {b} at line {', '.join(map(str, lines.get((a, b), ['?'])))}" for a, b in zip(chain, chain[1:])
    ]
    return " -> ".join(chain) + "\n" + "\n".join(steps)


def cycle_problems(graph: dict[str, set[str]], lines, known=KNOWN_CYCLES) -> str:
    """What is wrong with the graph's cycles against the allowlist: new cycles (with a path through each), and
    allowlisted ones that are gone; empty when they match."""
    found = set(cycles(graph))
    message = ""
    for component in sorted(found - set(known), key=min):
        message += f"\nimport cycle among {', '.join(sorted(component))}:\n  " + _describe(
            cycle_path(graph, component), lines
        )
    for component in sorted(set(known) - found, key=min):
        message += f"\nKNOWN_CYCLES lists {sorted(component)}, no longer a cycle: drop the entry"
    return message


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_violations(graph: dict[str, set[str]], layers=LAYERS, cli_importers=CLI_IMPORTERS) -> list[list[str]]:
    """Import chains that break a rule: an importer reaching a forbidden module, or a stranger importing the CLI."""
    bad = []
    for prefix, forbidden in layers:
        for module in sorted(m for m in graph if _under(m, prefix)):
            for banned in forbidden:  # the shortest chain into each forbidden layer
                chain = path_between(graph, module, lambda m, banned=banned: _under(m, banned))
                if chain is not None:
                    bad.append(chain)
    for module in sorted(graph):
        if module not in cli_importers and any(_under(t, "plmkit.cli") for t in graph[module]):
            bad.append([module, "plmkit.cli"])
    return bad


# the checker itself, on small synthetic inputs, so that the real-graph tests cannot pass vacuously


def test_cycles_are_found_on_a_synthetic_graph():
    # g imports itself: not a cycle between modules (module_imports drops such edges anyway)
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a", "f"}, "f": {"e"}, "g": {"g"}}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["e", "f"]]
    assert cycle_path(graph, frozenset("abc")) == ["a", "b", "c", "a"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    problems = cycle_problems(graph, {("a", "b"): [3]}, known={frozenset("ef"): "why", frozenset("xy"): "why"})
    assert "import cycle among a, b, c:\n  a -> b -> c -> a\n    a imports b at line 3\n" in problems
    assert "['x', 'y'], no longer a cycle" in problems and "e, f" not in problems
    assert cycle_problems(graph, {}, known={frozenset("abc"): "why", frozenset("ef"): "why"}) == ""


def test_layer_violations_are_found_through_other_modules():
    graph = {
        "plmkit.report.plots": {"plmkit.io"},
        "plmkit.io": {"plmkit.train.loop"},
        "plmkit.train.loop": set(),
        "plmkit.api": set(),
        "plmkit.peers": {"plmkit.cli"},
        "plmkit.cli": {"plmkit.api"},
    }
    assert layer_violations(graph) == [
        ["plmkit.report.plots", "plmkit.io", "plmkit.train.loop"],
        ["plmkit.peers", "plmkit.cli"],
    ]


def test_imports_are_read_inside_functions_relative_and_not_under_type_checking():
    modules = {
        "plmkit",
        "plmkit.api",
        "plmkit.io",
        "plmkit.models",
        "plmkit.models.vocab",
        "plmkit.models.crf",
        "plmkit.report",
        "plmkit.report.plots",
        "plmkit.config",
    }
    source = (
        "from typing import TYPE_CHECKING\n"
        "import os\n"
        "from plmkit import api\n"  # a module named by from-import
        "from plmkit.config import TrainConfig\n"  # a name: the module it comes from
        "import plmkit.report.plots as p\n"
        "from . import crf\n"
        "if TYPE_CHECKING:\n"
        "    from plmkit.io import atomic_path\n"
        "def f():\n"
        "    from ..report import plots\n"
        "    if True:\n"
        "        import plmkit.missing.thing\n"  # no such module: the nearest enclosing one
        "import typing\n"
        "if typing.TYPE_CHECKING:\n"
        "    import plmkit.api\n"
        "else:\n"
        "    from plmkit import io\n"  # the else branch does run
    )
    edges = module_imports(source, "plmkit.models.vocab", modules)
    assert edges == {
        "plmkit.api": [3],
        "plmkit.config": [4],
        "plmkit.report.plots": [5, 10],
        "plmkit.models.crf": [6],
        "plmkit": [12],
        "plmkit.io": [17],
    }
    assert module_imports("from . import vocab\n", "plmkit.models", modules, is_package=True) == {
        "plmkit.models.vocab": [1]
    }


# the real package


def test_the_graph_sees_lazy_imports():
    graph, _ = import_graph()
    assert len(graph) > 30 and "plmkit.experiments.compare" in graph
    assert "plmkit.api" in graph["plmkit.experiments.compare"]
    assert "plmkit.experiments.probe" in graph["plmkit.cli"]  # imported inside main()
    assert "plmkit.train.run" in graph["plmkit.api"]  # imported inside train()


def test_no_import_cycles_beyond_the_known_ones():
    graph, lines = import_graph()
    problems = cycle_problems(graph, lines)
    assert not problems, problems


def test_layering_rules():
    graph, lines = import_graph()
    bad = layer_violations(graph)
    assert not bad, "layering broken:\n" + "\n".join("  " + _describe(chain, lines) for chain in bad)
