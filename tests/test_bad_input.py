"""Bad input: every public entry point fails with a clear error and changes nothing."""

import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from sklearn.exceptions import NotFittedError

from sklearn_meta import (
    LEOTransformer,
    MAMLFeatureExtractor,
    MetaMetricClassifier,
    TaskCollection,
)
from sklearn_meta.model_selection import (
    ClassKFold,
    evaluate_few_shot,
    evaluate_nearest_centroid,
    make_few_shot_scorer,
)

SMALL = dict(
    max_epochs=1,
    episodes_per_epoch=10,
    random_state=0,
    hidden_layer_sizes=(16,),
    embedding_dim=8,
    device="cpu",
)


FACTORIES = {
    "metric": lambda **p: MetaMetricClassifier(**{**SMALL, **p}),
    "maml": lambda **p: MAMLFeatureExtractor(**{**SMALL, **p}),
    "leo": lambda **p: LEOTransformer(**{**SMALL, "latent_dim": 8, **p}),
}


def _data(n_classes=8, n_per_class=6, n_features=5):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(n_classes), n_per_class)
    return rng.normal(size=(len(y), n_features)) + y[:, None], y


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def fitted(request):
    """A fitted and adapted estimator of every kind."""
    X, y = _data()
    estimator = FACTORIES[request.param]().fit(X, y)
    return estimator.partial_fit(X[::6][:4], y[::6][:4])


def _outputs(estimator, X):
    """Everything an estimator answers, to compare before and after a failed call."""
    outputs = {"transform": estimator.transform(X)}
    if hasattr(estimator, "predict_proba"):
        outputs["proba"] = estimator.predict_proba(X)
    state = {k: v for k, v in vars(estimator).items() if not k.startswith("net")}
    return outputs, sorted(state)


def _assert_unchanged(estimator, before, X):
    after = _outputs(estimator, X)
    assert before[1] == after[1]
    for key, value in before[0].items():
        assert_array_equal(value, after[0][key])


X_GOOD, Y_GOOD = _data()
NAN = X_GOOD.copy()
NAN[0, 0] = np.nan
INF = X_GOOD.copy()
INF[1, 1] = np.inf

FIT_CASES = [
    ("nan", NAN, Y_GOOD, {}, "NaN"),
    ("inf", INF, Y_GOOD, {}, "infinity"),
    ("empty", np.zeros((0, 5)), np.zeros(0), {}, "0 sample"),
    (
        "one sample",
        X_GOOD[:1],
        Y_GOOD[:1],
        {},
        "at least two classes|1 sample|one class",
    ),
    ("one class", X_GOOD[:6], Y_GOOD[:6], {}, "two classes|one class|1 class"),
    (
        "object",
        np.full(X_GOOD.shape, "a", dtype=object),
        Y_GOOD,
        {},
        "convert|numeric|dtype",
    ),
    ("complex", X_GOOD + 1j, Y_GOOD, {}, "[Cc]omplex"),
    ("y length", X_GOOD, Y_GOOD[:-1], {}, "inconsistent numbers of samples"),
    ("3-d X", X_GOOD.reshape(48, 5, 1), Y_GOOD, {}, "2-D|4-D|dim"),
    ("groups length", X_GOOD, Y_GOOD, {"groups": np.zeros(3)}, "groups"),
    ("no y", X_GOOD, None, {}, "requires y"),
]


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@pytest.mark.parametrize(
    "case, X, y, kwargs, match", FIT_CASES, ids=[c[0] for c in FIT_CASES]
)
def test_fit_rejects_bad_data(kind, case, X, y, kwargs, match):
    """fit on bad data raises a ValueError saying what is wrong."""
    with pytest.raises(ValueError, match=match):
        FACTORIES[kind]().fit(X, y, **kwargs)


