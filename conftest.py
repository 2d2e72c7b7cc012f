"""Root pytest configuration: applies to the doctests of the package too."""

import pytest


def pytest_collection_modifyitems(config, items):
    """Skip the load_omniglot doctest where the Omniglot data is absent, as the tests do."""
    from sklearn_meta.datasets import omniglot_path

    if omniglot_path().exists():
        return
    skip = pytest.mark.skip(
        reason="Omniglot data not found: set SKLEARN_META_OMNIGLOT to a folder or zip"
    )
    for item in items:
        if item.name == "sklearn_meta.datasets._omniglot.load_omniglot":
            item.add_marker(skip)
