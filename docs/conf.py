"""Sphinx configuration of the sklearn-meta documentation.

Build: ``python -m sphinx -W -b html docs docs/_build/html`` from the
repository root. Nothing is downloaded: intersphinx is off and the gallery
runs on the embedded synthetic data.
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))
sys.path.insert(0, str(DOCS.parent))

from api_pages import api_sections, write_api_page  # noqa: E402

import sklearn_meta  # noqa: E402

# The gallery draws with Agg; the examples' plt.show() returns at once.
os.environ.setdefault("MPLBACKEND", "Agg")

project = "sklearn-meta"
author = "the sklearn-meta developers"
copyright = "2026, the sklearn-meta developers"
release = sklearn_meta.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "README.md", "**.ipynb_checkpoints"]
html_theme = "alabaster"
html_theme_options = {
    "description": "Meta-learning as scikit-learn estimators",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
}
html_static_path = ["_static"]
pygments_style = "sphinx"

# -- API reference: one page per public name, from the modules' __all__ --------
write_api_page(DOCS / "api.rst")
autosummary_generate = True
autodoc_inherit_docstrings = False  # torch's generic forward() text says nothing here
autodoc_typehints = "none"  # numpydoc's Parameters section says the types
add_module_names = False
# Every cross-reference must resolve. Without intersphinx (no network at build
# time) other libraries' names cannot: they stay plain code.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(sklearn|torch|skorch|numpy|matplotlib|joblib)(\..*)?"),
    # Fitted properties of the private estimator base class, named in the
    # estimators' Attributes sections.
    (r"py:obj", r"module_|history_"),
    (r"py:class", r"sklearn_meta\.nn\.losses\..*"),
]

# -- numpydoc: every public object documented, every parameter described ------
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = {
    "GL08",  # the object has no docstring
    "PR01",  # a parameter is not documented
    "PR02",  # a documented parameter does not exist
    "PR07",  # a parameter has no description
    "RT03",  # a Returns entry has no description
    "SS01",  # no summary line
}
# torch's forward() hooks and dataclass fields come from other libraries.
numpydoc_validation_exclude = {r"\.__init__$", r"\.__call__$"}
numpydoc_xref_param_type = False

# -- Markdown -------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- Gallery: every example runs once, here ----------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(DOCS.parent / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("sklearn_meta",),
    "backreferences_dir": "generated/backreferences",
    "min_reported_time": 1,
    "show_memory": False,
    # Printed output only: no repr of a cell's last value (a Display object).
    "capture_repr": (),
}

# -- Pages written by other authors, included once they exist -----------------
OPTIONAL_GUIDE_PAGES = ("architecture", "scaling")
_MARKER = "<!-- optional guide pages -->"


def _add_optional_pages(app, docname, source):
    """Put the optional guide pages that exist into the user guide's toctree."""
    if docname == "user_guide":
        present = [p for p in OPTIONAL_GUIDE_PAGES if (DOCS / f"{p}.md").exists()]
        source[0] = source[0].replace(_MARKER, "\n".join(present))


def _check_every_name_has_a_page(app, exception):
    """Warn (an error under -W) for a public name whose API page was not built."""
    if exception is not None or app.builder.format != "html":
        return
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    for module, names in api_sections():
        for name in names:
            page = Path(app.outdir) / "generated" / f"{module.__name__}.{name}.html"
            if not page.exists():
                logger.warning(f"no API page for {module.__name__}.{name}: {page}")


def _skip_metadata_request_methods(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated ``set_*_request`` methods.

    scikit-learn writes and documents them (metadata routing); their
    docstrings point into scikit-learn's own glossary.
    """
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_metadata_request_methods)
    app.connect("source-read", _add_optional_pages)
    app.connect("build-finished", _check_every_name_has_a_page)
