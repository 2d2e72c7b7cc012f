"""ClassKFold, few-shot evaluation and the few-shot scorer."""

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_meta import MetaMetricClassifier
from sklearn_meta.model_selection import (
    ClassKFold,
    _scores_episode_by_episode,
    evaluate_few_shot,
    evaluate_nearest_centroid,
    make_few_shot_scorer,
)
from sklearn_meta.tasks import EpisodeSampler


@settings(max_examples=40, deadline=None)
@given(
    n_classes=st.integers(2, 15),
    n_splits=st.integers(2, 6),
    shuffle=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_class_k_fold_is_class_disjoint_and_tests_every_class_once(
    n_classes, n_splits, shuffle, seed
):
    """Test folds partition the classes; no test class is in its training set."""
    if n_splits > n_classes:
        return
    y = np.random.default_rng(seed).integers(0, n_classes, 60)
    y[:n_classes] = np.arange(n_classes)
    folds = list(
        ClassKFold(n_splits, shuffle=shuffle, random_state=seed).split(
            np.zeros((60, 1)), y
        )
    )
    assert len(folds) == n_splits
    tested = np.concatenate([np.unique(y[test]) for _, test in folds])
    assert sorted(tested.tolist()) == list(range(n_classes))
    for train, test in folds:
        assert not set(y[train]) & set(y[test])
        assert len(train) + len(test) == 60


def test_class_k_fold_splits_groups_when_given():
    """With groups the folds are disjoint in groups."""
    groups = np.repeat(np.arange(6), 5)
    y = np.tile(np.arange(5), 6)
    for train, test in ClassKFold(3).split(np.zeros((30, 1)), y, groups):
        assert not set(groups[train]) & set(groups[test])


@pytest.fixture(scope="module")
def fitted_classifier(blobs):
    X, y = blobs
    return MetaMetricClassifier(
        max_epochs=1, episodes_per_epoch=40, random_state=0, hidden_layer_sizes=(32,)
    ).fit(X[y < 30], y[y < 30])


def test_batched_scores_equal_adapting_episode_by_episode(fitted_classifier, blobs):
    """The batched path gives exactly what partial_fit + predict give per episode."""
    X, y = blobs
    X_new, y_new = X[y >= 30], y[y >= 30]
    _, labels = np.unique(y_new, return_inverse=True)
    episodes = EpisodeSampler(labels, 5, 2, 4, seed=0).sample(25)
    batched = fitted_classifier._few_shot_scores(X_new, episodes)
    one_by_one = _scores_episode_by_episode(
        fitted_classifier, X_new, y_new, episodes, regression=False
    )
    assert_allclose(batched, one_by_one)


def test_evaluation_leaves_the_estimator_unchanged(fitted_classifier, blobs):
    """evaluate_few_shot does not adapt or refit the estimator it judges."""
    X, y = blobs
    clf = pickle.loads(pickle.dumps(fitted_classifier))
    clf.partial_fit(X[y >= 35][::5], y[y >= 35][::5])
    before = clf.predict_proba(X)
    result = evaluate_few_shot(clf, X[y >= 30], y[y >= 30], n_episodes=30)
    assert_array_equal(clf.predict_proba(X), before)
    assert_array_equal(clf.classes_, np.arange(35, 40))
    assert result.mean > 0.5 and result.ci95 > 0 and len(result.scores) == 30


def test_evaluation_is_seeded(fitted_classifier, blobs):
    """The same random_state draws the same episodes and the same score."""
    X, y = blobs
    first = evaluate_few_shot(fitted_classifier, X, y, n_episodes=20, random_state=3)
    second = evaluate_few_shot(fitted_classifier, X, y, n_episodes=20, random_state=3)
    assert_array_equal(first.scores, second.scores)
    assert "%" in str(first)


def test_pipeline_transforms_then_adapts(blobs):
    """A Pipeline is evaluated with its earlier steps as fitted transformers."""
    X, y = blobs
    pipe = make_pipeline(
        StandardScaler(),
        MetaMetricClassifier(
            max_epochs=1,
            episodes_per_epoch=40,
            random_state=0,
            hidden_layer_sizes=(32,),
        ),
    ).fit(X[y < 30], y[y < 30])
    scaled = pipe[0].transform(X[y >= 30])
    direct = evaluate_few_shot(
        pipe[-1], scaled, y[y >= 30], n_episodes=20, random_state=0
    )
    piped = evaluate_few_shot(
        pipe, X[y >= 30], y[y >= 30], n_episodes=20, random_state=0
    )
    assert_array_equal(direct.scores, piped.scores)


def test_scorer_is_the_mean_few_shot_score(fitted_classifier, blobs):
    """The scorer returns evaluate_few_shot's mean on the same episodes."""
    X, y = blobs
    scorer = make_few_shot_scorer(n_way=5, k_shot=1, n_episodes=20, random_state=0)
    expected = evaluate_few_shot(fitted_classifier, X, y, n_episodes=20, random_state=0)
    assert scorer(fitted_classifier, X, y) == expected.mean


def test_nearest_centroid_baseline():
    """Separable classes give a perfect baseline; it uses the same episodes."""
    X = np.repeat(np.eye(6) * 10, 4, axis=0)
    y = np.repeat(np.arange(6), 4)
    assert (
        evaluate_nearest_centroid(X, y, n_way=3, n_query=2, n_episodes=30).mean == 1.0
    )
    noise = np.random.default_rng(0).normal(size=(24, 6))
    chance = evaluate_nearest_centroid(noise, y, n_way=3, n_query=3, n_episodes=300)
    assert 0.2 < chance.mean < 0.5
