"""The package's import graph: layers run one way, and no module takes another's private names.

The rule is the one CONTRIBUTING.md states, word for word:

    cli, demo > plots > analysis > inference > model > io > base (errors, files, options, streams,
    version)

A module imports from its own layer or a lower one, never a higher one; inside a layer the
imports form no cycle; the command line and the demo sit on the public API (``bayescale``).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bayescale"

#: bottom to top: a subpackage, or the top-level modules named
LAYERS = [
    ("base", {"errors", "files", "options", "streams", "version"}),
    ("io", None),
    ("model", None),
    ("inference", None),
    ("analysis", None),
    ("plots", None),
    ("interface", {"cli", "demo", "__main__"}),
    ("api", {"__init__"}),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def module_name(path: Path) -> str:
    """Dotted name below the package: ``inference.fit``, ``plots`` (a package), ``errors``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    """The layer a module belongs to (KeyError for a module of no layer)."""
    head = module.split(".")[0]
    for name, members in LAYERS:
        if (members is None and head == name) or (members is not None and module in members):
            return name
    raise KeyError(module)


def resolve(target: str) -> str:
    """The module an import names: ``from bayescale.inference import vhmc`` is inference.vhmc."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or "__init__"


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported from, names, line) for every bayescale import in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bayescale"):
            base = node.module.partition(".")[2]
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                if sub in MODULES:  # a module imported through its package
                    out.append((sub, [], node.lineno))
                else:
                    out.append((resolve(base) if base else "__init__", [alias.name], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "bayescale":
                    out.append(("__init__", [], node.lineno))
                elif alias.name.startswith("bayescale."):
                    out.append((resolve(alias.name.partition(".")[2]), [], node.lineno))
    return out


def test_every_module_has_a_layer():
    missing = []
    for module in MODULES:
        try:
            layer(module)
        except KeyError:
            missing.append(module)
    assert not missing, missing


@pytest.mark.parametrize("module", sorted(MODULES))
def test_layers_run_one_way(module):
    upward = []
    for target, _names, line in _imports(MODULES[module]):
        if target == module or (target == "__init__" and layer(module) == "interface"):
            continue  # the command line and the demo sit on the public API
        if RANK[layer(target)] > RANK[layer(module)]:
            upward.append(f"line {line}: {module} ({layer(module)}) imports {target}")
    assert not upward, upward


def test_no_cycle_inside_a_layer():
    graph = {
        module: {
            target
            for target, _names, _line in _imports(path)
            if target != module
            and layer(target) == layer(module)
            and target in MODULES
            # a subpackage's __init__ may re-export its own modules
            and not (MODULES[target].name == "__init__.py" and module.startswith(target + "."))
        }
        for module, path in MODULES.items()
    }
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_names_across_modules(module):
    private = [
        f"line {line}: {name} from {target}"
        for target, names, line in _imports(MODULES[module])
        if target != module
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not private, private


def test_the_checker_sees_a_violation(tmp_path):
    """Positive control: an upward, private import and a cycle are caught by the same functions."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from bayescale.inference.fit import _fit\nfrom bayescale.cli import main\n"
        "from bayescale.inference import vhmc\n"
    )
    found = _imports(bad)
    assert ("inference.fit", ["_fit"], 1) in found and ("cli", ["main"], 2) in found
    assert ("inference.vhmc", [], 3) in found
    assert RANK[layer("cli")] > RANK[layer("inference.fit")]
    assert RANK[layer("analysis.forecast")] > RANK[layer("model.laws")]
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter({"a": {"b"}, "b": {"a"}}).prepare()


def test_contributing_states_the_rule_the_test_enforces():
    text = (PACKAGE.parent / "CONTRIBUTING.md").read_text()
    assert "cli, demo > plots > analysis > inference > model > io > base" in text
