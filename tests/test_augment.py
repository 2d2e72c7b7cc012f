"""Data augmentation during meta-training."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from sklearn_meta import LEOTransformer, MAMLFeatureExtractor, MetaMetricClassifier
from sklearn_meta.datasets import make_glyph_tasks
from sklearn_meta.nn.augment import RandomAffine


def test_random_affine_keeps_the_shape_and_moves_the_ink():
    torch.manual_seed(0)
    images = torch.zeros(16, 1, 28, 28)
    images[:, :, 10:18, 12:16] = 1.0
    augmented = RandomAffine(rotation=20, scale=0.2, translation=3)(images)
    assert augmented.shape == images.shape
    assert not torch.allclose(augmented, images)
    # Each image gets its own transformation.
    assert not torch.allclose(augmented[0], augmented[1])
    # The ink stays roughly as much (scale within 20%: area within 44%).
    ink = augmented.sum(dim=(1, 2, 3)) / images.sum(dim=(1, 2, 3))
    assert ((ink > 0.5) & (ink < 1.6)).all()


def test_random_affine_without_range_is_the_identity():
    images = torch.rand(4, 3, 12, 10)
    same = RandomAffine(rotation=0, scale=0, translation=0)(images)
    assert_allclose(same.numpy(), images.numpy(), atol=1e-5)


def test_random_affine_translation_is_in_pixels():
    torch.manual_seed(0)
    images = torch.zeros(200, 1, 28, 28)
    images[:, :, 13:15, 13:15] = 1.0
    shifted = RandomAffine(rotation=0, scale=0, translation=2)(images)
    rows = torch.arange(28.0).view(1, 28, 1)
    centre = (shifted[:, 0] * rows).sum(dim=(1, 2)) / shifted[:, 0].sum(dim=(1, 2))
    offset = centre - 13.5
    assert offset.abs().max() <= 2.0 + 1e-4
    assert offset.abs().max() > 1.5


@pytest.mark.parametrize(
    "params, match",
    [
        ({"rotation": -1}, "rotation"),
        ({"scale": 1.0}, "scale"),
        ({"translation": float("nan")}, "translation"),
    ],
)
def test_random_affine_rejects_bad_ranges(params, match):
    with pytest.raises(ValueError, match=match):
        RandomAffine(**params)


def test_random_affine_needs_image_batches():
    with pytest.raises(ValueError, match=r"\(n, C, H, W\)"):
        RandomAffine()(torch.zeros(4, 784))


@pytest.fixture(scope="module")
def glyph_rows():
    X, y = make_glyph_tasks(n_classes=12, n_per_class=6, image_size=16, random_state=0)
    return X.reshape(len(X), -1), y


SMALL = dict(
    backbone="conv4_strided",
    input_shape=(1, 16, 16),
    embedding_dim=8,
    n_query=2,
    max_epochs=1,
    episodes_per_epoch=6,
    random_state=0,
    device="cpu",
)


@pytest.mark.parametrize(
    "make",
    [
        lambda **p: MetaMetricClassifier(**SMALL, **p),
        lambda **p: MAMLFeatureExtractor(**SMALL, **p),
        lambda **p: LEOTransformer(**SMALL, latent_dim=4, **p),
    ],
    ids=["metric", "maml", "leo"],
)
def test_augmentation_changes_training_and_stays_reproducible(glyph_rows, make):
    """Flat rows are augmented as images of input_shape; a seed still fixes everything."""
    X, y = glyph_rows
    calls = []

    def recording_affine(images):
        calls.append(tuple(images.shape[1:]))
        return RandomAffine(rotation=15, translation=2)(images)

    plain = make().fit(X, y).transform(X[:5])
    augmented = make(augment=recording_affine).fit(X, y).transform(X[:5])
    again = make(augment=RandomAffine(rotation=15, translation=2)).fit(X, y)
    assert set(calls) == {(1, 16, 16)}
    assert not np.allclose(plain, augmented)
    assert_array_equal(augmented, again.transform(X[:5]))


def test_augmentation_is_not_applied_to_validation_episodes(glyph_rows):
    X, y = glyph_rows
    seen = []

    def recording(images):
        seen.append(images.shape[0])
        return images

    clf = MetaMetricClassifier(
        **{**SMALL, "episodes_per_epoch": 4, "meta_batch_size": 2},
        n_way=3,
        validation_fraction=0.25,
        augment=recording,
    ).fit(X, y)
    # The shape check, then support and query of the two training batches.
    assert len(seen) == 1 + 2 * 2
    assert np.isfinite(clf.history_[:, "valid_acc"]).all()


def test_augmentation_leaves_the_global_generator_alone(glyph_rows):
    X, y = glyph_rows
    torch.manual_seed(5)
    state = torch.get_rng_state()
    MetaMetricClassifier(**SMALL, augment=RandomAffine()).fit(X, y)
    assert torch.equal(state, torch.get_rng_state())
