"""The package layout shows the architecture (docs/architecture.md, "Where the code lives").

- at most MAX_TOP_LEVEL_MODULES modules at the top of inbox/ (the shared foundations);
- a room (subpackage) per process and one for the operator commands;
- no circle of imports among inbox's modules;
- the web process's code does not reach the worker's loop, the relay, the runtime or the
  commands;
- docs/architecture.md's map names every top-level module and room, and nothing else;
- pyproject.toml lists every package, so a wheel carries every room.

The import graph is read from the source with `ast`, every import statement counted, those
inside functions and under TYPE_CHECKING included. A node is a module; a package is its
`__init__`. `from a.b import x` is an edge to `a.b.x` when that is a module, else to `a.b`.

One kind of edge is left out of the circle check: a module importing one of its own
ancestor packages (`from inbox.providers import Clock` in inbox/providers/stripe.py).
Python runs a package's `__init__` before any of its modules whatever the code says, so
that dependency is a given; what a circle means here is two modules, or two rooms, each
needing the other (the runner and the supervisor did). A package's `__init__` may then load
its own plug-ins lazily (`inbox.providers.get_provider`, `build_transports`).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

from tests.support import REPO

PACKAGE = REPO / "inbox"
MAX_TOP_LEVEL_MODULES = 14
ROOMS = ("cli", "relay", "runtime", "web", "worker")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_names(name: str, path: Path) -> Iterator[str]:
    """The dotted names one module's import statements ask for (each `from` target and
    `from`-target.name, so the caller can tell a module from an attribute)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield from (f"{base}.{alias.name}" for alias in node.names)


def resolve(target: str, known: dict[str, Path]) -> str | None:
    """The inbox module an imported name lives in (its longest known prefix)."""
    while target:
        if target in known:
            return target
        target = target.rpartition(".")[0]
    return None


def import_graph(*, ancestors: bool) -> dict[str, set[str]]:
    """Module -> the inbox modules it imports. With `ancestors`, also every module -> its
    package (what Python loads first); without, no edge to a module's own packages."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        if ancestors and "." in name:
            graph[name].add(name.rpartition(".")[0])
        for target in imported_names(name, path):
            found = resolve(target, known)
            if found is None or found == name:
                continue
            if not ancestors and name.startswith(found + "."):
                continue  # its own package: run first anyway (see the module docstring)
            graph[name].add(found)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
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
                        found.append(sorted(component))
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_few_modules_at_the_top():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, (
        f"{len(top)} modules at the top of inbox/ ({', '.join(top)}): give the new ones a room"
    )


def test_every_room_is_a_package():
    for room in ROOMS:
        assert (PACKAGE / room / "__init__.py").is_file(), f"inbox/{room}/ is missing"


def test_no_circle_of_imports():
    assert circles(import_graph(ancestors=False)) == []


def test_the_circle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [["a", "b", "c"]]
    known = modules()
    assert resolve("inbox.runtime.spec.LoopSpec", known) == "inbox.runtime.spec"
    assert resolve("inbox.worker.store", known) == "inbox.worker.store"
    assert "inbox.runtime.runner" in import_graph(ancestors=False)["inbox.runtime.supervisor"]


def test_the_web_process_does_not_load_the_other_rooms():
    graph = import_graph(ancestors=True)
    web = reachable(graph, "inbox.web")
    rooms = ("inbox.relay", "inbox.runtime", "inbox.cli")  # and their modules, not namesakes
    others = sorted(m for m in web if m in rooms or m.startswith(tuple(f"{r}." for r in rooms))
                    or m in ("inbox.worker.loop", "inbox.worker.store", "inbox.worker.handler_tx"))
    assert others == []


def architecture_map() -> list[str]:
    """The entries (`db.py`, `web/`) at the top level of docs/architecture.md's map."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = text.split("```\ninbox/\n", 1)[1].split("```", 1)[0]
    return [line.split()[0] for line in block.splitlines() if line.startswith("  ")
            and not line.startswith("   ")]


def test_the_architecture_map_matches_the_package():
    entries = architecture_map()
    actual = [p.name for p in PACKAGE.glob("*.py")] + [
        f"{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()
    ]
    assert sorted(entries) == sorted(actual)


def test_the_wheel_lists_every_package():
    listed = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    packages = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    assert packages - set(listed) == set()
