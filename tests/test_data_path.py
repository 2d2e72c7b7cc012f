"""The data path: uint8 and memmap input, inference dtype, what fit keeps."""

import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from sklearn_meta import LEOTransformer, MAMLFeatureExtractor, MetaMetricClassifier
from sklearn_meta._data import Samples
from sklearn_meta.datasets import make_glyph_tasks

DEVICE = os.environ.get("SKLEARN_META_TEST_DEVICE", "cpu")
TINY = dict(max_epochs=1, episodes_per_epoch=4, random_state=0, device=DEVICE)


def _estimators():
    return {
        "metric": MetaMetricClassifier(backbone="conv4_strided", **TINY),
        "leo": LEOTransformer(latent_dim=4, **TINY),
        "maml": MAMLFeatureExtractor(
            backbone="conv4_strided", meta_batch_size=2, n_query=2, **TINY
        ),
    }


@pytest.fixture(scope="module")
def pixels():
    X, y = make_glyph_tasks(n_classes=10, n_per_class=6, random_state=0)
    return np.round(X * 255).astype(np.uint8), y


@pytest.mark.parametrize("name", ["metric", "leo", "maml"])
def test_uint8_images_are_pixels_scaled_to_one(pixels, name):
    """uint8 images give the model of the float32 images divided by 255."""
    X8, y = pixels
    X32 = X8.astype(np.float32) / 255
    support = (y >= 7) & (np.arange(len(y)) % 6 < 2)
    from_uint8 = _estimators()[name].fit(X8[y < 7], y[y < 7])
    from_float = _estimators()[name].fit(X32[y < 7], y[y < 7])
    assert_allclose(from_uint8.transform(X8), from_float.transform(X32), atol=1e-6)
    from_uint8.partial_fit(X8[support], y[support])
    from_float.partial_fit(X32[support], y[support])
    assert_array_equal(from_uint8.predict(X8), from_float.predict(X32))


def test_integer_columns_are_numbers_not_pixels():
    """2-D uint8 columns (without an image input_shape) are not rescaled."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), 10)
    X = (rng.integers(0, 40, size=(8, 6))[y] + rng.integers(0, 5, size=(80, 6))).astype(
        np.uint8
    )
    params = dict(hidden_layer_sizes=(8,), embedding_dim=4, **TINY)
    as_ints = MetaMetricClassifier(**params).fit(X, y)
    as_floats = MetaMetricClassifier(**params).fit(X.astype(np.float32), y)
    assert_allclose(as_ints.transform(X), as_floats.transform(X.astype(np.float32)))


@pytest.mark.parametrize("name", ["metric", "leo", "maml"])
def test_float32_inference_agrees_with_float64(pixels, name):
    """The float32 default agrees with float64 inference to 1e-5."""
    X8, y = pixels
    X = X8.astype(np.float32) / 255
    estimator = _estimators()[name].fit(X[y < 7], y[y < 7])
    support = (y >= 7) & (np.arange(len(y)) % 6 < 2)
    estimator.partial_fit(X[support], y[support])
    in_float32 = estimator.transform(X)
    scores32 = estimator.predict_proba(X) if name != "maml" else None
    estimator.set_params(inference_dtype="float64")
    assert_allclose(in_float32, estimator.transform(X), rtol=1e-5, atol=1e-5)
    if scores32 is not None:
        assert_allclose(scores32, estimator.predict_proba(X), atol=1e-5)


def test_fitted_estimator_keeps_no_training_data():
    """A pickled estimator does not grow with X (not even its validation part)."""
    X, y = make_glyph_tasks(n_classes=100, n_per_class=20, random_state=0)
    sizes = []
    for n_classes in (10, 100):
        estimator = MetaMetricClassifier(
            backbone="conv4_strided", validation_fraction=0.5, **TINY
        ).fit(X[y < n_classes], y[y < n_classes])
        estimator.reset_adaptation()
        sizes.append(len(pickle.dumps(estimator)) - estimator.prototypes_.nbytes)
    assert sizes[1] - sizes[0] < X.nbytes / 100


def test_training_prototypes_are_class_means_of_the_embeddings():
    """The prototypes fit computes are each training class's mean embedding."""
    X, y = make_glyph_tasks(n_classes=6, n_per_class=5, random_state=0)
    estimator = MetaMetricClassifier(backbone="conv4_strided", **TINY).fit(X, y)
    embeddings = estimator.transform(X)
    expected = np.stack([embeddings[y == c].mean(axis=0) for c in range(6)])
    assert_allclose(estimator.prototypes_, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "sample_shape, chunk_size",
    [
        ((10,), 1024),  # rows: CHUNK_SIZE
        ((5000,), 209),  # wide rows: bounded by values
        ((1, 28, 28), 83),  # small images: bounded by positions
        ((3, 84, 84), 9),  # channels do not count towards positions
        ((256, 8, 8), 64),  # many channels: bounded by values
    ],
)
def test_inference_chunks_bound_positions_and_values(sample_shape, chunk_size):
    """Chunks hold at most CHUNK_SIZE samples, CHUNK_VALUES values, CHUNK_POSITIONS pixels."""
    data = np.arange(200 * np.prod(sample_shape), dtype=np.float32)
    samples = Samples(data.reshape(200, *sample_shape))
    assert samples.chunk_size == chunk_size
    chunks = list(samples.chunks(torch.device("cpu")))
    assert [len(chunk) for chunk in chunks[:-1]] == [min(chunk_size, 200)] * (
        len(chunks) - 1
    )
    assert_array_equal(torch.cat(chunks).numpy(), samples.data)


