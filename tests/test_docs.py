"""The documentation lists every public name and is built by the CI command."""

import importlib
import inspect
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))

from api_pages import api_page, public_modules  # noqa: E402


def _documented_objects(page):
    """Objects named by the page's autosummary entries, under their currentmodule."""
    objects, module = [], None
    for line in page.splitlines():
        if line.startswith(".. currentmodule:: "):
            module = importlib.import_module(line.split()[-1])
        elif re.fullmatch(r"   [A-Za-z_]\w*", line) and module is not None:
            objects.append(getattr(module, line.strip()))
    return objects


def test_public_modules_are_found():
    """The walk over the package finds the public modules and skips private ones."""
    names = {module.__name__ for module in public_modules()}
    expected = {"", ".datasets", ".model_selection", ".nn", ".plotting", ".tasks"}
    assert {f"sklearn_meta{suffix}" for suffix in expected} <= names
    assert not any("._" in name for name in names)


def test_every_name_of_every_all_is_on_the_api_page():
    """Each object of a public __all__ has an autosummary entry (its own page)."""
    documented = _documented_objects(api_page())
    for module in public_modules():
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                assert any(obj is d for d in documented), f"{module.__name__}.{name}"
    assert "   plotting" not in api_page()  # entries are names, not modules
    # Each class or function once, under the package that re-exports it.
    classes = [d for d in documented if inspect.isclass(d)]
    assert len(classes) == len({id(c) for c in classes})


def test_readme_test_command_is_the_ci_command():
    """.ci/run runs exactly the README's test command, docs build included."""
    readme = (ROOT / "README.md").read_text().splitlines()
    command = next(line for line in readme if "python -m pytest" in line)
    assert "python -m sphinx -W" in command
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