PARAM_CASES = [
    ({"n_way": 1}, "n_way"),
    ({"k_shot": 0}, "k_shot"),
    ({"n_query": 0}, "n_query"),
    ({"meta_lr": 0.0}, "meta_lr"),
    ({"meta_lr": -1.0}, "meta_lr"),
    ({"max_epochs": 0}, "max_epochs"),
    ({"episodes_per_epoch": 0}, "episodes_per_epoch"),
    ({"meta_batch_size": 0}, "meta_batch_size"),
    ({"embedding_dim": 0}, "embedding_dim"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"validation_fraction": 0.01}, "validation_fraction"),
    ({"backbone": "resnet"}, "backbone"),
    ({"input_shape": (2, 2)}, "input_shape"),
    ({"input_shape": (0, 5)}, "input_shape"),
    ({"device": "tpu"}, "device"),
    ({"verbose": -1}, "verbose"),
    ({"augment": "shift"}, "augment"),
]


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@pytest.mark.parametrize(
    "params, match", PARAM_CASES, ids=[str(c[0]) for c in PARAM_CASES]
)
def test_fit_rejects_out_of_range_parameters(kind, params, match):
    """Out-of-range parameters are refused at fit with their name in the message."""
    with pytest.raises(ValueError, match=match):
        FACTORIES[kind](**params).fit(X_GOOD, Y_GOOD)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without GPU")
@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_cuda_without_gpu_is_a_clear_error(kind):
    """device='cuda' on a CPU-only machine says to use 'cpu' or 'auto'."""
    with pytest.raises(ValueError, match="no CUDA GPU"):
        FACTORIES[kind](device="cuda").fit(X_GOOD, Y_GOOD)


def test_augment_of_the_wrong_shape_is_refused_before_training(fitted):
    """An augmentation that changes the sample shape fails at once, changing nothing."""
    before = _outputs(fitted, X_GOOD)
    params = fitted.get_params()
    fitted.set_params(augment=lambda x: x[:, :2])
    try:
        with pytest.raises(ValueError, match="augment must return a tensor shaped"):
            fitted.fit(X_GOOD, Y_GOOD)
    finally:
        fitted.set_params(**params)
    _assert_unchanged(fitted, before, X_GOOD)


def test_failed_fit_leaves_a_fitted_estimator_unchanged(fitted):
    """A refit that fails keeps the previous model exactly."""
    before = _outputs(fitted, X_GOOD)
    for _case, X, y, kwargs, _ in FIT_CASES:
        with pytest.raises(ValueError):
            fitted.fit(X, y, **kwargs)
    _assert_unchanged(fitted, before, X_GOOD)


@pytest.mark.parametrize(
    "method", ["transform", "predict", "predict_proba", "partial_fit"]
)
@pytest.mark.parametrize(
    "X, match",
    [
        (X_GOOD[:, :3], "features"),
        (NAN, "NaN"),
        (np.zeros((0, 5)), "0 sample"),
        (X_GOOD + 1j, "[Cc]omplex"),
    ],
    ids=["feature count", "nan", "empty", "complex"],
)
def test_inference_rejects_bad_data_and_changes_nothing(fitted, method, X, match):
    """Bad X at transform/predict/partial_fit raises and leaves the model as it was."""
    if not hasattr(fitted, method):
        pytest.skip(f"{type(fitted).__name__} has no {method}")
    before = _outputs(fitted, X_GOOD)
    args = (X, Y_GOOD[: len(X)]) if method == "partial_fit" else (X,)
    with pytest.raises(ValueError, match=match):
        getattr(fitted, method)(*args)
    _assert_unchanged(fitted, before, X_GOOD)


def test_partial_fit_rejects_bad_labels_and_changes_nothing(fitted):
    """Wrong-length or continuous y in partial_fit is refused without side effects."""
    before = _outputs(fitted, X_GOOD)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        fitted.partial_fit(X_GOOD[:4], Y_GOOD[:3])
    with pytest.raises(ValueError, match="continuous|Unknown label type"):
        fitted.partial_fit(X_GOOD[:4], np.linspace(0, 1, 4))
    _assert_unchanged(fitted, before, X_GOOD)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@pytest.mark.parametrize("method", ["transform", "predict", "predict_proba"])
def test_unfitted_estimator_raises_not_fitted(kind, method):
    """Inference before fit is a NotFittedError (or the method is absent)."""
    estimator = FACTORIES[kind]()
    if not hasattr(estimator, method):
        return
    with pytest.raises(NotFittedError):
        getattr(estimator, method)(X_GOOD)


