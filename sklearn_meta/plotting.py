"""Displays that show what meta-learning did, in scikit-learn's Display pattern.

Each Display holds the numbers it draws. ``from_estimator`` computes them
from a fitted meta-learner and plots them; ``plot(ax=...)`` draws (again) on
any matplotlib axes and returns the Display, whose ``figure_`` and ``ax_``
are the figure and axes drawn on. matplotlib is imported only when a Display
draws, so the rest of sklearn-meta works without it.
"""

from __future__ import annotations

import copy
import warnings
from numbers import Integral

import numpy as np
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d

from .model_selection import evaluate_few_shot, evaluate_nearest_centroid

__all__ = [
    "AdaptationCurveDisplay",
    "EmbeddingDisplay",
    "MetaTrainingDisplay",
    "ShotCurveDisplay",
]

#: The parameter that counts an estimator's gradient steps at adaptation, in
#: order of preference: MAML's ``adapt_steps``, then the fine-tuning steps of
#: LEO and of the metric classifier.
_STEP_PARAMETERS = ("adapt_steps", "finetune_steps")


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


class AdaptationCurveDisplay:
    """Few-shot score against the number of gradient steps at adaptation.

    How much a new task gains from each gradient step of adaptation: MAML's
    ``adapt_steps``, or the ``finetune_steps`` of :class:`~sklearn_meta.LEOTransformer`
    and :class:`~sklearn_meta.MetaMetricClassifier`. Accuracy for
    classification, mean squared error for regression, each with its 95%
    confidence interval over the episodes as a band.

    Create it with :meth:`from_estimator`; the constructor takes numbers
    computed elsewhere.

    Parameters
    ----------
    steps : array-like of shape (n_points,)
        Numbers of adaptation steps.
    scores : array-like of shape (n_points,)
        Mean few-shot accuracy (or MSE) at each number of steps.
    ci95 : array-like of shape (n_points,)
        Half-width of the 95% confidence interval of each mean.
    score_name : str, default="accuracy"
        What ``scores`` are, for the y-axis label.
    param_name : str, default="adapt_steps"
        The parameter that was varied, for the x-axis label.
    estimator_name : str or None, default=None
        Legend label of the curve; no legend when None.

    Attributes
    ----------
    line_ : matplotlib Line2D
        The curve.
    fill_between_ : matplotlib PolyCollection
        The 95% band.
    ax_ : matplotlib Axes
        The axes drawn on.
    figure_ : matplotlib Figure
        The figure of ``ax_``.

    See Also
    --------
    ShotCurveDisplay : few-shot accuracy against the number of shots.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_meta.plotting import AdaptationCurveDisplay
    >>> display = AdaptationCurveDisplay(
    ...     steps=[0, 1, 5], scores=[0.4, 0.6, 0.7], ci95=[0.02, 0.02, 0.02]
    ... ).plot()
    >>> display.line_.get_ydata().tolist()
    [0.4, 0.6, 0.7]
    """

    def __init__(
        self,
        *,
        steps,
        scores,
        ci95,
        score_name="accuracy",
        param_name="adapt_steps",
        estimator_name=None,
    ):
        self.steps = steps
        self.scores = scores
        self.ci95 = ci95
        self.score_name = score_name
        self.param_name = param_name
        self.estimator_name = estimator_name

    def plot(self, ax=None, *, name=None, **kwargs):
        """Draw the curve and its band.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when None.
        name : str or None, default=None
            Legend label; ``estimator_name`` when None.
        **kwargs : dict
            Passed to ``ax.plot`` for the curve.

        Returns
        -------
        display : AdaptationCurveDisplay
            ``self``, with ``line_``, ``fill_between_``, ``ax_`` and ``figure_``.
        """
        ax = _axes(ax, "AdaptationCurveDisplay.plot")
        name = self.estimator_name if name is None else name
        self.line_, self.fill_between_ = _band(
            ax,
            np.asarray(self.steps),
            np.asarray(self.scores, dtype=float),
            np.asarray(self.ci95, dtype=float),
            label=name,
            **kwargs,
        )
        ax.set_xlabel(f"adaptation steps ({self.param_name})")
        ax.set_ylabel(f"few-shot {self.score_name}")
        if name is not None:
            ax.legend()
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        y,
        *,
        steps=None,
        param_name=None,
        groups=None,
        n_way=5,
        k_shot=1,
        n_query=15,
        n_episodes=100,
        random_state=None,
        ax=None,
        name=None,
    ):
        """Evaluate a fitted meta-learner at several numbers of adaptation steps.

        For each number of steps, a copy of ``estimator`` gets it through
        ``set_params`` and is scored by
        :func:`~sklearn_meta.model_selection.evaluate_few_shot` on the same
        episodes. ``estimator`` itself is left unchanged. When every episode
        scores the same at every number of steps, the estimator did not read
        the parameter at adaptation, and a ``UserWarning`` says so.

        Parameters
        ----------
        estimator : fitted meta-learner or Pipeline
            A sklearn-meta estimator, or a ``Pipeline`` ending in one.
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples of classes (or tasks) not seen in training.
        y : array-like of shape (n_samples,)
            Their classes, or regression targets with ``groups``.
        steps : sequence of int, default=None
            Numbers of adaptation steps to evaluate. None is ``(0, 1, 2, 5,
            10)``, without 0 for MAML's classification, which refuses zero
            steps (its head starts with every class equal).
        param_name : str or None, default=None
            The parameter to vary. None picks ``adapt_steps`` when the
            meta-learner has it (MAML), else ``finetune_steps`` (LEO, the
            metric classifier).
        groups : array-like of shape (n_samples,), default=None
            Task ids, for regression tasks.
        n_way : int, default=5
            Classes per episode.
        k_shot : int, default=1
            Support examples per class.
        n_query : int, default=15
            Query examples per class.
        n_episodes : int, default=100
            Episodes per number of steps.
        random_state : int, RandomState instance or None, default=None
            Seeds the episodes; every number of steps sees the same ones.
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when None.
        name : str or None, default=None
            Legend label; the meta-learner's class name when None.

        Returns
        -------
        display : AdaptationCurveDisplay
            The plotted display.
        """
        _pyplot("AdaptationCurveDisplay.from_estimator")
        prefix, learner = _learner(estimator)
        check_is_fitted(learner)
        if param_name is None:
            params = learner.get_params()
            found = [p for p in _STEP_PARAMETERS if p in params]
            if not found:
                raise ValueError(
                    f"{type(learner).__name__} has none of the step parameters "
                    f"{_STEP_PARAMETERS}; pass param_name"
                )
            param_name = found[0]
        seed = _shared_seed(random_state)
        regression = type_of_target(column_or_1d(y)) == "continuous"
        if steps is None:
            refuses_zero = param_name == "adapt_steps" and not regression
            steps = (1, 2, 5, 10) if refuses_zero else (0, 1, 2, 5, 10)
        results = []
        for n_steps in steps:
            candidate = copy.deepcopy(estimator)
            candidate.set_params(**{prefix + param_name: n_steps})
            results.append(
                evaluate_few_shot(
                    candidate,
                    X,
                    y,
                    groups=groups,
                    n_way=n_way,
                    k_shot=k_shot,
                    n_query=n_query,
                    n_episodes=n_episodes,
                    random_state=seed,
                )
            )
        if len(results) > 1 and all(
            np.array_equal(r.scores, results[0].scores) for r in results
        ):
            warnings.warn(
                f"every episode scored the same whatever {param_name} was: "
                f"{type(learner).__name__} does not read {param_name} at "
                "adaptation (it may fix it at fit), so the curve is flat",
                UserWarning,
                stacklevel=2,
            )
        # Regression scores are negative MSE; the curve shows the MSE itself.
        sign = -1.0 if regression else 1.0
        display = cls(
            steps=np.asarray(steps),
            scores=np.array([sign * r.mean for r in results]),
            ci95=np.array([r.ci95 for r in results]),
            score_name="MSE" if regression else "accuracy",
            param_name=param_name,
            estimator_name=_name(estimator, name),
        )
        return display.plot(ax=ax)


