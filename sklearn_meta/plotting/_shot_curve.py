"""ShotCurveDisplay: few-shot accuracy against k-shot, next to raw features."""

from __future__ import annotations

import numpy as np

from ..model_selection import evaluate_few_shot, evaluate_nearest_centroid
from ._common import _axes, _band, _name, _pyplot, _shared_seed


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
