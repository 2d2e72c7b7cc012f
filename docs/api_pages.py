"""Write the API reference page from the ``__all__`` of every public module.

``conf.py`` calls :func:`write_api_page` at every build, so a name added to
an ``__all__``, or a new public module, gets its page without anyone editing
the docs; ``tests/test_docs.py`` checks the generated page lists them all.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

PACKAGE = "sklearn_meta"


def public_modules() -> list:
    """The package and every module of it whose dotted name has no ``_`` part.

    Ordered by depth, then name, so that a name re-exported by a package
    (``sklearn_meta.nn.MAML``) is documented there, not in its submodule.
    """
    package = importlib.import_module(PACKAGE)
    names = [PACKAGE] + [
        info.name
        for info in pkgutil.walk_packages(package.__path__, f"{PACKAGE}.")
        if not any(part.startswith("_") for part in info.name.split("."))
    ]
    modules = [importlib.import_module(name) for name in names]
    return sorted(modules, key=lambda m: (m.__name__.count("."), m.__name__))


def api_sections() -> list[tuple[object, list[str]]]:
    """``(module, names)`` for every public module with names of its own.

    A class or function appears once, under the first module (in
    :func:`public_modules` order) whose ``__all__`` has it; the other
    modules that re-export it link to that page.
    """
    documented: set[int] = set()
    sections = []
    for module in public_modules():
        names = []
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                if id(obj) in documented:
                    continue
                documented.add(id(obj))
            names.append(name)
        if names:
            sections.append((module, names))
    return sections


def api_page() -> str:
    """The reStructuredText of the API reference page."""
    lines = [
        ".. This page is written by docs/api_pages.py at every build; do not edit.",
        "",
        "API reference",
        "=============",
        "",
        "Every name of every public module's ``__all__``. A name that a package",
        "re-exports from one of its modules is listed once, under the package.",
        "",
    ]
    for module, names in api_sections():
        title = f":mod:`{module.__name__}`"
        lines += [
            title,
            "-" * len(title),
            "",
            f".. automodule:: {module.__name__}",
            "   :no-members:",
            "",
            f".. currentmodule:: {module.__name__}",
            "",
            ".. autosummary::",
            "   :toctree: generated/",
            "",
        ]
        lines += [f"   {name}" for name in names]
        lines.append("")
    return "\n".join(lines)


def write_api_page(path: Path) -> None:
    """Write :func:`api_page` to ``path`` unless it already says the same."""
    text = api_page()
    # An unchanged file keeps its timestamp, so Sphinx does not rebuild it.
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
