"""sklearn-meta: meta-learning as scikit-learn estimators, on PyTorch.

Three estimators learn, from many small tasks, a feature extractor or
classifier that adapts to a new task from a handful of labelled examples:
:class:`MetaMetricClassifier` (prototypical networks with a learned metric),
:class:`MAMLFeatureExtractor` (MAML and its family) and
:class:`LEOTransformer` (Latent Embedding Optimization).
"""

from ._leo import LEOTransformer
from ._maml import MAMLFeatureExtractor
from ._metric import MetaMetricClassifier
from .tasks import TaskCollection

__version__ = "0.1.0.dev0"

__all__ = [
    "LEOTransformer",
    "MAMLFeatureExtractor",
    "MetaMetricClassifier",
    "TaskCollection",
    "__version__",
]
