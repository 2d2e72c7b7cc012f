"""The one-way imports of docs/architecture.md."""

import ast
from pathlib import Path

import sklearn_meta

PACKAGE = Path(sklearn_meta.__file__).parent


def imported_modules(path):
    """Absolute names of the modules ``path`` imports (relative ones resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_nn_imports_neither_scikit_learn_nor_the_estimators():
    """sklearn_meta.nn is pure PyTorch: nothing from scikit-learn, skorch or
    the estimator modules."""
    for path in (PACKAGE / "nn").glob("*.py"):
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top not in ("sklearn", "skorch"), (path.name, name)
            if top == "sklearn_meta":
                assert name.startswith("sklearn_meta.nn"), (path.name, name)


def test_algorithm_and_executors_do_not_know_each_other():
    """The algorithm imports no executor; an executor imports no algorithm."""
    algorithms = ("sklearn_meta.nn.maml", "sklearn_meta.nn.leo")
    maml = imported_modules(PACKAGE / "nn" / "maml.py")
    assert not any(name.startswith("sklearn_meta.nn.executors") for name in maml)
    executors = imported_modules(PACKAGE / "nn" / "executors.py")
    assert not any(name.startswith(algorithms) for name in executors)
