"""The package's import graph: layers run one way, and no module takes another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bayescale"

#: bottom to top; a module imports only from modules of a strictly lower layer
LAYERS = [
    ["errors", "version", "files"],
    ["data", "datasets"],
    ["distributions"],
    ["laws"],
    ["priors", "likelihoods", "misfit", "geometry"],
    ["model", "testing"],
    ["diagnostics"],
    ["sampling", "vhmc"],
    ["huber", "hierarchy"],
    ["fit"],
    ["internal", "many"],
    ["allocate"],
    ["forecast", "checks"],
    ["compare"],
    ["stacking", "breaks"],
    ["backtest", "design"],
    ["plots_checks"],
    ["plots"],
    ["demo"],
    ["cli"],
    ["__init__", "__main__"],
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported from, names, line) for every bayescale import in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bayescale"):
            parts = node.module.split(".")
            if len(parts) == 1:  # from bayescale import x: x is a module or a re-export
                for alias in node.names:
                    target = alias.name if (PACKAGE / f"{alias.name}.py").exists() else "__init__"
                    out.append((target, [alias.name], node.lineno))
            else:
                out.append((parts[1], [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "bayescale":
                    out.append(("__init__", [], node.lineno))
                elif alias.name.startswith("bayescale."):
                    out.append((alias.name.split(".")[1], [], node.lineno))
    return out


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))


def test_every_module_has_a_layer():
    assert set(MODULES) <= set(RANK), sorted(set(MODULES) - set(RANK))


@pytest.mark.parametrize("module", MODULES)
def test_layers_run_one_way(module):
    upward = []
    for target, _names, line in _imports(PACKAGE / f"{module}.py"):
        if target == module:
            continue
        if target == "__init__" and module in ("cli", "demo", "__main__"):
            continue  # the command line and the demo sit on the public API
        if RANK[target] >= RANK[module]:
            upward.append(f"line {line}: {module} imports {target}")
    assert not upward, upward


@pytest.mark.parametrize("module", MODULES)
def test_no_private_names_across_modules(module):
    private = [
        f"line {line}: {name} from {target}"
        for target, names, line in _imports(PACKAGE / f"{module}.py")
        if target != module
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not private, private


def test_the_checker_sees_a_violation(tmp_path):
    """Positive control: an upward, private import is caught by the same functions."""
    bad = tmp_path / "bad.py"
    bad.write_text("from bayescale.fit import _fit\nfrom bayescale.cli import main\n")
    found = _imports(bad)
    assert ("fit", ["_fit"], 1) in found and ("cli", ["main"], 2) in found
    assert RANK["cli"] > RANK["fit"]
