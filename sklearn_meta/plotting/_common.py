"""What the Displays share: matplotlib on demand, the meta-learner of a
Pipeline, one seed per curve and the line-with-band they draw."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state


def _pyplot(caller: str):
    """``matplotlib.pyplot``, or an ImportError that says how to get it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            f"{caller} needs matplotlib: pip install matplotlib "
            "(or pip install 'sklearn-meta[plot]')"
        ) from error
    return plt


def _axes(ax, caller: str):
    """``ax``, or the axes of a new figure when ``ax`` is None."""
    if ax is None:
        # Constrained layout keeps the axis labels (and a twin axis's) inside.
        _, ax = _pyplot(caller).subplots(layout="constrained")
    return ax


def _learner(estimator):
    """The step name prefix and the meta-learner of ``estimator`` (or its Pipeline)."""
    if isinstance(estimator, Pipeline):
        name, learner = estimator.steps[-1]
        return f"{name}__", learner
    return "", estimator


def _name(estimator, name) -> str:
    return name if name is not None else type(_learner(estimator)[1]).__name__


def _shared_seed(random_state) -> int:
    """One seed for every point of a curve, so that all see the same episodes."""
    if isinstance(random_state, Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _band(ax, x, mean, ci95, **kwargs):
    """A line with markers and its 95% interval as a shaded band."""
    (line,) = ax.plot(x, mean, marker="o", **kwargs)
    band = ax.fill_between(
        x, mean - ci95, mean + ci95, color=line.get_color(), alpha=0.2
    )
    return line, band
