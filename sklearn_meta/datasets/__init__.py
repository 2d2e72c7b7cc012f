"""Datasets for meta-learning: glyphs, Omniglot and sinusoid regression tasks.

Meta-learning needs many training classes, and no dataset shipped with
scikit-learn has them. This module provides:

- :func:`make_glyph_tasks`, procedurally drawn Omniglot-like characters, the
  embedded default data of the library (no download);
- :func:`load_omniglot`, reading the standard Omniglot layout from a folder or
  a zip file, and :func:`fetch_omniglot`, which downloads and caches it in the
  style of scikit-learn's ``fetch_*`` functions;
- :func:`load_image_folder`, any images laid out one folder per class, as
  ``uint8`` (the estimators scale pixels a batch at a time);
- :func:`make_sinusoid_tasks`, the regression benchmark of MAML.

Only numpy and PIL are used here: loading data never imports torch.
"""

from ._glyphs import make_glyph_tasks
from ._images import load_image_folder
from ._omniglot import fetch_omniglot, load_omniglot, omniglot_path
from ._sinusoid import make_sinusoid_tasks

__all__ = [
    "fetch_omniglot",
    "load_image_folder",
    "load_omniglot",
    "make_glyph_tasks",
    "make_sinusoid_tasks",
    "omniglot_path",
]
