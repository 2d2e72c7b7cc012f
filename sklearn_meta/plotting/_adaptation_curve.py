"""AdaptationCurveDisplay: few-shot score against the adaptation steps."""

from __future__ import annotations

import copy
import warnings

import numpy as np
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ..model_selection import evaluate_few_shot
from ._common import _axes, _band, _learner, _name, _pyplot, _shared_seed

#: The parameter that counts an estimator's gradient steps at adaptation, in
#: order of preference: MAML's ``adapt_steps``, then the fine-tuning steps of
#: LEO and of the metric classifier.
_STEP_PARAMETERS = ("adapt_steps", "finetune_steps")


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
