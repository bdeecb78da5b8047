"""The shape of the package, as docs/architecture.md gives it: every module named there
exists and every module is named; the import order is a line (each module imports only
modules of its own layer or below), there are no import cycles, and imports sit at the
top of modules except the deferred ones, which say why on their line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cardioner"

# Lowest first. A module belongs to the layer of its longest listed prefix.
LAYERS = [
    ("cardioner.modeling", "cardioner.errors", "cardioner.values", "cardioner.config",
     "cardioner.data.document", "cardioner.metrics", "cardioner.processes"),
    ("cardioner.labels",),
    ("cardioner.data",),  # corpus readers and writers, output paths
    ("cardioner.backbone", "cardioner.data.encoding", "cardioner.evaluation", "cardioner.plots",
     "cardioner.hub", "cardioner.view", "cardioner.precision", "cardioner.calibration"),
    ("cardioner.predictor", "cardioner.export"),
    ("cardioner.thresholds", "cardioner.inference", "cardioner.push"),
    ("cardioner.training",),
    ("cardioner.tuning", "cardioner.compare", "cardioner.analysis", "cardioner.serving"),
    ("cardioner.cli", "cardioner.__main__"),
]


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def layer_of(name: str) -> int | None:
    matches = [(len(prefix), index) for index, layer in enumerate(LAYERS) for prefix in layer
               if name == prefix or name.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def top_level_imports(tree: ast.Module, known: set[str]) -> set[str]:
    """The cardioner modules a module imports when it loads."""
    imported = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cardioner"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                imported.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names if alias.name.startswith("cardioner")}
    return imported


def test_every_module_has_a_layer_and_imports_only_its_layer_or_below():
    found = modules()
    assert {name for name in found if name != "cardioner" and layer_of(name) is None} == set()
    upward = []
    for name, tree in found.items():
        if name == "cardioner":
            continue  # the public API: lazy names only
        for target in top_level_imports(tree, set(found)):
            if target != "cardioner" and layer_of(target) > layer_of(name):
                upward.append(f"{name} -> {target}")
    assert upward == []


def test_no_import_cycles():
    found = modules()
    graph = {name: top_level_imports(tree, set(found)) - {name} for name, tree in found.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph.get(name, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_imports_inside_functions_say_why():
    """A deferred import (or a run of imports right after one) carries a comment saying why it waits."""
    unexplained = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in top:
                continue
            first = node.lineno - 1
            while first > 0 and lines[first - 1].strip().startswith(("import ", "from ")):
                first -= 1  # the run of imports this one belongs to
            run = lines[first : node.end_lineno]
            if "TYPE_CHECKING" not in lines[first - 1] and not any("#" in line for line in run):
                unexplained.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert unexplained == []


def test_the_architecture_page_names_every_module_and_only_modules_that_exist():
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = page[page.index("## Modules"):page.index("## The import line")]
    named = set(re.findall(r"`((?:[a-z_]+/)*[a-z0-9_]+\.py)`", table))
    folders = set(re.findall(r"`([a-z_]+/)`", table))  # a package named as a whole
    files = {path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")}
    assert named - files == set(), "named but missing"
    unnamed = {name for name in files - named if not name.startswith(tuple(folders))
               and not (name.endswith("/__init__.py") and any(n.startswith(name[:-11]) for n in named))}
    assert unnamed == set(), "in the package but not named"


# Tests named after a behaviour that crosses modules rather than after one module.
CROSS_MODULE_TESTS = {
    "test_package",  # the package's shape
    "test_multilabel",  # overlapping entities, end to end: labels, models, thresholds, export, predict
}


def test_each_test_file_is_named_after_what_it_tests():
    """tests/test_<name>.py: <name> names a module or package of cardioner by its name or its path
    (``encoding``, ``data_io`` -> data/io.py), perhaps narrowed by a suffix (``modeling_crf``: modeling.py's
    CRF), or ``scripts`` / ``benchmarks_<script>``."""
    root = PACKAGE.parent
    names = {"scripts", *(f"benchmarks_{path.stem}" for path in (root / "benchmarks").glob("*.py"))}
    for path in PACKAGE.rglob("*"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if path.suffix == ".py" or path.is_dir():
            names |= {parts[-1], "_".join(parts)}
    unnamed = [path.name for path in sorted((root / "tests").glob("test_*.py"))
               if path.stem not in CROSS_MODULE_TESTS and not any(
                   path.stem == f"test_{name}" or path.stem.startswith(f"test_{name}_") for name in names)]
    assert unnamed == []
