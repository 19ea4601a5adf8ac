"""The package's import graph: one direction (base -> layers -> applications -> the libraries built on
them -> recognition -> cli) and no circle. Read from the source with ``ast`` (nothing is imported), so
a new upward import or cycle fails here with the modules named."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_fr"

#: Each room's level; a module may import its own room and lower levels only (docs/architecture.md).
LEVELS = {
    "_atomic": 0, "_quiet": 0, "_lazy": 0, "_memory": 0, "_onednn": 0, "_threads": 0, "preprocessing": 0, "__init__": 0,
    "layers": 1,
    "applications": 2,
    "data": 3, "evaluation": 3, "conversion": 3, "torch_reference": 3, "export": 3, "detection": 3,
    "training": 3,
    "recognition": 4,
    "cli": 5,
}
#: Rooms of level 3 that build on another room of the same level (the only sideways imports).
SIDEWAYS = {("export", "evaluation"), ("conversion", "torch_reference"), ("training", "evaluation"),
            ("training", "data")}
#: Top-level modules of the training room: `keras_fr.training` and the old names kept as aliases of its modules.
TRAINING_MODULES = {"losses", "training", "recipes", "callbacks", "distillation"}


def _module_name(path):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _room(module):
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return "training" if parts[1] in TRAINING_MODULES else parts[1]


def _imports(path, module, top_level_only):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "keras_fr":  # a submodule, or a name of the package itself
                found.update(
                    f"keras_fr.{a.name}" if (PACKAGE / a.name).is_dir() or (PACKAGE / f"{a.name}.py").is_file()
                    else "keras_fr" for a in node.names
                )
            elif node.module.startswith("keras_fr."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("keras_fr."))
    return {m for m in found if m != module}


def _graph(top_level_only):
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        graph[module] = _imports(path, module, top_level_only)
    return graph


def _cycles(edges):
    """Every back edge of a depth-first walk, as the circle it closes."""
    seen, stack, cycles = {}, [], []

    def visit(node):
        seen[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if seen.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                visit(nxt)
        stack.pop()
        seen[node] = "done"

    for node in sorted(edges):
        if node not in seen:
            visit(node)
    return cycles


def test_every_room_has_a_level():
    rooms = {_room(m) for m in _graph(True)}
    assert rooms <= set(LEVELS), sorted(rooms - set(LEVELS))


def test_no_upward_import():
    upward = []
    for module, targets in _graph(False).items():
        if module == "keras_fr":  # the package's front door names everything (lazily)
            continue
        room = _room(module)
        for target in targets:
            other = _room(target)
            if other == room or target == "keras_fr":
                continue
            if LEVELS[other] > LEVELS[room] or (
                LEVELS[other] == LEVELS[room] and (room, other) not in SIDEWAYS
            ):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the package's direction:\n" + "\n".join(upward)


def test_no_import_circle():
    graph = _graph(True)
    # Resolve "keras_fr.x.y" to the nearest module that exists.
    def resolve(name):
        while name not in graph and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    edges = {m: {resolve(t) for t in ts} - {m} for m, ts in graph.items()}
    # A package's __init__ that re-exports its own submodules is not a circle through them.
    for m in edges:
        edges[m] = {t for t in edges[m] if not (m.startswith(t + ".") and t != "keras_fr")}
    cycles = _cycles(edges)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_circle_finder_finds_a_planted_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