class ShotCurveDisplay:
    """Few-shot accuracy against the number of shots, next to raw features.

    The meta-learner's accuracy on new classes at each k-shot, and the
    accuracy of nearest centroids on the raw features (the baseline it must
    beat) on the same episodes, each with its 95% confidence band.

    Parameters
    ----------
    shots : array-like of shape (n_points,)
        Support examples per class.
    scores : array-like of shape (n_points,)
        Mean few-shot accuracy of the meta-learner at each k-shot.
    ci95 : array-like of shape (n_points,)
        Half-width of the 95% confidence interval of each mean.
    baseline_scores : array-like of shape (n_points,) or None, default=None
        Mean accuracy of nearest centroids on the raw features.
    baseline_ci95 : array-like of shape (n_points,) or None, default=None
        Their 95% interval half-widths.
    n_way : int, default=5
        Classes per episode, for the axis label.
    estimator_name : str, default="meta-learned"
        Legend label of the meta-learner's curve.

    Attributes
    ----------
    line_ : matplotlib Line2D
        The meta-learner's curve.
    fill_between_ : matplotlib PolyCollection
        Its 95% band.
    baseline_line_ : matplotlib Line2D or None
        The baseline's curve.
    baseline_fill_between_ : matplotlib PolyCollection or None
        Its 95% band.
    ax_ : matplotlib Axes
        The axes drawn on.
    figure_ : matplotlib Figure
        The figure of ``ax_``.

    See Also
    --------
    sklearn_meta.model_selection.evaluate_nearest_centroid : the baseline.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_meta.plotting import ShotCurveDisplay
    >>> display = ShotCurveDisplay(
    ...     shots=[1, 5], scores=[0.8, 0.9], ci95=[0.01, 0.01],
    ...     baseline_scores=[0.5, 0.7], baseline_ci95=[0.01, 0.01],
    ... ).plot()
    >>> display.baseline_line_.get_ydata().tolist()
    [0.5, 0.7]
    """

    def __init__(
        self,
        *,
        shots,
        scores,
        ci95,
        baseline_scores=None,
        baseline_ci95=None,
        n_way=5,
        estimator_name="meta-learned",
    ):
        self.shots = shots
        self.scores = scores
        self.ci95 = ci95
        self.baseline_scores = baseline_scores
        self.baseline_ci95 = baseline_ci95
        self.n_way = n_way
        self.estimator_name = estimator_name

    def plot(self, ax=None, *, name=None):
        """Draw the meta-learner's curve and the baseline's.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when None.
        name : str or None, default=None
            Legend label of the meta-learner; ``estimator_name`` when None.

        Returns
        -------
        display : ShotCurveDisplay
            ``self``, with the artists, ``ax_`` and ``figure_``.
        """
        ax = _axes(ax, "ShotCurveDisplay.plot")
        shots = np.asarray(self.shots)
        self.line_, self.fill_between_ = _band(
            ax,
            shots,
            np.asarray(self.scores, dtype=float),
            np.asarray(self.ci95, dtype=float),
            label=self.estimator_name if name is None else name,
        )
        self.baseline_line_ = self.baseline_fill_between_ = None
        if self.baseline_scores is not None:
            baseline_ci95 = (
                np.zeros(len(shots))
                if self.baseline_ci95 is None
                else np.asarray(self.baseline_ci95, dtype=float)
            )
            self.baseline_line_, self.baseline_fill_between_ = _band(
                ax,
                shots,
                np.asarray(self.baseline_scores, dtype=float),
                baseline_ci95,
                linestyle="--",
                color="grey",
                label="nearest centroid, raw features",
            )
        ax.set_xscale("log")
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.minorticks_off()
        ax.set_xlabel("shots (support examples per class)")
        ax.set_ylabel(f"{self.n_way}-way accuracy on new classes")
        ax.legend()
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_estimator(
        cls,
        estimator,
        X,
        y,
        *,
        shots=(1, 2, 5, 10),
        baseline=True,
        n_way=5,
        n_query=15,
        n_episodes=100,
        random_state=None,
        ax=None,
        name=None,
    ):
        """Evaluate a fitted meta-learner, and the baseline, at several k-shots.

        Parameters
        ----------
        estimator : fitted meta-learner or Pipeline
            A sklearn-meta classifier or transformer, or a ``Pipeline`` ending
            in one.
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples of classes not seen in training.
        y : array-like of shape (n_samples,)
            Their classes; each needs ``max(shots) + n_query`` samples.
        shots : sequence of int, default=(1, 2, 5, 10)
            Support examples per class to evaluate.
        baseline : bool, default=True
            Whether to evaluate nearest centroids on the raw ``X`` too, on the
            same episodes.
        n_way : int, default=5
            Classes per episode.
        n_query : int, default=15
            Query examples per class.
        n_episodes : int, default=100
            Episodes per k-shot.
        random_state : int, RandomState instance or None, default=None
            Seeds the episodes.
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when None.
        name : str or None, default=None
            Legend label; the meta-learner's class name when None.

        Returns
        -------
        display : ShotCurveDisplay
            The plotted display.
        """
        _pyplot("ShotCurveDisplay.from_estimator")
        seed = _shared_seed(random_state)
        learned, pixels = [], []
        for k_shot in shots:
            common = dict(
                n_way=n_way,
                k_shot=k_shot,
                n_query=n_query,
                n_episodes=n_episodes,
                random_state=seed,
            )
            learned.append(evaluate_few_shot(estimator, X, y, **common))
            if baseline:
                pixels.append(evaluate_nearest_centroid(X, y, **common))
        display = cls(
            shots=np.asarray(shots),
            scores=np.array([r.mean for r in learned]),
            ci95=np.array([r.ci95 for r in learned]),
            baseline_scores=np.array([r.mean for r in pixels]) if baseline else None,
            baseline_ci95=np.array([r.ci95 for r in pixels]) if baseline else None,
            n_way=n_way,
            estimator_name=_name(estimator, name),
        )
        return display.plot(ax=ax)


