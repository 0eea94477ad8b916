"""Imports point down: no module of ``tod_clean`` imports one on a floor above its own.

Every module is parsed with ``ast`` (no import runs): its imports at module level and inside functions,
``from tod_clean import x`` and relative imports. Imports under ``if TYPE_CHECKING:`` are left out: they
never run, and annotations may name a type from a floor above (a scope is given the ``TodClassifier`` it
works on). Each module gets its floor from ``LAYERS`` by its first name under ``tod_clean``; within one
floor imports are allowed. A module that is not in ``LAYERS`` fails the test: give a new module its floor
here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tod_clean"

# Floors, lowest first. Flat modules not yet moved into their package stand on their destination's floor.
FLOORS: list[tuple[str, ...]] = [
    ("errors", "version", "runtime"),
    ("io",),
    # scopes: config parses scope strings with scopes.base; scopes name the model only under TYPE_CHECKING
    # pixels: images as model inputs (what encoding is to texts); model_inputs: either, for the instances
    ("config", "masks", "instances", "encoding", "pixels", "model_inputs", "signals", "scopes", "lds"),
    ("modeling",),
    # train: the training core (the floor of training)
    ("influence", "training", "run", "explain", "evaluate", "predict"),
    # score: a run's rows scored in memory, ranked as selection ranks them; merge: puts score parts together
    # check: the LDS of a run's estimators against models retrained on halves (trains and scores)
    ("selection", "report", "score", "merge", "check"),
    ("pipelines",),
    ("api", "cli", "__init__", "__main__"),
]
LAYERS = {name: floor for floor, names in enumerate(FLOORS) for name in names}


def module_name(path: Path) -> str:
    parts = ["tod_clean", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """Whether ``tod_clean.a.b`` is a module or package of the source tree."""
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def is_type_checking(test: ast.expr) -> bool:
    """Whether an ``if`` tests ``TYPE_CHECKING`` (``typing.TYPE_CHECKING`` too)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def run_time_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:`` (its ``else:`` is kept)."""
    nodes: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and is_type_checking(node.test):
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))
    return nodes


def imported_modules(path: Path) -> set[str]:
    """The ``tod_clean`` modules ``path`` imports, anywhere in it but under ``if TYPE_CHECKING:``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in run_time_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:
                # ``from tod_clean import workflow`` imports a module; ``from tod_clean import __version__``
                # the package itself.
                candidate = f"{source}.{alias.name}"
                found.add(candidate if is_module(candidate) else source)
    return {module for module in found if module == "tod_clean" or module.startswith("tod_clean.")}


def layer_of(module: str) -> str:
    """The name ``LAYERS`` knows a module by: its first name under ``tod_clean``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_floor() -> None:
    unknown = sorted(
        module_name(path) for path in PACKAGE.rglob("*.py") if layer_of(module_name(path)) not in LAYERS
    )
    assert not unknown, f"give these modules a floor in LAYERS: {', '.join(unknown)}"


def test_imports_point_down() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        own = LAYERS.get(layer_of(module))
        if own is None:
            continue  # reported by test_every_module_has_a_floor
        for imported in sorted(imported_modules(path)):
            floor = LAYERS.get(layer_of(imported))
            if floor is not None and floor > own:
                upward.append(f"{module} -> {imported} (floor {own} imports floor {floor})")
    assert not upward, "imports that point up:\n" + "\n".join(upward)
