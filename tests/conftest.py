"""Shared fixtures: fixed seeds, small datasets, and the device tests run on."""

import os

import numpy as np
import pytest
import torch

# Tests use tiny networks: one thread avoids OpenMP spin-waiting, which made
# them four times slower on a busy 2-core machine.
torch.set_num_threads(1)

#: Device the estimator tests run on; benchmarks/gpu_check.sh sets "cuda".
TEST_DEVICE = os.environ.get("SKLEARN_META_TEST_DEVICE", "cpu")


@pytest.fixture
def seed():
    """The seed every test uses."""
    return 0


@pytest.fixture(autouse=True)
def _fixed_global_seeds(seed):
    np.random.seed(seed)  # noqa: NPY002 - code under test may use the legacy global RNG
    torch.manual_seed(seed)


@pytest.fixture
def device():
    """Device for estimators under test."""
    return TEST_DEVICE


def make_blobs_classes(n_classes=40, n_per_class=20, n_features=10, seed=0):
    """Many Gaussian classes in a few dimensions: a tabular few-shot problem."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, n_features)) * 3.0
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = centers[y] + rng.normal(size=(len(y), n_features))
    return X, y


@pytest.fixture(scope="session")
def blobs():
    """40 Gaussian classes of 20 samples in 10 dimensions."""
    return make_blobs_classes()


@pytest.fixture(scope="session")
def glyphs():
    """60 glyph classes of 10 drawings, 28x28 images."""
    from sklearn_meta.datasets import make_glyph_tasks

    return make_glyph_tasks(n_classes=60, n_per_class=10, random_state=0)
