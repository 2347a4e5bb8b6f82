"""Sphinx configuration of the bayescale documentation.

Build with warnings as errors (as ``make docs`` does)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

Three things are generated here at build time, so that the site follows the code without
hand-kept lists:

* ``docs/api.md`` documents every name in ``bayescale.__all__``, grouped by the module that
  defines it, plus the public submodules (``bayescale.plots``, ``bayescale.io.datasets``,
  ``bayescale.inference.diagnostics``) that exist. A name added to ``__all__`` appears on the next
  build.
* ``docs/notebooks/`` receives copies of ``notebooks/*.ipynb``; the Notebooks page lists those
  present, so notebooks that are not written yet do not break the build.
* Notebooks are committed executed, with their figures; the build renders those stored
  outputs (``nb_execution_mode = "off"``). ``BAYESCALE_DOCS_EXECUTE`` re-executes them in the
  build instead: ``1`` or ``cache`` through the jupyter-cache (re-run only when a notebook
  changes), ``force`` re-runs all.

Generated files are listed in ``docs/.gitignore``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the package is installed editable; this only helps a bare checkout

import bayescale  # noqa: E402

# -- Project -----------------------------------------------------------------------------------

project = "bayescale"
author = "the bayescale developers"
copyright = "the bayescale developers"
release = bayescale.__version__
version = ".".join(release.split(".")[:2])

# -- Extensions --------------------------------------------------------------------------------

extensions = [
    "myst_nb",  # MyST Markdown pages and Jupyter notebooks (includes myst_parser)
    "sphinx.ext.autodoc",
    "numpydoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "**.ipynb_checkpoints",
    "README.md",
    "_static/*.md",  # fragments included by pages
]
# `text` in docstrings links to the Python object when one exists (silent otherwise)
default_role = "py:obj"

# -- MyST ----------------------------------------------------------------------------------

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- Notebooks (myst-nb) -----------------------------------------------------------------------

_EXECUTE = os.environ.get("BAYESCALE_DOCS_EXECUTE", "").strip().lower()
if _EXECUTE in ("", "0", "off", "no", "false"):
    nb_execution_mode = "off"  # render the outputs stored in the committed notebooks
elif _EXECUTE == "force":
    nb_execution_mode = "force"
else:  # "1", "cache", anything else that asks for execution
    nb_execution_mode = "cache"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
if nb_execution_mode != "off":
    # the kernel inherits this environment: four host devices so that four chains run in
    # parallel, as the CLI and the tests do (it must be set before JAX is imported)
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    # notebooks run from the copies in docs/notebooks/, so relative paths would differ from
    # notebooks/: point the dataset loader at the reference data instead
    if (ROOT.parent / "shared" / "data").is_dir():
        os.environ.setdefault("BAYESCALE_DATA", str(ROOT.parent / "shared" / "data"))

#: notebook names the Notebooks page expects, in reading order; any other notebook follows
NOTEBOOKS = (
    "01_quickstart",
    "02_extrapolation_risk",
    "03_checking_new_runs",
    "04_scaling_breaks",
    "05_many_curves",
    "06_experiment_design",
)


def _copy_notebooks() -> list[str]:
    """Mirror ``notebooks/*.ipynb`` into ``docs/notebooks/``; return the stems, ordered."""
    source, target = ROOT / "notebooks", DOCS / "notebooks"
    found = {p.stem: p for p in sorted(source.glob("*.ipynb"))} if source.is_dir() else {}
    target.mkdir(exist_ok=True)
    for stale in target.glob("*.ipynb"):
        if stale.stem not in found:
            stale.unlink()
    for path in found.values():
        dest = target / path.name
        if not dest.exists() or dest.read_bytes() != path.read_bytes():
            shutil.copy2(path, dest)  # keeps the mtime: unchanged notebooks are not re-read
    known = [s for s in NOTEBOOKS if s in found]
    return known + sorted(s for s in found if s not in NOTEBOOKS)


NOTEBOOK_STEMS = _copy_notebooks()
NOTEBOOK_MARKER = "<!-- notebooks: filled in by conf.py -->"


def _notebook_listing() -> str:
    if not NOTEBOOK_STEMS:
        return (
            ":::{note}\nNo notebooks are in `notebooks/` yet. They appear here as soon as "
            "they are added; nothing in this page needs editing.\n:::\n"
        )
    entries = "\n".join(f"notebooks/{stem}" for stem in NOTEBOOK_STEMS)
    return f"```{{toctree}}\n:maxdepth: 1\n\n{entries}\n```\n"


# -- API page generated from bayescale.__all__ -------------------------------------------------

#: section title of each defining module, in the layer order (top of the stack last)
SECTIONS = {
    "bayescale.errors": "Errors and warnings",
    "bayescale.io.data": "Data",
    "bayescale.model.laws": "Laws",
    "bayescale.model.priors": "Priors",
    "bayescale.model.likelihoods": "Observation models (likelihoods)",
    "bayescale.model.misfit": "The law's misfit",
    "bayescale.model.build": "Model",
    "bayescale.inference.diagnostics": "Diagnostics",
    "bayescale.inference.fit": "Fitting",
    "bayescale.inference.many": "Many curves at once",
    "bayescale.analysis.forecast": "Forecasting",
    "bayescale.analysis.allocate": "Compute-optimal allocation",
    "bayescale.analysis.compare": "Model comparison",
    "bayescale.analysis.stacking": "Stacking",
    "bayescale.analysis.breaks": "Scaling breaks",
    "bayescale.analysis.checks": "Checking new runs",
    "bayescale.analysis.backtest": "Backtesting extrapolation",
    "bayescale.analysis.design": "Experiment design: which run next",
    "bayescale.model.simulation": "Simulation",
    "bayescale.io.datasets": "Datasets",
    "bayescale.plots": "Plots",
}

#: public submodules documented under their own names when they exist
SUBMODULES = ("bayescale.plots", "bayescale.io.datasets", "bayescale.inference.diagnostics")


#: descriptions of public data objects whose defining module has no ``#:`` comment for them
DATA_FALLBACK = {
    "LAWS": (
        "The registry of scaling laws: name -> `bayescale.Law`. Filled with the built-in laws at "
        "import; `bayescale.register_law` adds to it. ``print(bayescale.LAWS)`` lists each law "
        "with its formula."
    ),
}


def _data_doc(name: str, obj: object) -> str:
    """Return the ``#:`` comment of a module-level data object from its defining module."""
    from sphinx.errors import PycodeError
    from sphinx.pycode import ModuleAnalyzer

    for module_name in sorted(m for m in sys.modules if m.split(".")[0] == "bayescale"):
        if getattr(sys.modules[module_name], name, None) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
        except PycodeError:
            continue
        if ("", name) in docs:
            return "\n".join(docs[("", name)]).strip()
    return DATA_FALLBACK.get(name, "")


def _entry(qualname: str, obj: object) -> str:
    """Return the autodoc directive for one public object."""
    if inspect.isclass(obj):
        options = ":show-inheritance:"
        if not issubclass(obj, BaseException):
            options = ":members:\n   " + options
        return f".. autoclass:: {qualname}\n   {options}\n"
    if callable(obj):
        return f".. autofunction:: {qualname}\n"
    # data: autodoc would look for the comment in the re-exporting module, so write it out
    doc = _data_doc(qualname.rsplit(".", 1)[-1], obj)
    body = "\n".join("   " + line if line else "" for line in doc.splitlines())
    return f".. py:data:: {qualname}\n\n{body}\n"


def _module_of(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    if not isinstance(module, str) or not module.startswith("bayescale"):
        # data objects (dicts, mappings) carry no module: find the one that defines the name
        for name in sorted(m for m in sys.modules if m.startswith("bayescale.")):
            if any(
                getattr(sys.modules[name], n, None) is obj
                for n in getattr(sys.modules[name], "__all__", [])
            ):
                return name
        return "bayescale"
    return module


def _order(module: str, name: str) -> tuple[int, str]:
    """Sort key: the defining module's ``__all__`` order first, then alphabetical."""
    names = list(getattr(sys.modules.get(module), "__all__", []))
    return (names.index(name) if name in names else len(names), name.lower())


def _api_page() -> str:
    groups: dict[str, list[tuple[str, object]]] = {}
    documented: set[int] = set()
    submodules = list(SUBMODULES)
    for name in bayescale.__all__:
        obj = getattr(bayescale, name)
        if inspect.ismodule(obj):  # a submodule re-exported by name: its own section below
            if obj.__name__ not in submodules:
                submodules.append(obj.__name__)
            continue
        groups.setdefault(_module_of(obj), []).append((name, obj))
        documented.add(id(obj))
    for module, items in groups.items():
        items.sort(key=lambda item, m=module: _order(m, item[0]))

    order = list(SECTIONS) + sorted(m for m in groups if m not in SECTIONS)
    lines = [
        "# API reference",
        "",
        "Every public name is importable from the top-level package (`import bayescale as bs`)."
        " This page is generated at build time from `bayescale.__all__`, grouped by the module"
        " that defines each name, in the package's layer order.",
        "",
    ]
    for module in order:
        if module not in groups:
            continue
        lines += [f"## {SECTIONS.get(module, module)}", "", "```{eval-rst}"]
        lines += [_entry(f"bayescale.{n}", o) for n, o in groups[module]]
        lines += ["```", ""]

    extra = []
    for module_name in submodules:
        if importlib.util.find_spec(module_name) is None:
            continue  # not written yet: documented once it exists
        module = importlib.import_module(module_name)  # a broken module must fail the build
        names = [
            n for n in getattr(module, "__all__", []) if id(getattr(module, n)) not in documented
        ]
        if not names:
            continue
        title = SECTIONS.get(module_name, module_name)
        extra += [f"### `{module_name}`: {title.lower()}", "", "```{eval-rst}"]
        extra += [f".. automodule:: {module_name}\n   :no-members:\n"]
        names.sort(key=lambda n, m=module_name: _order(m, n))
        extra += [_entry(f"{module_name}.{n}", getattr(module, n)) for n in names]
        extra += ["```", ""]
    if extra:
        lines += [
            "## Submodules",
            "",
            "Public modules whose functions are called through the module, for example "
            "`bayescale.io.datasets.load_dataset`.",
            "",
        ] + extra
    return "\n".join(lines)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


_write_if_changed(DOCS / "api.md", _api_page())

# -- autodoc and numpydoc ----------------------------------------------------------------------

autodoc_typehints = "none"  # numpydoc Parameters sections carry the types
autodoc_member_order = "bysource"
autodoc_default_options = {"exclude-members": "__init__, __new__"}
autoclass_content = "class"
numpydoc_show_class_members = False  # autodoc :members: lists them once
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- HTML --------------------------------------------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = f"bayescale {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_static_path: list[str] = []


def _fill_notebooks(app, docname, source):  # type: ignore[no-untyped-def]
    if docname == "notebooks":
        source[0] = source[0].replace(NOTEBOOK_MARKER, _notebook_listing())


def _always_reread_notebooks(app, env, added, changed, removed):  # type: ignore[no-untyped-def]
    return ["notebooks"]  # its listing depends on notebooks/, which Sphinx does not watch


def _resolve_reexport(app, env, node, contnode):  # type: ignore[no-untyped-def]
    """Link ``bayescale.<module>.<name>`` to its documented re-export ``bayescale.<name>``."""
    target = node.get("reftarget", "")
    parts = target.split(".")
    if node.get("refdomain") != "py" or len(parts) < 3 or parts[0] != "bayescale":
        return None
    name = parts[-1]
    if name not in bayescale.__all__:
        return None
    try:
        defined = getattr(importlib.import_module(".".join(parts[:-1])), name)
    except (ImportError, AttributeError):
        return None
    if defined is not getattr(bayescale, name):
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], f"bayescale.{name}", node, contnode
    )


def setup(app):  # type: ignore[no-untyped-def]
    """Fill the notebook listing and link module paths of re-exported names."""
    app.connect("source-read", _fill_notebooks)
    app.connect("env-get-outdated", _always_reread_notebooks)
    app.connect("missing-reference", _resolve_reexport)
    return {"parallel_read_safe": True}
