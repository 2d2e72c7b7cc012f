"""LEOTransformer: meta-training, adaptation, scikit-learn integration."""

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

from sklearn_meta import LEOTransformer, MetaMetricClassifier
from sklearn_meta.model_selection import (
    ClassKFold,
    evaluate_few_shot,
    evaluate_nearest_centroid,
)
from sklearn_meta.model_selection import _scores_episode_by_episode as one_by_one


def small(device="cpu", **params):
    """A LEOTransformer with a tiny training budget."""
    defaults = dict(
        latent_dim=8,
        max_epochs=1,
        episodes_per_epoch=40,
        random_state=0,
        device=device,
    )
    return LEOTransformer(**{**defaults, **params})


def copy_of(estimator):
    return pickle.loads(pickle.dumps(estimator))


def support_of(y, classes, per_class=1):
    """Mask of the first ``per_class`` samples of each class in ``classes``."""
    mask = np.zeros(len(y), dtype=bool)
    for c in classes:
        mask[np.flatnonzero(y == c)[:per_class]] = True
    return mask


@pytest.fixture(scope="module")
def fitted(blobs):
    X, y = blobs
    return small().fit(X[y < 30], y[y < 30])


@pytest.fixture(scope="module")
def adapted(fitted, blobs):
    X, y = blobs
    support = support_of(y, range(30, 35), per_class=2)
    return copy_of(fitted).partial_fit(X[support], y[support])


def test_fit_transform_adapt_predict(blobs, device):
    """Shapes and types through fit, transform, partial_fit and predict."""
    X, y = blobs
    leo = small(device).fit(X[y < 30], y[y < 30])
    codes = leo.transform(X[:7])
    assert codes.shape == (7, 8) and codes.dtype == np.float32
    assert_array_equal(leo.classes_, np.arange(30))
    for method in ("predict", "predict_proba", "decision_function"):
        assert not hasattr(leo, method)
    support = support_of(y, range(30, 35), per_class=3)
    assert leo.partial_fit(X[support], y[support]) is leo
    assert_array_equal(leo.classes_, np.arange(30, 35))
    query = (y >= 30) & (y < 35) & ~support
    assert np.mean(leo.predict(X[query]) == y[query]) > 0.8
    proba = leo.predict_proba(X[:4])
    assert proba.shape == (4, 5)
    assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert leo.decision_function(X[:4]).shape == (4, 5)
    assert leo.transform(X[:7]).shape == (7, 8)


def test_meta_training_learns_where_the_classes_differ():
    """Classes that differ in 4 of 16 noisy features: meta-training finds them.

    Nearest centroids on all features, or an untrained LEO, stay near 30%
    5-way 1-shot; meta-trained LEO adapts in the informative directions.
    """
    rng = np.random.default_rng(0)
    centres = np.zeros((40, 16))
    centres[:, :4] = rng.normal(size=(40, 4))
    noise = np.where(np.arange(16) < 4, 0.5, 1.5)
    y = np.repeat(np.arange(40), 20)
    X = centres[y] + noise * rng.normal(size=(len(y), 16))
    new = y >= 30
    untrained = small().partial_fit(X[:40:20], y[:40:20]).reset_adaptation()
    trained = small(episodes_per_epoch=200, meta_lr=1e-2).fit(X[~new], y[~new])
    pixels = evaluate_nearest_centroid(X[new], y[new], n_episodes=100, random_state=0)
    assert untrained.score(X[new], y[new]) < pixels.mean + 0.1
    assert trained.score(X[new], y[new]) > pixels.mean + 0.2


