"""MAMLFeatureExtractor: meta-training, adaptation, scikit-learn integration."""

import pickle

import joblib
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_meta import MAMLFeatureExtractor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.model_selection import (
    ClassKFold,
    _scores_episode_by_episode,
    evaluate_few_shot,
)
from sklearn_meta.tasks import EpisodeSampler


def small(device="cpu", **params):
    """A MAML extractor with a tiny training budget."""
    defaults = dict(
        inner_lr=0.5,
        max_epochs=1,
        episodes_per_epoch=32,
        meta_batch_size=8,
        random_state=0,
        device=device,
        hidden_layer_sizes=(32,),
        embedding_dim=16,
    )
    return MAMLFeatureExtractor(**{**defaults, **params})


@pytest.fixture(scope="module")
def fitted(blobs):
    X, y = blobs
    return small().fit(X[y < 30], y[y < 30])


def test_meta_learning_beats_no_meta_learning(blobs, device):
    """Meta-trained MAML adapts to new classes better than an untrained network."""
    X, y = blobs
    new = y >= 30
    trained = small(device, episodes_per_epoch=96).fit(X[~new], y[~new])
    untrained = small(device)
    support = np.flatnonzero(new)[::20]
    untrained.partial_fit(X[support], y[support])
    common = dict(n_episodes=60, random_state=0)
    meta = evaluate_few_shot(trained, X[new], y[new], **common)
    assert meta.mean > 0.6
    assert meta.mean > evaluate_few_shot(untrained, X[new], y[new], **common).mean


def test_adaptation_semantics(fitted, blobs):
    """partial_fit starts a task, predict answers for it, reset returns."""
    X, y = blobs
    # Two steps: the first moves only the head, whose class rows start equal.
    clf = pickle.loads(pickle.dumps(fitted)).set_params(adapt_steps=2)
    assert not hasattr(clf, "predict")
    before = clf.transform(X[:5])
    support = np.flatnonzero(y >= 35)[::4]
    clf.partial_fit(X[support], y[support])
    assert_array_equal(clf.classes_, np.arange(35, 40))
    assert clf.predict(X[:4]).shape == (4,)
    assert_allclose(clf.predict_proba(X[:4]).sum(axis=1), 1.0)
    adapted = clf.transform(X[:5])
    assert not np.allclose(adapted, before)
    # A later call takes further steps from the adapted weights.
    clf.partial_fit(X[support + 1], y[support + 1])
    assert not np.allclose(clf.transform(X[:5]), adapted)
    clf.reset_adaptation()
    assert_array_equal(clf.transform(X[:5]), before)
    assert not hasattr(clf, "predict")


def test_later_labels_outside_the_task_are_refused(fitted, blobs):
    """The head has one output per class: a new class needs a new task."""
    X, y = blobs
    clf = pickle.loads(pickle.dumps(fitted))
    first = np.flatnonzero((y == 30) | (y == 31))[::5]
    clf.partial_fit(X[first], y[first])
    before = clf.predict_proba(X)
    with pytest.raises(ValueError, match="outside the classes of the task"):
        clf.partial_fit(X[y == 32][:2], y[y == 32][:2])
    assert_array_equal(clf.predict_proba(X), before)


def test_batched_scores_equal_adapting_episode_by_episode(fitted, blobs):
    """The batched core gives what partial_fit + predict give per episode."""
    X, y = blobs
    X_new, y_new = X[y >= 30], y[y >= 30]
    _, labels = np.unique(y_new, return_inverse=True)
    episodes = EpisodeSampler(labels, 5, 1, 3, seed=0).sample(12)
    batched = fitted._few_shot_scores(X_new, episodes)
    one_by_one = _scores_episode_by_episode(fitted, X_new, y_new, episodes, False)
    assert_allclose(batched, one_by_one, atol=1e-6)


@pytest.mark.parametrize(
    "params",
    [
        {"first_order": True},
        {"inner_params": "head"},
        {"learn_inner_lr": True},
        {"algorithm": "reptile", "inner_steps": 3},
        {"algorithm": "imaml", "inner_steps": 3, "imaml_lambda": 0.5, "cg_steps": 3},
    ],
    ids=["first-order", "anil", "meta-sgd", "reptile", "imaml"],
)
def test_family_members_fit_and_adapt(blobs, params):
    """First-order MAML, ANIL, Meta-SGD, Reptile and iMAML meta-train and adapt."""
    X, y = blobs
    clf = small(**params).fit(X[y < 30], y[y < 30])
    result = evaluate_few_shot(
        clf, X[y >= 30], y[y >= 30], n_episodes=30, random_state=0
    )
    assert result.mean > 0.3


def test_reptile_with_anil_is_refused(blobs):
    """Reptile needs every weight to adapt."""
    X, y = blobs
    with pytest.raises(ValueError, match="reptile"):
        small(algorithm="reptile", inner_params="head").fit(X, y)


@pytest.mark.parametrize(
    "params",
    [{"first_order": True}, {"learn_inner_lr": True}, {"inner_params": "head"}],
)
def test_imaml_refuses_what_does_not_apply(blobs, params):
    """iMAML has no first-order variant, no learned step sizes and no ANIL."""
    X, y = blobs
    name = next(iter(params))
    with pytest.raises(ValueError, match=name):
        small(algorithm="imaml", **params).fit(X, y)


