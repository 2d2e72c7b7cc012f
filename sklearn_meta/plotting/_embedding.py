"""EmbeddingDisplay: a 2-D map of the learned features of new classes."""

from __future__ import annotations

import copy

import numpy as np
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from sklearn.utils.validation import column_or_1d

from ._common import _axes, _pyplot


class EmbeddingDisplay:
    """A 2-D map of the learned features of new classes.

    The estimator's ``transform`` output for samples of classes it never saw,
    projected to two dimensions (PCA by default), one colour per class, the
    support samples it adapted on marked by stars. Classes that form
    separate clusters are what a few examples can tell apart.

    Parameters
    ----------
    embedding : array-like of shape (n_samples, 2)
        The projected features.
    labels : array-like of shape (n_samples,)
        Class of each sample.
    is_support : array-like of bool of shape (n_samples,) or None, default=None
        Which samples were support samples.
    axis_names : tuple of str, default=("PC 1", "PC 2")
        Axis labels.

    Attributes
    ----------
    scatters_ : list of matplotlib PathCollection
        The points of each class, in the order of ``numpy.unique(labels)``.
    support_scatters_ : list of matplotlib PathCollection
        The support samples of each class.
    ax_ : matplotlib Axes
        The axes drawn on.
    figure_ : matplotlib Figure
        The figure of ``ax_``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_meta.plotting import EmbeddingDisplay
    >>> display = EmbeddingDisplay(
    ...     embedding=[[0, 0], [0, 1], [5, 5], [5, 6]], labels=[0, 0, 1, 1],
    ...     is_support=[True, False, True, False],
    ... ).plot()
    >>> len(display.scatters_)
    2
    """

    def __init__(self, *, embedding, labels, is_support=None, axis_names=None):
        self.embedding = embedding
        self.labels = labels
        self.is_support = is_support
        self.axis_names = axis_names

    def plot(self, ax=None):
        """Draw the points, one colour per class, support samples as stars.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when None.

        Returns
        -------
        display : EmbeddingDisplay
            ``self``, with the artists, ``ax_`` and ``figure_``.
        """
        ax = _axes(ax, "EmbeddingDisplay.plot")
        points = np.asarray(self.embedding, dtype=float)
        labels = np.asarray(self.labels)
        is_support = (
            np.zeros(len(labels), dtype=bool)
            if self.is_support is None
            else np.asarray(self.is_support, dtype=bool)
        )
        self.scatters_, self.support_scatters_ = [], []
        for colour, label in enumerate(np.unique(labels)):
            mine = labels == label
            self.scatters_.append(
                ax.scatter(
                    *points[mine & ~is_support].T,
                    s=14,
                    color=f"C{colour % 10}",
                    alpha=0.6,
                    label=str(label),
                )
            )
            self.support_scatters_.append(
                ax.scatter(
                    *points[mine & is_support].T,
                    s=90,
                    color=f"C{colour % 10}",
                    marker="*",
                    edgecolor="black",
                    linewidth=0.6,
                )
            )
        x_name, y_name = self.axis_names or ("PC 1", "PC 2")
        ax.set_xlabel(x_name)
        ax.set_ylabel(y_name)
        ax.legend(title="class (stars: support)", fontsize="small")
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        y,
        *,
        k_shot=1,
        adapt=True,
        projection=None,
        random_state=None,
        ax=None,
    ):
        """Embed samples of new classes with a fitted meta-learner and map them.

        ``k_shot`` samples per class are drawn as the support set. With
        ``adapt=True`` a copy of ``estimator`` adapts to them (``partial_fit``)
        before every sample goes through ``transform``, so the map shows the
        features of the adapted model; ``estimator`` itself is left unchanged.

        Parameters
        ----------
        estimator : fitted meta-learner or Pipeline
            A sklearn-meta estimator, or a ``Pipeline`` ending in one.
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples of the classes to map; a few classes (up to the estimator's
            ``n_way`` when it adapts) read best.
        y : array-like of shape (n_samples,)
            Their classes; each needs more than ``k_shot`` samples.
        k_shot : int, default=1
            Support samples drawn per class.
        adapt : bool, default=True
            Whether to adapt a copy of the estimator on the support samples
            before embedding.
        projection : transformer or None, default=None
            An unfitted scikit-learn transformer to 2-D (``fit_transform``),
            cloned before use; ``PCA(n_components=2)`` when None.
        random_state : int, RandomState instance or None, default=None
            Seeds the choice of support samples.
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when None.

        Returns
        -------
        display : EmbeddingDisplay
            The plotted display.
        """
        _pyplot("EmbeddingDisplay.from_estimator")
        y = column_or_1d(np.asarray(y))
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() <= k_shot:
            raise ValueError(
                f"class {classes[counts.argmin()]!r} has {counts.min()} samples, "
                f"not more than k_shot={k_shot}; lower k_shot"
            )
        rng = check_random_state(random_state)
        is_support = np.zeros(len(y), dtype=bool)
        for label in classes:
            is_support[
                rng.choice(np.flatnonzero(y == label), k_shot, replace=False)
            ] = True
        learner = estimator
        if adapt:
            learner = copy.deepcopy(estimator)
            transformers, last = (
                (learner[:-1], learner[-1])
                if isinstance(learner, Pipeline)
                else (None, learner)
            )
            support = (X if hasattr(X, "shape") else np.asarray(X))[is_support]
            if transformers is not None:
                support = transformers.transform(support)
            last.reset_adaptation()
            last.partial_fit(support, y[is_support])
        features = learner.transform(X)
        projection = PCA(n_components=2) if projection is None else clone(projection)
        embedding = projection.fit_transform(features)
        names = None
        if not isinstance(projection, PCA):
            names = (
                f"{type(projection).__name__} 1",
                f"{type(projection).__name__} 2",
            )
        display = cls(
            embedding=embedding, labels=y, is_support=is_support, axis_names=names
        )
        return display.plot(ax=ax)
