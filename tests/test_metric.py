"""MetaMetricClassifier: meta-training, adaptation, scikit-learn integration."""

import copy
import pickle

import joblib
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import EarlyStopping

from sklearn_meta import MetaMetricClassifier
from sklearn_meta.model_selection import (
    ClassKFold,
    evaluate_few_shot,
    make_few_shot_scorer,
)
from sklearn_meta.nn.backbones import Conv4


def small(device="cpu", **params):
    """A classifier with a tiny training budget."""
    defaults = dict(
        max_epochs=1,
        episodes_per_epoch=30,
        random_state=0,
        device=device,
        hidden_layer_sizes=(32,),
        embedding_dim=16,
    )
    return MetaMetricClassifier(**{**defaults, **params})


@pytest.fixture(scope="module")
def fitted(blobs):
    X, y = blobs
    return small().fit(X[y < 30], y[y < 30])


def test_fit_predicts_training_classes_and_adapts_to_new_ones(blobs, device):
    """After fit it predicts training classes; partial_fit adapts to new ones."""
    X, y = blobs
    train = y < 30
    clf = small(device, episodes_per_epoch=100).fit(X[train], y[train])
    assert_array_equal(clf.classes_, np.arange(30))
    assert clf.score(X[train], y[train]) > 0.9
    new = ~train
    support = new & (np.arange(len(y)) % 20 == 0)
    clf.partial_fit(X[support], y[support])
    assert_array_equal(clf.classes_, np.arange(30, 40))
    assert clf.score(X[new & ~support], y[new & ~support]) > 0.8
    assert clf.predict_proba(X[:3]).shape == (3, 10)
    assert_allclose(clf.predict_proba(X[:3]).sum(axis=1), 1.0, rtol=1e-6)
    assert clf.transform(X[:4]).shape == (4, 16)
    clf.reset_adaptation()
    assert_array_equal(clf.classes_, np.arange(30))


@pytest.mark.parametrize(
    "params",
    [
        {"metric": "cosine"},
        {"metric": "mahalanobis"},
        {"metric": "mahalanobis", "metric_rank": 3},
    ],
)
def test_metrics_learn(blobs, params):
    """Every metric meta-trains to a useful embedding on new classes."""
    X, y = blobs
    clf = small(**params, episodes_per_epoch=60).fit(X[y < 30], y[y < 30])
    result = evaluate_few_shot(
        clf, X[y >= 30], y[y >= 30], n_episodes=50, random_state=0
    )
    assert result.mean > 0.7


def test_mahalanobis_metric_parameters_are_trained(blobs):
    """The learned diagonal and low-rank factors move away from their start."""
    X, y = blobs
    clf = small(metric="mahalanobis", metric_rank=2).fit(X, y)
    assert not np.allclose(clf.module_.diagonal.detach().numpy(), 0.5413, atol=1e-4)
    assert clf.module_.low_rank.detach().abs().sum() > 0


def test_incremental_partial_fit_equals_one_call(fitted, blobs):
    """Prototypes from several partial_fit calls equal one call on all the data."""
    X, y = blobs
    new = y >= 30
    X_new, y_new = X[new][::4], y[new][::4]
    whole = (
        pickle.loads(pickle.dumps(fitted)).reset_adaptation().partial_fit(X_new, y_new)
    )
    parts = pickle.loads(pickle.dumps(fitted)).reset_adaptation()
    for chunk in np.array_split(np.arange(len(y_new)), 3):
        parts.partial_fit(X_new[chunk], y_new[chunk])
    assert_array_equal(whole.classes_, parts.classes_)
    assert_allclose(whole.prototypes_, parts.prototypes_, rtol=1e-6, atol=1e-6)
    assert_array_equal(whole.predict(X[new]), parts.predict(X[new]))


def test_partial_fit_classes_and_label_checks(fitted, blobs):
    """`classes` fixes the task; labels outside it and class changes are refused."""
    X, y = blobs
    clf = pickle.loads(pickle.dumps(fitted)).reset_adaptation()
    clf.partial_fit(X[y == 30][:1], y[y == 30][:1], classes=[30, 31, 32])
    assert_array_equal(clf.classes_, [30, 31, 32])
    # Class 31 and 32 have no example yet: they are never predicted.
    assert set(clf.predict(X[:20])) == {30}
    with pytest.raises(ValueError, match="outside the classes of the task"):
        clf.partial_fit(X[y == 33][:1], y[y == 33][:1])
    with pytest.raises(ValueError, match="differs from the classes"):
        clf.partial_fit(X[y == 31][:1], y[y == 31][:1], classes=[30, 31])
    clf.partial_fit(X[y == 31][:1], y[y == 31][:1])
    assert set(clf.predict(X[(y == 30) | (y == 31)])) <= {30, 31}