def test_imaml_meta_learns_sinusoids():
    """iMAML meta-training lowers the few-shot regression error of the
    initialisation it starts from."""
    X, y, groups = make_sinusoid_tasks(n_tasks=100, n_points=20, random_state=0)
    common = dict(
        algorithm="imaml",
        inner_lr=0.02,
        inner_steps=5,
        imaml_lambda=1.0,
        hidden_layer_sizes=(40, 40),
        embedding_dim=40,
        k_shot=10,
        n_query=10,
        meta_batch_size=10,
        meta_lr=3e-3,
    )
    untrained = small(**{**common, "meta_lr": 1e-9}, episodes_per_epoch=10)
    trained = small(**common, episodes_per_epoch=300)
    scores = [
        est.fit(X, y, groups=groups).score(X, y, groups) for est in (untrained, trained)
    ]
    assert scores[1] > scores[0]


def test_regression_on_sinusoids():
    """Regression tasks from groups: adaptation fits a new task's support points."""
    X, y, groups = make_sinusoid_tasks(n_tasks=200, n_points=20, random_state=0)
    maml = small(
        inner_lr=0.01,
        hidden_layer_sizes=(40, 40),
        embedding_dim=40,
        k_shot=10,
        n_query=10,
        episodes_per_epoch=400,
        meta_batch_size=25,
        meta_lr=3e-3,
    ).fit(X, y, groups=groups)
    assert not hasattr(maml, "classes_")
    X_new, y_new, _ = make_sinusoid_tasks(n_tasks=1, n_points=30, random_state=1)
    maml.set_params(adapt_steps=0)
    before = maml.partial_fit(X_new[:10], y_new[:10]).predict(X_new[:10])
    maml.reset_adaptation()
    maml.set_params(adapt_steps=10).partial_fit(X_new[:10], y_new[:10])
    after = maml.predict(X_new[:10])
    assert np.mean((after - y_new[:10]) ** 2) < np.mean((before - y_new[:10]) ** 2)
    score = maml.score(X, y, groups=groups)
    assert score < 0 and np.isfinite(score)


def test_continuous_y_without_groups_is_refused():
    """Regression needs the tasks."""
    X, y, _ = make_sinusoid_tasks(n_tasks=5, n_points=10, random_state=0)
    with pytest.raises(ValueError, match="groups=task_ids"):
        small().fit(X, y)


def test_grid_search_over_inner_lr_and_inner_steps(blobs):
    """GridSearchCV with class-disjoint folds needs no scorer: score is few-shot."""
    X, y = blobs
    search = GridSearchCV(
        small(episodes_per_epoch=16),
        {"inner_lr": [0.05, 0.5], "inner_steps": [1, 2]},
        cv=ClassKFold(3),
    ).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all()
    # The step size and count reach the score: the candidates differ.
    assert len(np.unique(scores)) == 4


def test_pipeline_scaler_maml_logistic_regression(blobs):
    """MAML embeddings feed an ordinary classifier in a Pipeline."""
    X, y = blobs
    pipe = make_pipeline(StandardScaler(), small(), LogisticRegression(max_iter=500))
    pipe.fit(X[y < 10], y[y < 10])
    assert pipe.score(X[y < 10], y[y < 10]) > 0.8


def test_determinism_clone_pickle_joblib(fitted, blobs, tmp_path):
    """Same seed, same model; clone, pickle and joblib keep the outputs."""
    X, y = blobs
    again = small().fit(X[y < 30], y[y < 30])
    assert_array_equal(again.transform(X), fitted.transform(X))
    assert clone(fitted).get_params() == fitted.get_params()
    adapted = pickle.loads(pickle.dumps(fitted)).partial_fit(
        X[y >= 35][::5], y[y >= 35][::5]
    )
    joblib.dump(adapted, tmp_path / "maml.joblib")
    for restored in (
        pickle.loads(pickle.dumps(adapted)),
        joblib.load(tmp_path / "maml.joblib"),
    ):
        assert_array_equal(restored.predict_proba(X), adapted.predict_proba(X))
        assert_array_equal(restored.transform(X), adapted.transform(X))


def test_images_with_conv4(glyphs):
    """A Conv4 body on images; transform does not depend on the batch."""
    X, y = glyphs
    clf = small(backbone="conv4", embedding_dim=8, n_query=3, inner_lr=0.4).fit(X, y)
    assert_allclose(clf.transform(X[:12])[:2], clf.transform(X[:2]), atol=1e-6)
    clf.partial_fit(X[y < 5][::10], y[y < 5][::10])
    assert clf.predict(X[:3]).shape == (3,)


def test_inner_lr_must_be_positive(blobs):
    """inner_lr <= 0 is refused at fit."""
    X, y = blobs
    with pytest.raises(ValueError, match="inner_lr"):
        small(inner_lr=0.0).fit(X, y)


def test_diverged_adaptation_is_refused_and_keeps_the_task():
    """Adaptation steps that overflow raise and leave the adapted task as it was."""
    X, y, groups = make_sinusoid_tasks(n_tasks=50, n_points=20, random_state=0)
    reg = small(inner_lr=0.5, k_shot=5, n_query=5, episodes_per_epoch=16)
    reg.fit(X, y, groups=groups)
    reg.set_params(adapt_steps=50)
    with pytest.raises(ValueError, match="diverged.*adapt_steps.*inner_lr"):
        reg.partial_fit(X[:10], y[:10])
    assert not hasattr(reg, "predict")
    reg.set_params(adapt_steps=1).partial_fit(X[:10], y[:10])
    before = reg.predict(X[:20])
    assert np.isfinite(before).all()
    with pytest.raises(ValueError, match="diverged"):
        reg.set_params(adapt_steps=50).partial_fit(X[10:20], y[10:20])
    assert_allclose(reg.predict(X[:20]), before)
