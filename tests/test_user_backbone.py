"""A user's own torch network as the backbone: shapes, weights, BatchNorm."""

import os

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback
from torch import nn

from sklearn_meta import LEOTransformer, MAMLFeatureExtractor, MetaMetricClassifier
from sklearn_meta.datasets import make_glyph_tasks
from sklearn_meta.model_selection import ClassKFold, evaluate_few_shot
from sklearn_meta.nn import batch_statistics, calibrate_batch_norm

TINY = dict(
    max_epochs=1,
    random_state=0,
    device=os.environ.get("SKLEARN_META_TEST_DEVICE", "cpu"),
)


class ImagesOnly(nn.Module):
    """Fails loudly unless it receives image batches ``(n, 1, 28, 28)``."""

    def forward(self, x):
        if tuple(x.shape[1:]) != (1, 28, 28):
            raise AssertionError(f"the backbone received samples of shape {x.shape}")
        return x


def conv_net(batch_norm: bool, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [ImagesOnly(), nn.Conv2d(1, 8, 3, stride=2, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()]
    return nn.Sequential(*layers)


def make_estimator(name, backbone, **params):
    if name == "metric":
        return MetaMetricClassifier(backbone=backbone, episodes_per_epoch=4, **params)
    if name == "leo":
        return LEOTransformer(
            backbone=backbone, latent_dim=4, episodes_per_epoch=4, **params
        )
    return MAMLFeatureExtractor(
        backbone=backbone,
        episodes_per_epoch=4,
        meta_batch_size=2,
        n_query=2,
        **params,
    )


@pytest.fixture(scope="module")
def glyphs():
    X, y = make_glyph_tasks(n_classes=12, n_per_class=8, random_state=0)
    return X, y


ESTIMATORS = ["metric", "leo", "maml"]


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("name", ESTIMATORS)
def test_user_conv_net_every_entry_point(glyphs, name, batch_norm):
    """fit, transform, partial_fit, predict and evaluation hand the net images."""
    X, y = glyphs
    train = y < 8
    estimator = make_estimator(name, conv_net(batch_norm), **TINY)
    estimator.fit(X[train], y[train])
    assert estimator.transform(X[:3]).shape[0] == 3
    evaluate_few_shot(estimator, X[~train], y[~train], n_episodes=3, n_query=2)
    support = ~train & (np.arange(len(y)) % 8 < 2)
    estimator.partial_fit(X[support], y[support])
    assert set(estimator.predict(X[~train])) <= set(np.unique(y[~train]))


@pytest.mark.parametrize("name", ESTIMATORS)
def test_user_conv_net_on_flat_rows_with_input_shape(glyphs, name):
    """Flat rows with input_shape reach the net as images, before and after fit."""
    X, y = glyphs
    rows = X.reshape(len(X), -1)
    train = y < 8
    support = ~train & (np.arange(len(y)) % 8 < 2)
    unfitted = make_estimator(name, conv_net(True), input_shape=(1, 28, 28), **TINY)
    unfitted.partial_fit(rows[support], y[support]).predict(rows[~train])
    fitted = make_estimator(name, conv_net(True), input_shape=(1, 28, 28), **TINY)
    fitted.fit(rows[train], y[train]).transform(rows[:2])


def test_grid_search_over_maml_with_user_conv_net(glyphs):
    """GridSearchCV clones, fits and scores a MAML estimator with a conv net."""
    X, y = glyphs
    rows = X.reshape(len(X), -1)
    search = GridSearchCV(
        make_estimator("maml", conv_net(True), input_shape=(1, 28, 28), **TINY),
        {"inner_lr": [0.05, 0.2]},
        cv=ClassKFold(2),
    )
    search.fit(rows, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def _pretrained_net() -> nn.Module:
    net = conv_net(True, seed=3)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.copy_(
                torch.linspace(-0.5, 0.5, parameter.numel()).view_as(parameter)
            )
        net[2].running_mean.fill_(0.25)
        net[2].running_var.fill_(2.0)
    return net.eval()


@pytest.mark.parametrize("name", ["metric", "maml"])
def test_partial_fit_before_fit_uses_the_given_weights(glyphs, name):
    """A pretrained net is used as given: weights and running statistics."""
    X, y = glyphs
    net = _pretrained_net()
    with torch.no_grad():
        expected = net(torch.as_tensor(X[:6])).numpy()
    support = np.arange(len(y)) % 8 < 2
    estimator = make_estimator(name, net, **TINY).partial_fit(X[support], y[support])
    if name == "metric":
        assert_allclose(estimator.transform(X[:6]), expected, rtol=1e-5, atol=1e-6)
    body = estimator.module_.backbone if name == "metric" else estimator.module_.body
    assert_allclose(body[2].running_mean.numpy(), 0.25)
    for given, used in zip(net.parameters(), body.parameters(), strict=True):
        assert_allclose(used.detach().numpy(), given.detach().numpy())


@pytest.mark.parametrize("name", ESTIMATORS)
def test_fit_starts_from_the_given_weights(glyphs, name):
    """With a negligible meta_lr, fit leaves the given weights where they were."""
    X, y = glyphs
    net = _pretrained_net()
    estimator = make_estimator(name, net, meta_lr=1e-9, **TINY).fit(X, y)
    module = estimator.module_
    body = module.body if name == "maml" else module.backbone
    for given, learned in zip(net.parameters(), body.parameters(), strict=True):
        assert_allclose(learned.detach().numpy(), given.detach().numpy(), atol=1e-6)
    # The user's own module is never trained in place.
    assert_allclose(net[1].weight.detach().numpy().ravel()[0], -0.5)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_user_batch_norm_is_calibrated_after_fit(glyphs, name):
    """After fit a sample's embedding does not depend on its batch."""
    X, y = glyphs
    estimator = make_estimator(name, conv_net(True), **TINY).fit(X, y)
    module = estimator.module_
    layer = (module.body if name == "maml" else module.backbone)[2]
    # Calibrated from training samples, not torch's initial 0 and 1.
    assert np.abs(layer.running_mean.numpy()).max() > 1e-3
    alone = estimator.transform(X[:1])
    assert_allclose(estimator.transform(X[:20])[:1], alone, rtol=1e-4, atol=1e-5)


def test_maml_adaptation_leaves_the_running_statistics_alone(glyphs):
    """partial_fit and evaluation normalise by batch and update no shared statistics."""
    X, y = glyphs
    estimator = make_estimator("maml", conv_net(True), **TINY).fit(X[y < 8], y[y < 8])
    layer = estimator.module_.body[2]
    before = layer.running_mean.clone(), layer.running_var.clone()
    evaluate_few_shot(estimator, X[y >= 8], y[y >= 8], n_episodes=2, n_query=2)
    support = (y >= 8) & (np.arange(len(y)) % 8 < 2)
    estimator.partial_fit(X[support], y[support])
    assert torch.equal(layer.running_mean, before[0])
    assert torch.equal(layer.running_var, before[1])


@pytest.mark.parametrize("layer", [nn.BatchNorm1d(5), nn.BatchNorm2d(5)])
def test_calibrate_batch_norm_knows_torch_layers(layer):
    """Eval-mode outputs after calibration match a training-mode pass over x."""
    torch.manual_seed(0)
    shape = (300, 5) if isinstance(layer, nn.BatchNorm1d) else (300, 5, 4, 4)
    x = torch.randn(shape) * 3 + 1
    network = nn.Sequential(layer, nn.Dropout(0.5))
    calibrate_batch_norm(network, x, chunk_size=len(x))
    network.eval()
    expected = nn.functional.batch_norm(
        x, None, None, layer.weight, layer.bias, training=True
    )
    assert_allclose(network(x).detach(), expected.detach(), rtol=1e-3, atol=1e-4)
    # In chunks the pooled statistics are those of the whole of x.
    mean = layer.running_mean.clone()
    calibrate_batch_norm(network, x, chunk_size=64)
    assert_allclose(layer.running_mean, mean, atol=1e-5)


def test_batch_statistics_updates_nothing():
    """Inside batch_statistics a torch BatchNorm uses the batch and keeps no state."""
    layer = nn.BatchNorm1d(3).eval()
    x = torch.randn(50, 3) * 4 + 2
    with batch_statistics(layer):
        out = layer.train()(x)
        layer.eval()
        assert_allclose(layer(x).detach(), out.detach(), atol=1e-6)
    assert_allclose(layer.running_mean, torch.zeros(3))
    assert int(layer.num_batches_tracked) == 0


class RecordRunningMean(Callback):
    """Records what the backbone's BatchNorm holds as running mean at each batch."""

    def __init__(self, path):
        self.path = path

    def on_batch_end(self, net, **kwargs):
        module = net.module_
        body = module.body if hasattr(module, "body") else module.backbone
        layer = body.get_submodule(self.path)
        self.seen_.append(layer.running_mean)

    def on_train_begin(self, net, **kwargs):
        self.seen_ = []


@pytest.mark.parametrize("name", ESTIMATORS)
def test_meta_training_keeps_no_running_statistics(glyphs, name):
    """During meta-training (validation included) a user's BatchNorm keeps no statistics."""
    X, y = glyphs
    recorder = RecordRunningMean("2")
    estimator = make_estimator(
        name, conv_net(True), callbacks=[recorder], validation_fraction=0.25, **TINY
    )
    estimator.fit(X, y)
    (recorded,) = [c for _, c in estimator.net_.callbacks_ if hasattr(c, "seen_")]
    seen = recorded.seen_
    assert len(seen) > 0 and all(value is None for value in seen)