class MetaTrainingDisplay:
    """Meta-training loss and validation few-shot score against episodes seen.

    Drawn from the estimator's skorch history (``history_``): the loss of
    every meta-batch, and, when the estimator held out validation classes
    (``validation_fraction > 0``), the few-shot validation score at the end
    of every epoch on a second y-axis.

    Parameters
    ----------
    episodes : array-like of shape (n_batches,)
        Training episodes seen at the end of each meta-batch.
    train_loss : array-like of shape (n_batches,)
        Mean query loss of each meta-batch.
    epoch_episodes : array-like of shape (n_epochs,) or None, default=None
        Training episodes seen at the end of each epoch.
    valid_scores : array-like of shape (n_epochs,) or None, default=None
        Validation few-shot score at the end of each epoch.
    valid_name : str, default="valid_acc"
        The history key of ``valid_scores``, for the axis label.

    Attributes
    ----------
    line_ : matplotlib Line2D
        The training loss.
    valid_line_ : matplotlib Line2D or None
        The validation score.
    ax_ : matplotlib Axes
        The axes of the loss.
    valid_ax_ : matplotlib Axes or None
        The twin axes of the validation score.
    figure_ : matplotlib Figure
        The figure of ``ax_``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_meta.plotting import MetaTrainingDisplay
    >>> display = MetaTrainingDisplay(
    ...     episodes=[16, 32, 48], train_loss=[1.6, 1.2, 1.0],
    ...     epoch_episodes=[48], valid_scores=[0.55],
    ... ).plot()
    >>> display.valid_line_.get_ydata().tolist()
    [0.55]
    """

    def __init__(
        self,
        *,
        episodes,
        train_loss,
        epoch_episodes=None,
        valid_scores=None,
        valid_name="valid_acc",
    ):
        self.episodes = episodes
        self.train_loss = train_loss
        self.epoch_episodes = epoch_episodes
        self.valid_scores = valid_scores
        self.valid_name = valid_name

    def plot(self, ax=None):
        """Draw the loss curve, and the validation score on a twin y-axis.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw the loss on; a new figure when None.

        Returns
        -------
        display : MetaTrainingDisplay
            ``self``, with the artists, ``ax_``, ``valid_ax_`` and ``figure_``.
        """
        ax = _axes(ax, "MetaTrainingDisplay.plot")
        (self.line_,) = ax.plot(
            self.episodes, self.train_loss, color="C0", label="training loss"
        )
        ax.set_xlabel("training episodes")
        ax.set_ylabel("training loss (query cross-entropy or MSE)", color="C0")
        self.valid_ax_ = self.valid_line_ = None
        if self.valid_scores is not None:
            self.valid_ax_ = ax.twinx()
            (self.valid_line_,) = self.valid_ax_.plot(
                self.epoch_episodes,
                self.valid_scores,
                color="C1",
                marker="o",
                label=self.valid_name,
            )
            self.valid_ax_.set_ylabel(
                f"validation few-shot score ({self.valid_name})", color="C1"
            )
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, *, ax=None):
        """Read a fitted meta-learner's history and plot it.

        Parameters
        ----------
        estimator : fitted meta-learner or Pipeline
            A sklearn-meta estimator after ``fit``, or a ``Pipeline`` whose
            last step is one.
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when None.

        Returns
        -------
        display : MetaTrainingDisplay
            The plotted display.
        """
        _pyplot("MetaTrainingDisplay.from_estimator")
        learner = _learner(estimator)[1]
        history = learner.history_
        sizes, losses, epoch_ends = [], [], []
        for epoch in history:
            for batch in epoch["batches"]:
                if "train_loss" in batch:
                    sizes.append(batch["train_batch_size"])
                    losses.append(batch["train_loss"])
            epoch_ends.append(len(sizes))
        episodes = np.cumsum(sizes)
        valid_name = next(
            (k for k in ("valid_acc", "valid_neg_mse") if k in history[-1]), None
        )
        valid_scores = None
        if valid_name is not None:
            valid_scores = np.array([epoch[valid_name] for epoch in history])
        display = cls(
            episodes=episodes,
            train_loss=np.asarray(losses, dtype=float),
            epoch_episodes=episodes[np.asarray(epoch_ends) - 1],
            valid_scores=valid_scores,
            valid_name=valid_name or "valid_acc",
        )
        return display.plot(ax=ax)


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