def test_partial_fit_without_classes_may_add_classes(fitted, blobs):
    """Without `classes`, a later call can bring a new class."""
    X, y = blobs
    clf = pickle.loads(pickle.dumps(fitted)).reset_adaptation()
    clf.partial_fit(X[(y == 30) | (y == 31)][::5], y[(y == 30) | (y == 31)][::5])
    clf.partial_fit(X[y == 32][:2], y[y == 32][:2])
    assert_array_equal(clf.classes_, [30, 31, 32])


def test_first_partial_fit_needs_two_classes(fitted, blobs):
    """A task with one class cannot be classified."""
    X, y = blobs
    clf = pickle.loads(pickle.dumps(fitted)).reset_adaptation()
    with pytest.raises(ValueError, match="at least two classes"):
        clf.partial_fit(X[y == 30], y[y == 30])


def test_finetuning_changes_the_embedding_and_reset_restores_it(fitted, blobs):
    """finetune_steps adapts a copy of the embedding; reset_adaptation drops it."""
    X, y = blobs
    clf = pickle.loads(pickle.dumps(fitted)).set_params(
        finetune_steps=5, finetune_lr=1e-2
    )
    before = clf.transform(X[:5])
    clf.partial_fit(X[y >= 30][::10], y[y >= 30][::10])
    assert not np.allclose(clf.transform(X[:5]), before)
    clf.reset_adaptation()
    assert_array_equal(clf.transform(X[:5]), before)
    result = evaluate_few_shot(
        clf, X[y >= 30], y[y >= 30], n_episodes=5, random_state=0
    )
    assert result.mean > 0.5  # fine-tuned prototypes on new classes, chance 0.2


def test_partial_fit_before_fit_initialises_the_network(blobs):
    """partial_fit on an unfitted estimator adapts a randomly initialised network."""
    X, y = blobs
    clf = small().partial_fit(X[y < 5], y[y < 5])
    assert_array_equal(clf.classes_, np.arange(5))
    assert clf.score(X[y < 5], y[y < 5]) > 0.5


def test_same_seed_same_model_other_seed_other_model(blobs):
    """Fits are bit-for-bit repeatable for a seed on CPU."""
    X, y = blobs
    first = small(random_state=3).fit(X, y).transform(X)
    second = small(random_state=3).fit(X, y).transform(X)
    other = small(random_state=4).fit(X, y).transform(X)
    assert_array_equal(first, second)
    assert not np.allclose(first, other)


def test_pickle_and_joblib_round_trip(fitted, blobs, tmp_path):
    """pickle and joblib give back an estimator with identical outputs."""
    X, y = blobs
    clf = pickle.loads(pickle.dumps(fitted)).partial_fit(
        X[y >= 35][::5], y[y >= 35][::5]
    )
    path = tmp_path / "model.joblib"
    joblib.dump(clf, path)
    for restored in (pickle.loads(pickle.dumps(clf)), joblib.load(path)):
        assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
        assert_array_equal(restored.transform(X), clf.transform(X))


def test_clone_gives_an_unfitted_copy_with_the_same_params(fitted):
    """clone keeps parameters and drops fitted state."""
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "net_")
    with pytest.raises(NotFittedError):
        copy.transform(np.zeros((2, 10)))


def test_pipeline_with_scaler(blobs):
    """A Pipeline (scaler -> classifier) fits, predicts and is few-shot evaluated."""
    X, y = blobs
    pipe = make_pipeline(StandardScaler(), small(episodes_per_epoch=60))
    pipe.fit(X[y < 30], y[y < 30])
    assert pipe.score(X[y < 30], y[y < 30]) > 0.9
    result = evaluate_few_shot(
        pipe, X[y >= 30], y[y >= 30], n_episodes=40, random_state=0
    )
    assert result.mean > 0.7


def test_grid_search_over_metric_and_embedding_dim_needs_no_scorer(blobs):
    """GridSearchCV with class-disjoint folds scores few-shot, not 0.0 on new classes."""
    X, y = blobs
    search = GridSearchCV(
        small(),
        {"metric": ["euclidean", "cosine"], "embedding_dim": [8, 16]},
        cv=ClassKFold(3),
    )
    search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert scores.min() > 0.5  # chance is 0.2; plain accuracy gave 0.0 here
    assert len(np.unique(scores)) == 4


