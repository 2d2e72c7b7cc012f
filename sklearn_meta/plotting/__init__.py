"""Displays that show what meta-learning did, in scikit-learn's Display pattern.

Each Display holds the numbers it draws. ``from_estimator`` computes them
from a fitted meta-learner and plots them; ``plot(ax=...)`` draws (again) on
any matplotlib axes and returns the Display, whose ``figure_`` and ``ax_``
are the figure and axes drawn on. matplotlib is imported only when a Display
draws, so the rest of sklearn-meta works without it.
"""

from ._adaptation_curve import AdaptationCurveDisplay
from ._embedding import EmbeddingDisplay
from ._meta_training import MetaTrainingDisplay
from ._shot_curve import ShotCurveDisplay

__all__ = [
    "AdaptationCurveDisplay",
    "EmbeddingDisplay",
    "MetaTrainingDisplay",
    "ShotCurveDisplay",
]
