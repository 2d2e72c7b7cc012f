"""Few-shot model selection: class-disjoint folds, few-shot scores, evaluation.

A meta-learner is judged on classes it never saw in training: folds split
the *classes*, and the score of a fold is the mean accuracy over episodes
drawn from its classes, each adapted on its support set and judged on its
query set. This module knows no estimator class: it asks an estimator for
its batched episode scores (``_few_shot_scores``) when it has them, and
otherwise adapts it episode by episode with ``reset_adaptation``,
``partial_fit`` and ``predict``.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from joblib import effective_n_jobs
from sklearn.model_selection import BaseCrossValidator
from sklearn.pipeline import Pipeline
from sklearn.utils import check_random_state, gen_even_slices
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted, column_or_1d

from .tasks import make_sampler

__all__ = [
    "ClassKFold",
    "FewShotResult",
    "evaluate_few_shot",
    "evaluate_nearest_centroid",
    "make_few_shot_scorer",
]


class ClassKFold(BaseCrossValidator):
    """K-fold cross-validation whose folds are disjoint in classes.

    Every class lands in exactly one test fold, and a test fold's classes are
    never in its training set: the split meta-learning needs, where the
    question is how well a learner adapts to *new* classes. When ``groups``
    are given (one task per group, as in regression), the folds are disjoint
    in groups instead.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2.
    shuffle : bool, default=False
        Whether to shuffle the classes before splitting them into folds.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffle.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_meta.model_selection import ClassKFold
    >>> y = np.repeat([0, 1, 2, 3, 4, 5], 2)
    >>> for train, test in ClassKFold(3).split(np.zeros((12, 1)), y):
    ...     print(np.unique(y[test]).tolist())
    [0, 1]
    [2, 3]
    [4, 5]
    """

    def __init__(self, n_splits=5, *, shuffle=False, random_state=None):
        if not isinstance(n_splits, Integral) or isinstance(n_splits, bool):
            raise ValueError(f"n_splits must be an int, got {n_splits!r}")
        if n_splits < 2:
            raise ValueError(f"n_splits must be at least 2, got {n_splits}")
        if not isinstance(shuffle, bool):
            raise ValueError(f"shuffle must be True or False, got {shuffle!r}")
        self.n_splits = int(n_splits)
        self.shuffle = shuffle
        self.random_state = random_state

    def _keys(self, y, groups):
        if groups is not None:
            return column_or_1d(groups), "groups"
        if y is None:
            raise ValueError(
                "ClassKFold needs y (the classes to split) or groups; pass "
                "split(X, y) or split(X, y, groups)"
            )
        return column_or_1d(y), "classes"

    def _iter_test_masks(self, X=None, y=None, groups=None):
        keys, kind = self._keys(y, groups)
        if X is not None and len(keys) != len(X):
            raise ValueError(
                f"X has {len(X)} samples but the {kind} array has {len(keys)}"
            )
        unique = np.unique(keys)
        if len(unique) < self.n_splits:
            raise ValueError(
                f"ClassKFold(n_splits={self.n_splits}) needs at least that many "
                f"{kind}, got {len(unique)}; lower n_splits"
            )
        if self.shuffle:
            unique = check_random_state(self.random_state).permutation(unique)
        for fold in np.array_split(unique, self.n_splits):
            yield np.isin(keys, fold)

    def get_n_splits(self, X=None, y=None, groups=None):
        """Number of folds.

        Parameters
        ----------
        X : object, default=None
            Ignored; present for API compatibility.
        y : object, default=None
            Ignored; present for API compatibility.
        groups : object, default=None
            Ignored; present for API compatibility.

        Returns
        -------
        n_splits : int
            ``n_splits``.
        """
        return self.n_splits


@dataclass
class FewShotResult:
    """Few-shot accuracy over many episodes, reported as the field does.

    Parameters
    ----------
    mean : float
        Mean score over the episodes (accuracy, or negative MSE).
    ci95 : float
        Half-width of the 95% confidence interval of the mean
        (1.96 standard errors).
    scores : ndarray of shape (n_episodes,)
        The score of every episode.
    """

    mean: float
    ci95: float
    scores: np.ndarray

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f}% +/- {100 * self.ci95:.2f}"


def _split_pipeline(estimator):
    """The fitted transformers before the meta-learner, and the meta-learner."""
    if isinstance(estimator, Pipeline):
        steps = [
            step for _, step in estimator.steps if step not in (None, "passthrough")
        ]
        return steps[:-1], steps[-1]
    return [], estimator


def evaluate_few_shot(
    estimator,
    X,
    y,
    *,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    n_episodes: int = 600,
    groups=None,
    sources=None,
    random_state=None,
    n_jobs=None,
) -> FewShotResult:
    """Mean few-shot score of a fitted meta-learner over episodes of ``(X, y)``.

    Each episode draws ``n_way`` classes of ``y`` (or, with ``groups``, one
    task), adapts the estimator on ``k_shot`` examples per class and scores
    it on ``n_query`` others. The estimator itself is left unchanged.

    Parameters
    ----------
    estimator : fitted meta-learner or Pipeline
        A sklearn-meta estimator, or a ``Pipeline`` whose last step is one
        (the earlier steps transform ``X``, the last one adapts).
    X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        Samples of classes (usually) not seen in training.
    y : array-like of shape (n_samples,)
        Their classes, or regression targets when ``groups`` are given.
    n_way, k_shot, n_query : int, default=5, 1, 15
        Episode shape.
    n_episodes : int, default=600
        Number of episodes.
    groups : array-like of shape (n_samples,), default=None
        Task ids; episodes are then drawn within one task (regression when
        ``y`` is continuous). For classification, the groups with fewer
        than ``n_way`` usable classes are never drawn, and a
        ``UserWarning`` names them. Omniglot's ``alphabet`` gives
        within-alphabet episodes.
    sources : array-like of shape (n_samples,), default=None
        Who or what produced each sample, such as Omniglot's ``drawer``
        (classification only). When given, each episode draws
        ``k_shot + n_query`` different sources shared by its classes: every
        class gets one support sample by each of the first ``k_shot``
        sources and one query sample by each of the other ``n_query``, so
        no source of an episode's support is a source of its query. With
        ``k_shot=1, n_query=1`` this is Lake et al.'s protocol: all support
        samples by one drawer, all query samples by another. Classes with
        samples by fewer than ``k_shot + n_query`` sources are not drawn.
    random_state : int, RandomState instance or None, default=None
        Seeds the episodes.
    n_jobs : int, default=None
        Score the episodes in this many shares in parallel, through joblib's
        active backend (a dask cluster inside
        ``joblib.parallel_backend("dask")``); ``None`` means 1 and -1 all
        workers. The episodes and their scores do not depend on it.

    Returns
    -------
    result : FewShotResult
        ``mean``, ``ci95`` and the per-episode ``scores``.

    Examples
    --------
    >>> from sklearn_meta import MetaMetricClassifier
    >>> from sklearn_meta.datasets import make_glyph_tasks
    >>> from sklearn_meta.model_selection import evaluate_few_shot
    >>> X, y = make_glyph_tasks(n_classes=20, n_per_class=10, random_state=0)
    >>> clf = MetaMetricClassifier(backbone="conv4_strided", max_epochs=1,
    ...                            episodes_per_epoch=10, random_state=0)
    >>> clf = clf.fit(X[y < 12], y[y < 12])
    >>> result = evaluate_few_shot(clf, X[y >= 12], y[y >= 12], n_episodes=50,
    ...                            random_state=0)
    >>> len(result.scores), result.ci95 > 0
    (50, True)
    """
    transformers, learner = _split_pipeline(estimator)
    if not hasattr(learner, "partial_fit") or not hasattr(learner, "reset_adaptation"):
        raise ValueError(
            "evaluate_few_shot needs a sklearn-meta estimator (or a Pipeline ending "
            f"in one), got {type(learner).__name__}"
        )
    check_is_fitted(learner)
    y, groups, regression, episodes = _draw_episodes(
        X, y, groups, n_way, k_shot, n_query, n_episodes, random_state, sources
    )
    if not regression and groups is None:
        _warn_if_classes_were_seen(learner, y)
    for transformer in transformers:
        X = transformer.transform(X)
    n_shares = min(effective_n_jobs(n_jobs), len(episodes))
    if n_shares == 1:
        return _result(_episode_scores(learner, X, y, episodes, regression))
    shares = Parallel(n_jobs=n_jobs)(
        delayed(_episode_scores)(learner, X, y, episodes[share], regression)
        for share in gen_even_slices(len(episodes), n_shares)
    )
    return _result(np.concatenate(shares))


def _episode_scores(learner, X, y, episodes, regression) -> np.ndarray:
    batched = getattr(learner, "_few_shot_scores", None)
    scores = batched(X, episodes) if batched is not None else None
    if scores is None:
        scores = _scores_episode_by_episode(learner, X, y, episodes, regression)
    return np.asarray(scores)


def _warn_if_classes_were_seen(learner, y) -> None:
    """Warn when the classes scored were among those the learner meta-trained on.

    Few-shot scores measure adaptation to new classes; on training classes
    they are inflated. It happens silently with the default ``cv`` of
    ``GridSearchCV`` and ``cross_val_score``, whose folds share classes, so
    the evaluation every score and scorer goes through says so.
    ``_fit_classes`` is the meta-training classes an estimator keeps for
    ``reset_adaptation`` (absent when it never meta-trained).
    """
    seen = getattr(learner, "_fit_classes", None)
    if seen is None:
        return
    scored = np.unique(y)
    shared = scored[np.isin(scored, seen)]
    if len(shared):
        warnings.warn(
            f"{len(shared)} of the {len(scored)} classes scored were seen in "
            f"meta-training (e.g. {shared[:5].tolist()}), which inflates a few-shot "
            "score; score on new classes: split with cv=ClassKFold(n_splits) in "
            "GridSearchCV and cross_val_score (new classes that reuse training "
            "labels, such as two datasets each labelled from 0, need labels of "
            "their own)",
            UserWarning,
            stacklevel=3,
        )


def _result(scores) -> FewShotResult:
    scores = np.asarray(scores, dtype=np.float64)
    ci95 = 1.96 * scores.std(ddof=1) / np.sqrt(len(scores)) if len(scores) > 1 else 0.0
    return FewShotResult(float(scores.mean()), float(ci95), scores)


def _check_episode_shape(**values) -> None:
    lows = {"n_way": 2, "k_shot": 1, "n_query": 1, "n_episodes": 1}
    for name, value in values.items():
        low = lows[name]
        if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _draw_episodes(
    X, y, groups, n_way, k_shot, n_query, n_episodes, random_state, sources=None
):
    """Check the evaluation data and draw its episodes (index tensors)."""
    _check_episode_shape(
        n_way=n_way, k_shot=k_shot, n_query=n_query, n_episodes=n_episodes
    )
    y = column_or_1d(np.asarray(y), warn=True)
    if len(y) != _n_samples(X):
        raise ValueError(f"X has {_n_samples(X)} samples but y has {len(y)}")
    rng = check_random_state(random_state)
    # Peek at the seed: the caller's generator advances only once the
    # episodes are drawn, so a call that fails changes nothing.
    seed = int(copy.deepcopy(rng).randint(np.iinfo(np.int32).max))
    regression = type_of_target(y) == "continuous"
    if groups is not None:
        groups = column_or_1d(np.asarray(groups))
        if len(groups) != len(y):
            raise ValueError(f"groups has {len(groups)} entries but y has {len(y)}")
    elif regression:
        raise ValueError(
            "y is continuous: regression tasks must be given with groups=task_ids"
        )
    sampler = make_sampler(
        y,
        groups,
        n_way,
        k_shot,
        n_query,
        regression=regression,
        seed=seed,
        where=" to evaluate",
        sources=sources,
    )
    episodes = sampler.sample(n_episodes)
    rng.randint(np.iinfo(np.int32).max)
    return y, groups, regression, episodes


def evaluate_nearest_centroid(
    X,
    y,
    *,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    n_episodes: int = 600,
    groups=None,
    sources=None,
    random_state=None,
) -> FewShotResult:
    """Few-shot accuracy of nearest centroids on the raw features: the baseline.

    A meta-learner is worth its training only if it beats this. It draws the
    same episodes as :func:`evaluate_few_shot` with the same arguments.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        Samples; images are flattened to pixels.
    y : array-like of shape (n_samples,)
        Class labels.
    n_way, k_shot, n_query, n_episodes : int, default=5, 1, 15, 600
        As in :func:`evaluate_few_shot`.
    groups, sources : array-like of shape (n_samples,), default=None
        As in :func:`evaluate_few_shot`: episodes within one group, support
        and query by different sources.
    random_state : int, RandomState instance or None, default=None
        As in :func:`evaluate_few_shot`.

    Returns
    -------
    result : FewShotResult
        ``mean``, ``ci95`` and the per-episode ``scores``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_meta.model_selection import evaluate_nearest_centroid
    >>> X = np.repeat(np.eye(4), 5, axis=0)
    >>> y = np.repeat(np.arange(4), 5)
    >>> evaluate_nearest_centroid(X, y, n_way=2, n_query=2, n_episodes=10).mean
    1.0
    """
    X = np.asarray(X, dtype=np.float64)
    X = X.reshape(len(X), -1)
    _, _, regression, episodes = _draw_episodes(
        X, y, groups, n_way, k_shot, n_query, n_episodes, random_state, sources
    )
    if regression:
        raise ValueError(
            "evaluate_nearest_centroid is a classification baseline, but y is "
            "continuous; pass class labels"
        )
    support, query = X[episodes.support_index.numpy()], X[episodes.query_index.numpy()]
    n_classes = int(episodes.support_target.max()) + 1
    one_hot = np.eye(n_classes)[episodes.support_target.numpy()]
    centroids = one_hot.transpose(0, 2, 1) @ support / one_hot.sum(1)[:, :, None]
    distances = (
        (query**2).sum(-1)[:, :, None]
        + (centroids**2).sum(-1)[:, None, :]
        - 2 * query @ centroids.transpose(0, 2, 1)
    )
    correct = distances.argmin(-1) == episodes.query_target.numpy()
    return _result(correct.mean(axis=1))


def _n_samples(X) -> int:
    return X.shape[0] if hasattr(X, "shape") else len(X)


def _scores_episode_by_episode(learner, X, y, episodes, regression):
    """Adapt a copy of ``learner`` to every episode (no batched path available)."""
    learner = copy.deepcopy(learner)
    X = X if hasattr(X, "shape") else np.asarray(X)
    scores = []
    for index in range(len(episodes)):
        support = episodes.support_index[index].numpy()
        query = episodes.query_index[index].numpy()
        learner.reset_adaptation()
        learner.partial_fit(X[support], y[support])
        predictions = learner.predict(X[query])
        if regression:
            scores.append(-np.mean((predictions - y[query]) ** 2))
        else:
            scores.append(np.mean(predictions == y[query]))
    return np.asarray(scores)


def make_few_shot_scorer(
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 15,
    n_episodes: int = 100,
    random_state=0,
):
    """A scorer for ``GridSearchCV``: mean few-shot score on the test fold.

    Use it with :class:`ClassKFold`, so that each fold is scored on classes
    the estimator never saw.

    Parameters
    ----------
    n_way, k_shot, n_query : int, default=5, 1, 15
        Episode shape.
    n_episodes : int, default=100
        Episodes per evaluation.
    random_state : int, default=0
        Seeds the episodes, so every candidate is judged on the same ones.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y, groups=None, sources=None) -> float``;
        ``groups`` and ``sources`` as in :func:`evaluate_few_shot`.

    Examples
    --------
    >>> from sklearn_meta.model_selection import make_few_shot_scorer
    >>> scorer = make_few_shot_scorer(n_way=5, k_shot=1)
    >>> callable(scorer)
    True
    """
    _check_episode_shape(
        n_way=n_way, k_shot=k_shot, n_query=n_query, n_episodes=n_episodes
    )

    def few_shot_scorer(estimator, X, y, groups=None, sources=None):
        return evaluate_few_shot(
            estimator,
            X,
            y,
            n_way=n_way,
            k_shot=k_shot,
            n_query=n_query,
            n_episodes=n_episodes,
            groups=groups,
            sources=sources,
            random_state=random_state,
        ).mean

    return few_shot_scorer