def test_images_of_the_wrong_shape_are_refused():
    """An image estimator refuses images of another size at transform."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 1, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(4), 6)
    clf = MetaMetricClassifier(**{**SMALL, "backbone": "conv4_strided"}).fit(X, y)
    with pytest.raises(ValueError, match="images of shape"):
        clf.transform(rng.normal(size=(2, 1, 4, 16)))
    with pytest.raises(ValueError, match="features"):
        clf.transform(rng.normal(size=(2, 1, 9, 9)))


def test_images_too_small_for_max_pooling():
    """Four max-pooling halvings on 8x8 images are refused with a way out."""
    X = np.zeros((24, 1, 8, 8), dtype=np.float32)
    y = np.repeat(np.arange(4), 6)
    with pytest.raises(ValueError, match="too small.*conv4_strided"):
        MetaMetricClassifier(**{**SMALL, "backbone": "conv4"}).fit(X, y)


def test_input_shape_that_does_not_match_the_features():
    """input_shape whose product differs from the feature count says so."""
    with pytest.raises(ValueError, match="input_shape=\\(1, 2, 2\\) holds 4 values"):
        MetaMetricClassifier(**{**SMALL, "input_shape": (1, 2, 2)}).fit(X_GOOD, Y_GOOD)


def test_conv_backbone_on_rows_without_input_shape():
    """A Conv4 on tabular rows says to pass images or input_shape."""
    with pytest.raises(ValueError, match="input_shape"):
        MetaMetricClassifier(**{**SMALL, "backbone": "conv4"}).fit(X_GOOD, Y_GOOD)


def test_continuous_y_is_refused_by_the_classifier():
    """The classifier does not take regression targets."""
    with pytest.raises(ValueError, match="Unknown label type|continuous"):
        MetaMetricClassifier(**SMALL).fit(X_GOOD, np.linspace(0, 1, len(X_GOOD)))


def test_groups_with_a_list_of_tasks_is_refused():
    """Tasks already define the groups."""
    tasks = [(X_GOOD[:24], Y_GOOD[:24]), (X_GOOD[24:], Y_GOOD[24:])]
    with pytest.raises(ValueError, match="groups must be None"):
        MetaMetricClassifier(**SMALL).fit(tasks, groups=[0, 1])
    with pytest.raises(ValueError, match="same shape"):
        TaskCollection([(X_GOOD[:4], Y_GOOD[:4]), (X_GOOD[:4, :2], Y_GOOD[:4])])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_way": 1}, "n_way"),
        ({"k_shot": 0}, "k_shot"),
        ({"n_episodes": 0}, "n_episodes"),
        ({"n_query": 1.5}, "n_query"),
    ],
)
def test_evaluation_and_scorer_parameters(fitted, kwargs, match):
    """evaluate_few_shot and make_few_shot_scorer check their parameters."""
    with pytest.raises(ValueError, match=match):
        evaluate_few_shot(fitted.reset_adaptation(), X_GOOD, Y_GOOD, **kwargs)
    with pytest.raises(ValueError, match=match):
        make_few_shot_scorer(**kwargs)
    with pytest.raises(ValueError, match=match):
        evaluate_nearest_centroid(X_GOOD, Y_GOOD, **kwargs)


def test_evaluation_data_checks(fitted):
    """Mismatched lengths, unusable classes and non-meta-learners are refused."""
    with pytest.raises(ValueError, match="samples but y has"):
        evaluate_few_shot(fitted, X_GOOD, Y_GOOD[:-1])
    with pytest.raises(ValueError, match="lower k_shot"):
        evaluate_few_shot(fitted, X_GOOD, Y_GOOD, k_shot=6)
    with pytest.raises(ValueError, match="groups=task_ids"):
        evaluate_few_shot(fitted, X_GOOD, np.linspace(0, 1, len(Y_GOOD)))
    with pytest.raises(ValueError, match="sklearn-meta estimator"):
        evaluate_few_shot(object(), X_GOOD, Y_GOOD)
    unfitted = MetaMetricClassifier()
    with pytest.raises(NotFittedError):
        evaluate_few_shot(unfitted, X_GOOD, Y_GOOD)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_splits": 1}, "at least 2"),
        ({"n_splits": 2.5}, "must be an int"),
        ({"shuffle": "yes"}, "True or False"),
    ],
)
def test_class_k_fold_parameters(kwargs, match):
    """ClassKFold checks its parameters."""
    with pytest.raises(ValueError, match=match):
        ClassKFold(**kwargs)


def test_class_k_fold_data():
    """Too few classes for the folds, or no y, are refused."""
    with pytest.raises(ValueError, match="lower n_splits"):
        list(ClassKFold(5).split(X_GOOD[:12], Y_GOOD[:12]))
    with pytest.raises(ValueError, match="needs y"):
        list(ClassKFold(2).split(X_GOOD))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        list(ClassKFold(2).split(X_GOOD[:5], Y_GOOD))


def test_failed_partial_fit_on_an_adapted_estimator_keeps_its_task(fitted):
    """A refused partial_fit keeps the task being adapted."""
    clone = pickle.loads(pickle.dumps(fitted))
    before = _outputs(clone, X_GOOD)
    with pytest.raises(ValueError):
        clone.partial_fit(X_GOOD[:3, :2], Y_GOOD[:3])
    _assert_unchanged(clone, before, X_GOOD)


# -- no silent wrong answers ---------------------------------------------------

MAML_LEO = ["leo", "maml"]


@pytest.fixture(scope="module")
def blob_split():
    """Training classes 0-5 and new classes 6-9 of well separated blobs."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(10), 12)
    X = rng.normal(size=(10, 6))[y] * 4 + rng.normal(size=(len(y), 6))
    return X[y < 6], y[y < 6], X[y >= 6], y[y >= 6]