MEMMAP_SCRIPT = textwrap.dedent(
    """
    import json, sys, tracemalloc
    import numpy as np
    from sklearn_meta import MetaMetricClassifier

    path = sys.argv[1]
    X = np.load(path, mmap_mode="r")
    y = np.arange(len(X)) % 100
    train, test = y < 80, y >= 80
    params = dict(backbone="conv4_strided", embedding_dim=8, max_epochs=1,
                  episodes_per_epoch=3, random_state=0, device="cpu")
    test_rows = np.flatnonzero(test)
    # A first fit imports what fit needs: tracemalloc then sees data only.
    MetaMetricClassifier(**params).fit(np.asarray(X[:200]), y[:200]).predict(X[:2])
    tracemalloc.start()
    model = MetaMetricClassifier(**params).fit(X, y)
    model.partial_fit(X[test_rows[::10]], y[test_rows[::10]])
    predicted = model.predict(X)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    scaled = np.asarray(X, dtype=np.float32) / 255
    reference = MetaMetricClassifier(**params).fit(scaled, y)
    reference.partial_fit(scaled[test_rows[::10]], y[test_rows[::10]])
    print(json.dumps({
        "peak_bytes": peak,
        "same_predictions": bool((reference.predict(scaled) == predicted).all()),
        "transform_difference": float(np.abs(
            reference.transform(scaled) - model.transform(X)).max()),
    }))
    """
)


def test_uint8_memmap_is_converted_a_batch_at_a_time(tmp_path):
    """A uint8 memmap fits without a float copy of the set, as its scaled floats do."""
    path = tmp_path / "images.npy"
    images = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(2000, 3, 32, 32)
    )
    images[:] = np.random.default_rng(0).integers(0, 256, images.shape)
    images.flush()
    del images
    script = tmp_path / "fit_memmap.py"
    script.write_text(MEMMAP_SCRIPT)
    environment = dict(os.environ, PYTHONPATH=os.getcwd())
    output = subprocess.run(
        [sys.executable, str(script), str(path)],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    )
    result = json.loads(output.stdout.strip().splitlines()[-1])
    float_set = 2000 * 3 * 32 * 32 * 4
    # numpy's allocations, traced: the uint8 calibration and inference
    # batches, never a float copy of the set (nor a uint8 one).
    assert result["peak_bytes"] < float_set / 4
    assert result["same_predictions"]
    assert result["transform_difference"] < 1e-6