def test_transform_before_and_after_adaptation(adapted, fitted, blobs):
    """Codes move with adaptation; reset_adaptation brings the unadapted ones back."""
    X, _ = blobs
    before = fitted.transform(X[:10])
    after = adapted.transform(X[:10])
    assert not np.allclose(before, after)
    reset = copy_of(adapted).reset_adaptation()
    assert_array_equal(reset.classes_, np.arange(30))  # the training classes
    assert not hasattr(reset, "predict")
    assert_array_equal(reset.transform(X[:10]), before)
    # The unadapted code is the core's per-sample encoding of the standardised row.
    rows = (X[:10] - fitted._feature_mean) / fitted._feature_scale
    with torch.no_grad():
        expected = fitted.module_.leo.encode(torch.as_tensor(rows, dtype=torch.float32))
    assert_allclose(before, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_transform_does_not_depend_on_the_batch(fitted, adapted, blobs):
    """A sample's code is its own: the same alone or among others."""
    X, _ = blobs
    for leo in (fitted, adapted):
        assert_allclose(leo.transform(X[:50])[:3], leo.transform(X[:3]), atol=1e-6)


def test_later_partial_fit_continues_from_the_adapted_state(fitted, blobs):
    """Two calls on the same data take the latent steps of one call with twice as many."""
    X, y = blobs
    leo = copy_of(fitted)
    leo.set_params(finetune_steps=0)
    support = support_of(y, range(30, 35), per_class=2)
    leo.partial_fit(X[support], y[support]).partial_fit(X[support], y[support])
    core = leo._inference_core()
    features = leo._features(X[support].astype(np.float32))
    labels = torch.as_tensor(y[support] - 30)
    reference = core.adapt(features, labels, 5, inner_steps=2 * core.inner_steps)
    state = leo._adaptation.state
    assert_allclose(state.latent_codes, reference.latent_codes, rtol=1e-10)
    assert_array_equal(state.class_counts, 2 * reference.class_counts)
    # A third call changes the state again: it keeps adapting.
    leo.partial_fit(X[support], y[support])
    assert not np.allclose(leo._adaptation.state.latent_codes, state.latent_codes)


def test_binary_decision_function_is_one_column(fitted, blobs):
    """With two classes decision_function is 1-D, positive for the second class."""
    X, y = blobs
    support = support_of(y, [30, 31], per_class=3)
    leo = copy_of(fitted).partial_fit(X[support], y[support])
    scores = leo.decision_function(X[:40])
    assert scores.shape == (40,)
    assert_array_equal(leo.predict(X[:40]), np.where(scores > 0, 31, 30))


def test_partial_fit_in_pieces_with_classes(fitted, blobs):
    """`classes` opens a task whose classes arrive over several calls."""
    X, y = blobs
    leo = copy_of(fitted)
    first, second = support_of(y, [30, 31]), support_of(y, [32])
    leo.partial_fit(X[first], y[first], classes=[30, 31, 32])
    assert_array_equal(leo.classes_, [30, 31, 32])
    # Class 32 has no example yet: it is never predicted.
    assert np.isneginf(leo.decision_function(X[:5])[:, 2]).all()
    assert set(leo.predict(X[(y >= 30) & (y < 33)])) <= {30, 31}
    leo.partial_fit(X[second], y[second])
    assert np.isfinite(leo.decision_function(X[:5])).all()
    query = (y >= 30) & (y < 33)
    assert np.mean(leo.predict(X[query]) == y[query]) > 0.8


def test_partial_fit_label_checks_leave_the_estimator_unchanged(adapted, blobs):
    """Labels outside the task, other classes, or a one-class task are refused."""
    X, y = blobs
    leo = copy_of(adapted)
    before = leo.predict_proba(X[:20])
    with pytest.raises(ValueError, match="outside the classes of the task"):
        leo.partial_fit(X[y == 36][:2], y[y == 36][:2])
    with pytest.raises(ValueError, match="differs from the classes"):
        leo.partial_fit(X[y == 30][:1], y[y == 30][:1], classes=[30, 31])
    assert_array_equal(leo.predict_proba(X[:20]), before)
    assert_array_equal(leo.classes_, np.arange(30, 35))
    leo.reset_adaptation()
    with pytest.raises(ValueError, match="at least two classes"):
        leo.partial_fit(X[y == 30], y[y == 30])
    with pytest.raises(ValueError, match="not in classes"):
        leo.partial_fit(X[y < 32], y[y < 32], classes=[30, 31])
    assert not hasattr(leo, "predict")


def test_partial_fit_before_fit_initialises_the_network(blobs):
    """partial_fit on an unfitted estimator adapts a randomly initialised LEO."""
    X, y = blobs
    support = support_of(y, range(5), per_class=5)
    leo = small().partial_fit(X[support], y[support])
    assert_array_equal(leo.classes_, np.arange(5))
    assert leo.transform(X[:3]).shape == (3, 8)
    assert np.mean(leo.predict(X[y < 5]) == y[y < 5]) > 0.5
    assert not hasattr(leo.reset_adaptation(), "classes_")  # no training classes


def test_same_seed_same_model_other_seed_other_model(blobs):
    """Fits and adaptations are bit-for-bit repeatable for a seed on CPU."""
    X, y = blobs
    support = support_of(y, range(30, 35))
    outputs = []
    for seed in (3, 3, 4):
        leo = small(random_state=seed).fit(X[y < 30], y[y < 30])
        before = leo.transform(X)
        leo.partial_fit(X[support], y[support])
        outputs.append((before, leo.transform(X), leo.predict_proba(X)))
    for first, second in zip(outputs[0], outputs[1], strict=True):
        assert_array_equal(first, second)
    assert not np.allclose(outputs[0][0], outputs[2][0])


def test_outputs_do_not_depend_on_the_scale_of_the_features(blobs):
    """Internal standardisation: affine rescaled columns give the same model."""
    X, y = blobs
    scales = np.logspace(-3, 3, X.shape[1])
    rescaled = (X + 100.0) * scales
    plain = small().fit(X[y < 30], y[y < 30])
    scaled = small().fit(rescaled[y < 30], y[y < 30])
    assert_allclose(scaled.transform(rescaled[:20]), plain.transform(X[:20]), atol=1e-3)
    assert plain._feature_mean.dtype == np.float64
    assert plain._feature_scale.shape == (X.shape[1],)


def test_score_is_the_few_shot_accuracy(fitted, blobs):
    """score draws 100 seeded episodes with the estimator's own episode shape."""
    X, y = blobs
    new = y >= 30
    expected = evaluate_few_shot(
        fitted,
        X[new],
        y[new],
        n_way=5,
        k_shot=1,
        n_query=15,
        n_episodes=100,
        random_state=0,
    ).mean
    assert fitted.score(X[new], y[new]) == expected
    assert not hasattr(fitted, "predict")  # score leaves the estimator alone


def test_batched_evaluation_matches_partial_fit_and_predict(fitted, blobs):
    """The batched episode scores equal adapting to each episode in turn."""
    X, y = blobs
    new = y >= 30
    result = evaluate_few_shot(
        fitted, X[new], y[new], k_shot=2, n_query=5, n_episodes=30, random_state=1
    )
    from sklearn_meta.model_selection import _draw_episodes

    y_new, _, _, episodes = _draw_episodes(X[new], y[new], None, 5, 2, 5, 30, 1)
    sequential = one_by_one(fitted, X[new].astype(np.float32), y_new, episodes, False)
    assert_allclose(result.scores, sequential)
    chunked = fitted._few_shot_scores(X[new], episodes, chunk=7)
    assert_allclose(chunked, result.scores)


def test_pickle_joblib_and_clone(adapted, blobs, tmp_path):
    """pickle and joblib give identical outputs; clone gives an unfitted copy."""
    X, _ = blobs
    path = tmp_path / "leo.joblib"
    joblib.dump(adapted, path)
    for restored in (copy_of(adapted), joblib.load(path)):
        assert_array_equal(restored.transform(X), adapted.transform(X))
        assert_array_equal(restored.predict_proba(X), adapted.predict_proba(X))
    copy = clone(adapted)
    assert copy.get_params() == adapted.get_params()
    assert not hasattr(copy, "net_")
    with pytest.raises(NotFittedError):
        copy.transform(X[:2])


def test_clone_refit_gives_the_same_model(fitted, blobs):
    """A clone refitted on the same data is the same model."""
    X, y = blobs
    refit = clone(fitted).fit(X[y < 30], y[y < 30])
    assert_array_equal(refit.transform(X[:20]), fitted.transform(X[:20]))


def test_pipeline_with_scaler(blobs):
    """StandardScaler -> LEOTransformer fits, transforms, scores and adapts."""
    X, y = blobs
    pipe = make_pipeline(StandardScaler(), small())
    pipe.fit(X[y < 30], y[y < 30])
    assert pipe.transform(X[:4]).shape == (4, 8)
    assert pipe.score(X[y >= 30], y[y >= 30]) > 0.8
    support = support_of(y, range(30, 35))
    pipe[-1].partial_fit(pipe[0].transform(X[support]), y[support])
    assert pipe.predict(X[:3]).shape == (3,)


def test_pipeline_on_a_meta_learned_embedding(glyphs):
    """LEO on a MetaMetricClassifier embedding, as one pipeline (the paper's setup)."""
    X, y = glyphs
    flat = X.reshape(len(X), -1)
    train = y < 45
    pipe = make_pipeline(
        MetaMetricClassifier(
            backbone="conv4_strided",
            input_shape=(1, 28, 28),
            embedding_dim=16,
            n_query=3,
            max_epochs=1,
            episodes_per_epoch=20,
            random_state=0,
            device="cpu",
        ),
        small(n_query=3),
    )
    pipe.fit(flat[train], y[train])
    assert pipe.transform(flat[:5]).shape == (5, 8)
    score = pipe.score(flat[~train], y[~train])
    result = evaluate_few_shot(
        pipe, flat[~train], y[~train], n_query=3, random_state=0, n_episodes=100
    )
    assert score == result.mean
    assert score > 0.3  # chance is 0.2


def test_backbone_is_meta_trained_on_images(glyphs):
    """A conv backbone embeds images first; flat rows with input_shape agree."""
    X, y = glyphs
    params = dict(backbone="conv4_strided", embedding_dim=8, n_query=3)
    four_d = small(**params).fit(X, y)
    flat = small(**params, input_shape=(1, 28, 28)).fit(X.reshape(len(X), -1), y)
    assert four_d.input_shape_ == (1, 28, 28)
    assert four_d.module_.backbone is not None
    assert_allclose(
        four_d.transform(X[:6]), flat.transform(X[:6].reshape(6, -1)), atol=1e-5
    )
    support = support_of(y, range(5))
    four_d.partial_fit(X[support], y[support])
    assert four_d.predict(X[:4]).shape == (4,)


def test_grid_search_over_inner_lr_and_inner_steps_needs_no_scorer(blobs):
    """GridSearchCV with class-disjoint folds scores with the few-shot accuracy."""
    X, y = blobs
    search = GridSearchCV(
        small(),
        {"inner_lr": [0.1, 1.0], "inner_steps": [1, 3]},
        cv=ClassKFold(3),
    ).fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all()
    # The step size and count reach the score: the candidates differ.
    assert len(np.unique(scores)) == 4
    assert search.best_score_ > 0.8
    assert search.best_estimator_.inner_steps == search.best_params_["inner_steps"]


def test_pandas_in_and_out(blobs):
    """DataFrames keep feature names; set_output gives named latent columns."""
    pd = pytest.importorskip("pandas")
    X, y = blobs
    frame = pd.DataFrame(X, columns=[f"col{i}" for i in range(10)])
    leo = small().fit(frame, y)
    assert_array_equal(leo.feature_names_in_, frame.columns)
    leo.set_output(transform="pandas")
    out = leo.transform(frame.iloc[:4])
    assert list(out.columns) == [f"leotransformer{i}" for i in range(8)]
    assert_array_equal(leo.get_feature_names_out(), out.columns)


def test_fit_with_groups_and_task_lists(blobs):
    """Episodes can be drawn within tasks given as groups or as (X, y) pairs."""
    X, y = blobs
    groups = y // 10
    assert small(n_way=3).fit(X, y, groups=groups).transform(X[:2]).shape == (2, 8)
    tasks = [(X[groups == g], y[groups == g]) for g in range(4)]
    assert small(n_way=3).fit(tasks).n_features_in_ == 10


def test_validation_fraction_records_few_shot_accuracy(blobs):
    """Held-out classes give a valid_acc in the history every epoch."""
    X, y = blobs
    leo = small(validation_fraction=0.25, max_epochs=2).fit(X, y)
    assert len(leo.history_[:, "valid_acc"]) == 2


def test_tags_and_dtype(fitted, blobs):
    """transform returns float32 whatever the input dtype, as the tags say."""
    X, _ = blobs
    assert fitted.transform(X[:2].astype(np.float64)).dtype == np.float32


BAD_CALLS = [
    ("transform", lambda X, y: (X[:3, :5],), "expecting 10 features"),
    ("transform", lambda X, y: (np.full((2, 10), np.nan),), "NaN"),
    ("predict", lambda X, y: (X[:3, :5],), "expecting 10 features"),
    ("partial_fit", lambda X, y: (X[y == 30][:, :4], y[y == 30]), "expecting 10"),
    ("partial_fit", lambda X, y: (np.full((2, 10), np.inf), [30, 31]), "infinity"),
    ("partial_fit", lambda X, y: (X[:4], [0.1, 0.2, 0.3, 0.4]), "continuous"),
    ("fit", lambda X, y: (X[y < 1], y[y < 1]), "single episode"),
    ("fit", lambda X, y: (X, y + 0.5), "continuous"),
    ("fit", lambda X, y: (np.where(X > 3, np.nan, X), y), "NaN"),
    ("fit", lambda X, y: (X[:0], y[:0]), "0 sample"),
]


@pytest.mark.parametrize(("method", "arguments", "message"), BAD_CALLS)
def test_bad_input_raises_and_changes_nothing(
    adapted, blobs, method, arguments, message
):
    """Bad data raises a ValueError that says what is wrong; the model is kept."""
    X, y = blobs
    leo = copy_of(adapted)
    before = (leo.transform(X), leo.predict_proba(X), sorted(vars(leo)))
    with pytest.raises(ValueError, match=message):
        getattr(leo, method)(*arguments(X, y))
    after = (leo.transform(X), leo.predict_proba(X), sorted(vars(leo)))
    for old, new in zip(before, after, strict=True):
        assert_array_equal(old, new)


@pytest.mark.parametrize(
    "params",
    [
        {"latent_dim": 0},
        {"inner_lr": -1.0},
        {"inner_steps": -1},
        {"finetune_steps": 1.5},
        {"dropout": 1.0},
        {"kl_weight": -0.1},
        {"weight_decay": -1e-3},
        {"learn_inner_lr": "yes"},
        {"backbone": "resnet"},
        {"n_way": 1},
    ],
)
def test_out_of_range_parameters_are_refused(adapted, blobs, params):
    """Out-of-range parameters name themselves; a fitted estimator is unchanged."""
    X, y = blobs
    leo = copy_of(adapted).set_params(**params)
    before = leo.predict_proba(X)
    (name,) = params
    with pytest.raises(ValueError, match=name):
        leo.fit(X[y < 30], y[y < 30])
    assert_array_equal(leo.predict_proba(X), before)
    with pytest.raises(ValueError, match=name):
        clone(leo).partial_fit(X[y < 32], y[y < 32])


def test_training_step_adds_the_module_penalty():
    """MetaNet's step trains on forward_with_penalty's penalty; forward stays penalty-free."""
    from sklearn_meta._net import MetaNet
    from sklearn_meta.nn.losses import EpisodeLoss

    class Penalised(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, support_x, support_y, query_x):
            return self.scale * query_x

        def forward_with_penalty(self, support_x, support_y, query_x):
            return self(support_x, support_y, query_x), 10 * self.scale**2

    net = MetaNet(module=Penalised, criterion=EpisodeLoss(regression=False))
    net.initialize()
    inputs = {
        "support_x": torch.zeros(1, 2, 2),
        "support_y": torch.tensor([[0, 1]]),
        "query_x": torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]),
    }
    query_y = torch.tensor([[0, 1]])
    step = net.train_step_single((inputs, query_y))
    query_loss = net.criterion_(2 * inputs["query_x"], query_y)
    torch.testing.assert_close(step["loss"], query_loss + 40)
    scale = torch.tensor(2.0, requires_grad=True)
    (net.criterion_(scale * inputs["query_x"], query_y) + 10 * scale**2).backward()
    torch.testing.assert_close(net.module_.scale.grad, scale.grad)
    # Evaluation sees predictions only.
    torch.testing.assert_close(net.forward(inputs), 2 * inputs["query_x"])
