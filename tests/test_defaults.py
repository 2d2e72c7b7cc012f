"""The defaults: the backbone, the meta learning-rate schedule, MAML's inner rate."""

import math

import numpy as np
import pytest

from sklearn_meta import LEOTransformer, MAMLFeatureExtractor, MetaMetricClassifier
from sklearn_meta.nn.backbones import MLP, Conv4, make_backbone

SMALL = dict(
    episodes_per_epoch=6,
    meta_batch_size=2,
    n_way=3,
    n_query=2,
    random_state=0,
    hidden_layer_sizes=(8,),
    embedding_dim=4,
    device="cpu",
)
FACTORIES = {
    "metric": MetaMetricClassifier,
    "maml": MAMLFeatureExtractor,
    "leo": lambda **p: LEOTransformer(latent_dim=4, **p),
}


def _rows():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(6), 5)
    return rng.normal(size=(len(y), 5)) + y[:, None], y


@pytest.mark.parametrize(
    "shape, layout",
    [((1, 28, 28), "stride"), ((3, 32, 20), "stride"), ((3, 84, 84), "max_pool")],
)
def test_auto_backbone_is_the_strided_conv4_for_small_images_only(shape, layout):
    body = make_backbone("auto", shape, embedding_dim=8)
    assert isinstance(body, Conv4)
    strides = {block[0].stride for block in body.blocks}
    assert strides == ({(2, 2)} if layout == "stride" else {(1, 1)})
    assert isinstance(make_backbone("auto", (12,)), MLP)


def test_metric_classifier_defaults_use_the_auto_backbone():
    X = np.random.default_rng(0).random((12, 1, 28, 28), dtype=np.float32)
    y = np.repeat(np.arange(4), 3)
    clf = MetaMetricClassifier(**{**SMALL, "max_epochs": 1, "n_query": 1}).fit(X, y)
    assert clf.module_.backbone.blocks[0][0].stride == (2, 2)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_cosine_schedule_lowers_the_learning_rate_to_zero(name):
    X, y = _rows()
    estimator = FACTORIES[name](
        **SMALL, max_epochs=2, meta_lr=0.01, meta_lr_schedule="cosine"
    ).fit(X, y)
    # Three steps an epoch, two epochs: the rates Adam used, step by step.
    used = [
        batch["event_lr"] for epoch in estimator.history_ for batch in epoch["batches"]
    ]
    steps = 6
    expected = [0.005 * (1 + math.cos(math.pi * t / steps)) for t in range(steps)]
    np.testing.assert_allclose(used, expected, rtol=1e-9, atol=1e-15)
    assert estimator.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(
        0, abs=1e-12
    )


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_constant_schedule_keeps_the_learning_rate(name):
    X, y = _rows()
    estimator = FACTORIES[name](
        **SMALL, max_epochs=2, meta_lr=0.01, meta_lr_schedule="constant"
    ).fit(X, y)
    assert estimator.net_.optimizer_.param_groups[0]["lr"] == 0.01
    assert "event_lr" not in estimator.history_[-1]["batches"][-1]


def test_cosine_schedule_counts_one_process_share_when_distributed(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    clf = MetaMetricClassifier(
        max_epochs=3, episodes_per_epoch=10, meta_batch_size=2, distributed=True
    )
    # Each of the 2 processes trains on 5 episodes an epoch: 3 steps of 2.
    assert clf._outer_steps() == 9
    clf.set_params(distributed=False)
    assert clf._outer_steps() == 15


def test_unknown_schedule_is_refused_before_training():
    X, y = _rows()
    clf = MetaMetricClassifier(**SMALL, meta_lr_schedule="linear")
    with pytest.raises(ValueError, match="meta_lr_schedule"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


def test_auto_inner_lr_depends_on_the_task():
    """MAML's inner_lr="auto" steps at 0.4 on classes, 0.1 on regression targets."""
    X, y = _rows()
    classifier = MAMLFeatureExtractor(**SMALL, max_epochs=1).fit(X, y)
    assert classifier.module_.inner_lr == 0.4
    groups = np.repeat(np.arange(6), 5)
    regressor = MAMLFeatureExtractor(**SMALL, max_epochs=1)
    regressor.fit(X, y + np.linspace(0, 0.5, len(y)), groups=groups)
    assert regressor.module_.inner_lr == 0.1
    assert classifier.get_params()["inner_lr"] == "auto"


def test_auto_inner_lr_adapts_as_its_value_does():
    X, y = _rows()
    maml = MAMLFeatureExtractor(**SMALL, max_epochs=1).fit(X, y)
    # The adapted head's probabilities show the step size the adaptation took.
    auto = maml.partial_fit(X[:12], y[:12]).predict_proba(X)
    maml.reset_adaptation()
    explicit = maml.set_params(inner_lr=0.4).partial_fit(X[:12], y[:12])
    np.testing.assert_array_equal(auto, explicit.predict_proba(X))
    maml.reset_adaptation()
    other = maml.set_params(inner_lr=0.1).partial_fit(X[:12], y[:12])
    assert not np.allclose(auto, other.predict_proba(X))


def test_learned_inner_lr_accepts_auto_and_refuses_another_value():
    X, y = _rows()
    maml = MAMLFeatureExtractor(**SMALL, max_epochs=1, learn_inner_lr=True).fit(X, y)
    maml.partial_fit(X[:12], y[:12])
    maml.reset_adaptation()
    with pytest.raises(ValueError, match="set inner_lr back to 0.4"):
        maml.set_params(inner_lr=0.3).partial_fit(X[:12], y[:12])


def test_unknown_inner_lr_string_is_refused():
    X, y = _rows()
    with pytest.raises(ValueError, match="inner_lr"):
        MAMLFeatureExtractor(**SMALL, inner_lr="fast").fit(X, y)


def test_divergence_hint_spells_out_auto_inner_lr():
    """fit fails before it knows the task type, so the hint names both values."""
    X, y = _rows()
    maml = MAMLFeatureExtractor(**{**SMALL, "meta_lr": 1e12}, max_epochs=2)
    with pytest.raises(ValueError, match="inner_lr \\(now 'auto': 0.4 for classif"):
        maml.fit(X * 1e6, y)