def test_metric_classifier_scores_few_shot_on_new_classes(blob_split):
    """score on classes never seen is the few-shot accuracy, not 0.0."""
    X_train, y_train, X_new, y_new = blob_split
    clf = FACTORIES["metric"](n_way=3, n_query=3).fit(X_train, y_train)
    assert clf.score(X_new, y_new) > 0.6
    support = np.flatnonzero(np.arange(len(y_new)) % 12 < 3)
    query = np.setdiff1d(np.arange(len(y_new)), support)
    # The same number evaluate_few_shot reports, with the estimator's episodes.
    expected = evaluate_few_shot(
        clf, X_new, y_new, n_way=3, k_shot=1, n_query=3, n_episodes=100, random_state=0
    ).mean
    assert clf.score(X_new, y_new) == expected
    clf.partial_fit(X_new[support], y_new[support])
    assert clf.score(X_new[query], y_new[query]) == pytest.approx(
        evaluate_few_shot(
            clf.reset_adaptation(),
            X_new[query],
            y_new[query],
            n_way=3,
            n_query=3,
            n_episodes=100,
            random_state=0,
        ).mean
    )


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_scoring_training_classes_warns(kind, blob_split):
    """Few-shot scores on classes seen in meta-training warn; new classes do not."""
    import warnings

    X_train, y_train, X_new, y_new = blob_split
    estimator = FACTORIES[kind](n_way=3, n_query=3).fit(X_train, y_train)
    with pytest.warns(UserWarning, match="6 of the 6 classes scored were seen"):
        estimator.score(X_train, y_train)
    with pytest.warns(UserWarning, match="cv=ClassKFold"):
        make_few_shot_scorer(n_way=3, n_query=3, n_episodes=5)(
            estimator, X_train, y_train
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimator.score(X_new, y_new)


def test_cross_val_score_with_stratified_folds_warns(blob_split):
    """The default cv of cross_val_score shares classes between folds: it warns."""
    from sklearn.model_selection import cross_val_score

    X_train, y_train, _, _ = blob_split
    with pytest.warns(UserWarning, match="seen in meta-training"):
        cross_val_score(FACTORIES["metric"](n_way=3, n_query=2), X_train, y_train, cv=2)


def test_values_beyond_float32_are_refused(fitted):
    """A feature of 1e39 (infinite in float32) is refused instead of giving NaN."""
    from sklearn.base import clone

    X = X_GOOD.copy()
    X[0, 0] = 1e39
    with pytest.raises(ValueError, match="beyond float32's range"):
        clone(fitted).fit(X, Y_GOOD)
    with pytest.raises(ValueError, match="scale X"):
        fitted.transform(X)
    if hasattr(fitted, "predict_proba"):
        with pytest.raises(ValueError, match="beyond float32's range"):
            fitted.predict_proba(X)


def test_diverging_finetuning_is_refused_and_keeps_the_task(blob_split):
    """finetune_lr that makes the weights non-finite is refused; the task is kept."""
    X_train, y_train, X_new, y_new = blob_split
    clf = FACTORIES["metric"](finetune_steps=3, finetune_lr=1e-2).fit(X_train, y_train)
    clf.partial_fit(X_new[::12], y_new[::12])
    before = clf.predict_proba(X_new)
    clf.set_params(finetune_lr=1e38)
    with pytest.raises(ValueError, match="fine-tuning diverged.*finetune_lr"):
        clf.partial_fit(X_new[1::12], y_new[1::12])
    assert_array_equal(clf.predict_proba(X_new), before)
    assert np.isfinite(before).all()


@pytest.mark.parametrize("kind", MAML_LEO)
def test_predict_before_partial_fit_says_what_to_call(kind):
    """predict before any partial_fit: an AttributeError naming partial_fit."""
    estimator = FACTORIES[kind]().fit(X_GOOD, Y_GOOD)
    for method in ("predict", "predict_proba"):
        assert not hasattr(estimator, method)
        with pytest.raises(AttributeError, match="call partial_fit on the new task"):
            getattr(estimator, method)(X_GOOD)
    estimator.partial_fit(X_GOOD[::6][:4], Y_GOOD[::6][:4])
    assert estimator.predict(X_GOOD).shape == (len(X_GOOD),)
    estimator.reset_adaptation()
    assert not hasattr(estimator, "predict")


def _adapted_proba(estimator):
    estimator.reset_adaptation().partial_fit(X_GOOD[::6][:4], Y_GOOD[::6][:4])
    return estimator.predict_proba(X_GOOD)


@pytest.mark.parametrize(
    "kind, changes",
    [
        ("maml", {"inner_lr": 0.5}),
        ("leo", {"inner_lr": 3.0}),
        ("leo", {"inner_steps": 1}),
        ("leo", {"finetune_lr": 0.5}),
        ("leo", {"finetune_steps": 0}),
        ("metric", {"finetune_steps": 2, "finetune_lr": 0.05}),
    ],
)
def test_adaptation_parameters_are_live_after_set_params(kind, changes):
    """set_params after fit changes the next adaptation, and changing back restores it."""
    estimator = FACTORIES[kind]().fit(X_GOOD, Y_GOOD)
    original = {name: estimator.get_params()[name] for name in changes}
    before = _adapted_proba(estimator)
    changed = _adapted_proba(estimator.set_params(**changes))
    assert np.abs(changed - before).max() > 1e-6
    assert_array_equal(_adapted_proba(estimator.set_params(**original)), before)


@pytest.mark.parametrize(
    "kind, name", [("maml", "inner_lr"), ("leo", "inner_lr"), ("leo", "finetune_lr")]
)
def test_changing_a_learned_step_size_is_refused(kind, name):
    """With learn_inner_lr=True the step sizes are learned: a new value is refused."""
    # A number to double: MAML's default is "auto".
    start = {"maml": {"inner_lr": 0.4}}.get(kind, {})
    estimator = FACTORIES[kind](learn_inner_lr=True, **start).fit(X_GOOD, Y_GOOD)
    value = estimator.get_params()[name]
    estimator.set_params(**{name: value * 2})
    with pytest.raises(ValueError, match=f"{name}=.*learned.*set {name} back"):
        estimator.partial_fit(X_GOOD[::6][:4], Y_GOOD[::6][:4])
    estimator.set_params(**{name: value}).partial_fit(X_GOOD[::6][:4], Y_GOOD[::6][:4])


def test_zero_adaptation_steps_refused_for_classification_only():
    """adapt_steps=0 cannot classify (every class scores the same); regression may."""
    from sklearn_meta.datasets import make_sinusoid_tasks

    maml = FACTORIES["maml"](adapt_steps=0).fit(X_GOOD, Y_GOOD)
    with pytest.raises(ValueError, match="adapt_steps=0.*adapt_steps >= 1"):
        maml.partial_fit(X_GOOD[::6][:4], Y_GOOD[::6][:4])
    with pytest.raises(ValueError, match="adapt_steps=0"):
        maml.score(X_GOOD, Y_GOOD)
    X, y, groups = make_sinusoid_tasks(n_tasks=10, n_points=10, random_state=0)
    regressor = FACTORIES["maml"](adapt_steps=0, k_shot=5, n_query=5)
    regressor.fit(X, y, groups=groups)
    assert np.isfinite(regressor.partial_fit(X[:5], y[:5]).predict(X[:5])).all()


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_callbacks_are_checked_before_training(kind):
    """Monitoring validation scores without validation, or a non-callback, is refused."""
    from skorch.callbacks import Checkpoint, EarlyStopping

    for callback in (EarlyStopping(), Checkpoint(dirname="unused")):
        with pytest.raises(ValueError, match="validation_fraction"):
            FACTORIES[kind](callbacks=[callback]).fit(X_GOOD, Y_GOOD)
    with pytest.raises(ValueError, match="skorch callbacks.*'x'"):
        FACTORIES[kind](callbacks=["x"]).fit(X_GOOD, Y_GOOD)
    FACTORIES[kind](
        callbacks=[EarlyStopping(patience=1)], validation_fraction=0.25
    ).fit(X_GOOD, Y_GOOD)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@pytest.mark.parametrize("sizes", [(-8,), (16.5,), (0,), (16, None)])
def test_hidden_layer_sizes_must_be_positive_ints(kind, sizes):
    """Negative, fractional or zero widths are refused in fit and partial_fit."""
    backbone = {"leo": {"backbone": "mlp"}}.get(kind, {})
    estimator = FACTORIES[kind](hidden_layer_sizes=sizes, **backbone)
    with pytest.raises(ValueError, match="hidden_layer_sizes must be positive ints"):
        estimator.fit(X_GOOD, Y_GOOD)
    with pytest.raises(ValueError, match="hidden_layer_sizes must be positive ints"):
        estimator.partial_fit(X_GOOD[:4], Y_GOOD[:4])


@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_images_are_refused_with_the_fix(channels):
    """(N, H, W, C) images, or input_shape=(H, W, C), name np.moveaxis."""
    X = np.zeros((24, 8, 8, channels), dtype=np.float32)
    y = np.repeat(np.arange(4), 6)
    with pytest.raises(ValueError, match=r"channels-last.*np.moveaxis\(X, -1, 1\)"):
        MetaMetricClassifier(**SMALL).fit(X, y)
    with pytest.raises(ValueError, match=r"channels-last.*moveaxis"):
        MetaMetricClassifier(**{**SMALL, "input_shape": (8, 8, channels)}).fit(
            X.reshape(24, -1), y
        )


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([0, "a"] * 24, dtype=object), "mixes string and number"),
        (np.array([0, 1, None] * 16, dtype=object), "None labels"),
    ],
    ids=["mixed", "none"],
)
def test_mixed_or_missing_labels_are_refused(kind, labels, match):
    """Labels mixing types or holding None are refused in fit and partial_fit."""
    with pytest.raises(ValueError, match=match):
        FACTORIES[kind]().fit(X_GOOD, labels)
    with pytest.raises(ValueError, match=match):
        FACTORIES[kind]().partial_fit(X_GOOD[:6], labels[:6])