def test_grid_search_parallel_matches_serial(blobs):
    """n_jobs=2 picks the same parameters with the same scores as n_jobs=1."""
    X, y = blobs
    results = []
    for n_jobs in (1, 2):
        search = GridSearchCV(
            small(),
            {"metric": ["euclidean", "cosine"]},
            cv=ClassKFold(2),
            scoring=make_few_shot_scorer(n_episodes=20),
            n_jobs=n_jobs,
        ).fit(X, y)
        results.append((search.best_params_, search.cv_results_["mean_test_score"]))
    assert results[0][0] == results[1][0]
    assert_allclose(results[0][1], results[1][1])


def test_images_as_4d_arrays_or_flat_rows_agree(glyphs):
    """(n, C, H, W) arrays and flat rows with input_shape give the same model."""
    X, y = glyphs
    params = dict(backbone="conv4_strided", embedding_dim=16, n_query=3)
    four_d = small(**params).fit(X, y)
    flat = small(**params, input_shape=(1, 28, 28)).fit(X.reshape(len(X), -1), y)
    assert four_d.input_shape_ == (1, 28, 28)
    assert_allclose(
        four_d.transform(X[:8]), flat.transform(X[:8].reshape(8, -1)), atol=1e-6
    )


@pytest.mark.parametrize("downsample", ["max_pool", "stride"])
def test_channels_last_conv4_computes_the_same_as_the_default_layout(
    glyphs, downsample
):
    """The layout the prototypical network trains in changes speed, not results."""
    torch.manual_seed(0)
    default = Conv4((1, 28, 28), downsample=downsample)
    channels_last = copy.deepcopy(default).to_channels_last()
    x = torch.rand(6, 784)
    # float32 through different convolution kernels: equal to a few dozen ulps.
    assert_allclose(
        channels_last(x).detach().numpy(),
        default(x).detach().numpy(),
        rtol=1e-5,
        atol=1e-5,
    )
    clf = small(backbone="conv4", embedding_dim=8, n_query=3).fit(*glyphs)
    assert clf.module_.backbone.channels_last


def test_transform_does_not_depend_on_the_batch(glyphs):
    """BatchNorm statistics are frozen after fit: a sample's embedding is its own."""
    X, y = glyphs
    clf = small(backbone="conv4", embedding_dim=8, n_query=3).fit(X, y)
    assert_allclose(clf.transform(X[:20])[:3], clf.transform(X[:3]), atol=1e-5)


def test_validation_fraction_records_few_shot_accuracy(blobs):
    """Held-out classes give a valid_acc in the history every epoch."""
    X, y = blobs
    clf = small(validation_fraction=0.25, max_epochs=2).fit(X, y)
    accuracies = clf.history_[:, "valid_acc"]
    assert len(accuracies) == 2
    assert min(accuracies) > 0.5  # held-out classes, chance 0.2
    assert all(np.isfinite(clf.history_[:, "valid_loss"]))


def test_callbacks_are_used_and_left_untouched(blobs):
    """skorch callbacks work; the user's instances are copied, not initialised."""
    X, y = blobs
    stopper = EarlyStopping(monitor="valid_acc", lower_is_better=False, patience=1)
    clf = small(validation_fraction=0.25, max_epochs=30, callbacks=[stopper]).fit(X, y)
    assert len(clf.history_) < 30
    assert not hasattr(stopper, "best_epoch_")


def test_small_data_shrinks_episodes_with_a_warning():
    """Fewer classes than n_way still trains, with a warning."""
    X, y = np.random.default_rng(0).normal(size=(12, 3)), np.repeat([0, 1, 2], 4)
    with pytest.warns(UserWarning, match="n_way=3"):
        clf = small().fit(X, y)
    assert clf.predict(X).shape == (12,)


def test_groups_draw_episodes_within_tasks(blobs):
    """With groups, each episode comes from one task."""
    X, y = blobs
    groups = y // 10
    clf = small(n_way=3).fit(X, y, groups=groups)
    assert clf.predict(X[:3]).shape == (3,)


def test_fit_on_a_list_of_tasks(blobs):
    """fit accepts a list of (X, y) tasks."""
    X, y = blobs
    tasks = [(X[y // 10 == g], y[y // 10 == g]) for g in range(4)]
    clf = small(n_way=3).fit(tasks)
    assert clf.n_features_in_ == 10


def test_pandas_in_and_out(blobs):
    """DataFrames keep feature names; set_output gives named embedding columns."""
    pd = pytest.importorskip("pandas")
    X, y = blobs
    frame = pd.DataFrame(X, columns=[f"col{i}" for i in range(10)])
    clf = small().fit(frame, y)
    assert_array_equal(clf.feature_names_in_, frame.columns)
    clf.set_output(transform="pandas")
    out = clf.transform(frame.iloc[:4])
    assert list(out.columns) == [f"metametricclassifier{i}" for i in range(16)]
    assert_array_equal(clf.get_feature_names_out(), out.columns)
