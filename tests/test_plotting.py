"""The Displays of sklearn_meta.plotting draw the numbers computed without them."""

import copy
import sys

import matplotlib
import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.decomposition import PCA, TruncatedSVD

from sklearn_meta import MAMLFeatureExtractor, MetaMetricClassifier
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.model_selection import evaluate_few_shot, evaluate_nearest_centroid
from sklearn_meta.plotting import (
    AdaptationCurveDisplay,
    EmbeddingDisplay,
    MetaTrainingDisplay,
    ShotCurveDisplay,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TINY = dict(max_epochs=2, episodes_per_epoch=16, meta_batch_size=4, random_state=0)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def split(blobs):
    X, y = blobs
    return X[y < 30], y[y < 30], X[y >= 30], y[y >= 30]


@pytest.fixture(scope="module")
def metric(split):
    X_train, y_train, _, _ = split
    clf = MetaMetricClassifier(
        hidden_layer_sizes=(32,), embedding_dim=8, validation_fraction=0.2, **TINY
    )
    return clf.fit(X_train, y_train)


@pytest.fixture(scope="module")
def maml(split):
    X_train, y_train, _, _ = split
    return MAMLFeatureExtractor(
        hidden_layer_sizes=(32,), embedding_dim=8, inner_lr=0.5, **TINY
    ).fit(X_train, y_train)


def test_adaptation_curve_draws_evaluate_few_shot_of_each_step(maml, split):
    """Each point is evaluate_few_shot of a copy with adapt_steps set to it."""
    _, _, X_new, y_new = split
    before = maml.get_params()
    display = AdaptationCurveDisplay.from_estimator(
        maml, X_new, y_new, steps=[1, 3], n_episodes=20, random_state=0
    )
    assert maml.get_params() == before
    expected = []
    for steps in (1, 3):
        candidate = copy.deepcopy(maml).set_params(adapt_steps=steps)
        expected.append(
            evaluate_few_shot(candidate, X_new, y_new, n_episodes=20, random_state=0)
        )
    assert_allclose(display.line_.get_xdata(), [1, 3])
    assert_allclose(display.line_.get_ydata(), [r.mean for r in expected])
    band = display.fill_between_.get_paths()[0].vertices[:, 1]
    assert_allclose(band.max(), max(r.mean + r.ci95 for r in expected))
    assert display.scores[0] != display.scores[1]  # the steps change the score
    assert display.param_name == "adapt_steps"
    assert display.ax_.get_xlabel() == "adaptation steps (adapt_steps)"
    assert display.figure_ is display.ax_.figure


def test_adaptation_curve_of_the_metric_classifier_varies_finetune_steps(metric, split):
    """Without adapt_steps the curve varies finetune_steps, on the given axes."""
    _, _, X_new, y_new = split
    _, ax = plt.subplots()
    display = AdaptationCurveDisplay.from_estimator(
        metric, X_new, y_new, steps=[0, 2], n_episodes=10, random_state=0, ax=ax
    )
    assert display.param_name == "finetune_steps"
    assert display.ax_ is ax
    assert metric.finetune_steps == 0
    zero_steps = evaluate_few_shot(metric, X_new, y_new, n_episodes=10, random_state=0)
    assert display.line_.get_ydata()[0] == pytest.approx(zero_steps.mean)


def test_adaptation_curve_of_regression_shows_the_mse():
    """For regression tasks the curve is the MSE, minus the negative-MSE score."""
    X, y, groups = make_sinusoid_tasks(n_tasks=40, n_points=20, random_state=0)
    maml = MAMLFeatureExtractor(
        hidden_layer_sizes=(16,), embedding_dim=8, inner_lr=0.01, k_shot=5, **TINY
    ).fit(X[groups < 30], y[groups < 30], groups=groups[groups < 30])
    new = groups >= 30
    display = AdaptationCurveDisplay.from_estimator(
        maml, X[new], y[new], groups=groups[new], steps=[1], n_episodes=10,
        random_state=0, k_shot=5,
    )  # fmt: skip
    expected = evaluate_few_shot(
        copy.deepcopy(maml).set_params(adapt_steps=1), X[new], y[new],
        groups=groups[new], k_shot=5, n_episodes=10, random_state=0,
    )  # fmt: skip
    assert display.score_name == "MSE"
    assert display.line_.get_ydata()[0] == pytest.approx(-expected.mean)


def test_adaptation_curve_warns_when_the_parameter_changes_nothing(metric, split):
    """A parameter not read at adaptation gives a flat curve and a warning."""
    _, _, X_new, y_new = split
    with pytest.warns(UserWarning, match="does not read finetune_lr"):
        display = AdaptationCurveDisplay.from_estimator(
            metric, X_new, y_new, steps=[1e-3, 1e-1], param_name="finetune_lr",
            n_episodes=5, random_state=0,
        )  # fmt: skip
    assert display.scores[0] == display.scores[1]


def test_adaptation_curve_needs_a_step_parameter(split):
    """An estimator with no step parameter gets a message naming param_name."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y, _, _ = split
    scaler = make_pipeline(StandardScaler()).fit(X, y)
    with pytest.raises(ValueError, match="pass param_name"):
        AdaptationCurveDisplay.from_estimator(scaler, X, y)


def test_shot_curve_draws_the_learner_and_the_baseline_on_the_same_episodes(
    metric, split
):
    """Both curves are evaluate_few_shot and evaluate_nearest_centroid per k-shot."""
    _, _, X_new, y_new = split
    display = ShotCurveDisplay.from_estimator(
        metric, X_new, y_new, shots=[1, 5], n_episodes=15, random_state=0
    )
    for index, k_shot in enumerate((1, 5)):
        common = dict(k_shot=k_shot, n_episodes=15, random_state=0)
        learned = evaluate_few_shot(metric, X_new, y_new, **common)
        pixels = evaluate_nearest_centroid(X_new, y_new, **common)
        assert display.line_.get_ydata()[index] == pytest.approx(learned.mean)
        assert display.baseline_line_.get_ydata()[index] == pytest.approx(pixels.mean)
        assert display.ci95[index] == pytest.approx(learned.ci95)
    assert_allclose(display.line_.get_xdata(), [1, 5])
    assert display.line_.get_label() == "MetaMetricClassifier"


def test_shot_curve_without_baseline(metric, split):
    """baseline=False draws the meta-learner alone."""
    _, _, X_new, y_new = split
    display = ShotCurveDisplay.from_estimator(
        metric, X_new, y_new, shots=[1], n_episodes=5, baseline=False, name="mine"
    )
    assert display.baseline_line_ is None
    assert display.line_.get_label() == "mine"
    assert len(display.ax_.get_lines()) == 1


def test_meta_training_display_draws_the_history(metric):
    """Batch losses against episodes seen, validation accuracy at epoch ends."""
    display = MetaTrainingDisplay.from_estimator(metric)
    history = metric.history_
    losses = [
        batch["train_loss"]
        for epoch in history
        for batch in epoch["batches"]
        if "train_loss" in batch
    ]
    assert_allclose(display.line_.get_ydata(), losses)
    assert_allclose(display.line_.get_xdata(), np.arange(1, len(losses) + 1) * 4)
    assert_allclose(display.valid_line_.get_xdata(), [16, 32])
    assert_allclose(display.valid_line_.get_ydata(), history[:, "valid_acc"])
    assert display.valid_ax_ is not display.ax_


def test_meta_training_display_without_validation(maml):
    """Without held-out classes there is no validation curve."""
    display = MetaTrainingDisplay.from_estimator(maml)
    assert display.valid_line_ is None
    assert display.valid_ax_ is None
    assert display.line_.get_xdata()[-1] == 32


def test_embedding_display_maps_transform_by_pca(metric, split):
    """Without adaptation the points are PCA of transform; k_shot stars per class."""
    _, _, X_new, y_new = split
    new = y_new < 33
    display = EmbeddingDisplay.from_estimator(
        metric, X_new[new], y_new[new], k_shot=2, adapt=False, random_state=0
    )
    points = PCA(n_components=2).fit_transform(metric.transform(X_new[new]))
    labels, is_support = y_new[new], display.is_support
    assert len(display.scatters_) == 3
    for index, label in enumerate(np.unique(labels)):
        mine = labels == label
        assert_allclose(
            display.scatters_[index].get_offsets(), points[mine & ~is_support]
        )
        assert_allclose(
            display.support_scatters_[index].get_offsets(), points[mine & is_support]
        )
        assert (mine & is_support).sum() == 2


def test_embedding_display_adapts_a_copy(maml, split):
    """adapt=True maps an adapted copy's features and leaves the estimator as it was."""
    _, _, X_new, y_new = split
    new = y_new < 35
    before = maml.transform(X_new[new])
    display = EmbeddingDisplay.from_estimator(
        maml, X_new[new], y_new[new], k_shot=3, random_state=0
    )
    assert_allclose(maml.transform(X_new[new]), before)
    adapted = copy.deepcopy(maml).partial_fit(
        X_new[new][display.is_support], y_new[new][display.is_support]
    )
    points = PCA(n_components=2).fit_transform(adapted.transform(X_new[new]))
    assert_allclose(np.abs(display.embedding), np.abs(points), rtol=1e-4, atol=1e-5)
    assert not np.allclose(
        np.abs(display.embedding), np.abs(PCA(2).fit_transform(before))
    )


def test_embedding_display_takes_another_projection(metric, split):
    """A projection other than PCA names its axes after itself."""
    _, _, X_new, y_new = split
    display = EmbeddingDisplay.from_estimator(
        metric, X_new, y_new, adapt=False, projection=TruncatedSVD(n_components=2)
    )
    assert display.ax_.get_xlabel() == "TruncatedSVD 1"


def test_embedding_display_needs_more_samples_than_shots(metric, split):
    """A class with no sample left beyond its support set is refused."""
    _, _, X_new, y_new = split
    with pytest.raises(ValueError, match="lower k_shot"):
        EmbeddingDisplay.from_estimator(metric, X_new, y_new, k_shot=20)


def test_displays_say_how_to_get_matplotlib(monkeypatch):
    """Without matplotlib, plotting fails with an ImportError naming the install."""
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    display = ShotCurveDisplay(shots=[1], scores=[0.5], ci95=[0.1])
    with pytest.raises(ImportError, match="pip install matplotlib"):
        display.plot()