def test_rows_of_two_features_as_a_list_are_samples_not_tasks():
    """fit(list_of_rows) without y asks for y instead of complaining about 'task 0'."""
    with pytest.raises(ValueError, match="requires y"):
        MetaMetricClassifier(**SMALL).fit(X_GOOD[:, :2].tolist())


def test_images_as_nested_lists_equal_the_array():
    """A 4-D list of images fits like the array it spells."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 1, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(4), 6)
    params = {**SMALL, "backbone": "conv4_strided"}
    from_list = MetaMetricClassifier(**params).fit(X.tolist(), y)
    from_array = MetaMetricClassifier(**params).fit(X, y)
    assert from_list.input_shape_ == (1, 8, 8)
    assert_array_equal(from_list.transform(X.tolist()), from_array.transform(X))


def test_augment_returning_numpy_is_named():
    """An augment that returns a numpy array is told to return a tensor."""
    clf = MetaMetricClassifier(**SMALL, augment=lambda x: x.numpy())
    with pytest.raises(ValueError, match="must return a torch.Tensor, got ndarray"):
        clf.fit(X_GOOD, Y_GOOD)


def test_string_targets_at_regression_partial_fit_are_refused():
    """A regressor adapted with string targets gets a ValueError, not a torch error."""
    from sklearn_meta.datasets import make_sinusoid_tasks

    X, y, groups = make_sinusoid_tasks(n_tasks=10, n_points=10, random_state=0)
    regressor = FACTORIES["maml"](k_shot=5, n_query=5).fit(X, y, groups=groups)
    with pytest.raises(ValueError, match="regression.*pass numbers"):
        regressor.partial_fit(X[:4], np.array(["a", "b", "a", "b"]))
