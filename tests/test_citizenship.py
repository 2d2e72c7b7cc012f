"""What all three estimators share, tested once for each: divergence, interruption,
refit after adaptation, persistence, parallel search, pandas."""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback

import sklearn_meta
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.model_selection import ClassKFold, make_few_shot_scorer

SMALL = dict(
    max_epochs=1,
    episodes_per_epoch=16,
    random_state=0,
    hidden_layer_sizes=(16,),
    embedding_dim=8,
    device="cpu",
)
EXTRA = {
    "MetaMetricClassifier": {},
    "MAMLFeatureExtractor": {"inner_lr": 0.5, "meta_batch_size": 4},
    "LEOTransformer": {"latent_dim": 8, "meta_batch_size": 4},
}
NAMES = list(EXTRA)


def make(name, **params):
    """A small estimator of the named class."""
    return getattr(sklearn_meta, name)(**{**SMALL, **EXTRA[name], **params})


def adapted(name, X, y):
    """A fitted estimator adapted to the classes 30-34."""
    estimator = make(name).fit(X[y < 30], y[y < 30])
    support = np.flatnonzero((y >= 30) & (y < 35))[::5]
    return estimator.partial_fit(X[support], y[support])


def outputs(estimator, X):
    """transform and, where adapted, predict_proba."""
    result = {"transform": estimator.transform(X)}
    if hasattr(estimator, "predict_proba"):
        result["proba"] = estimator.predict_proba(X)
    return result


@pytest.mark.parametrize("name", NAMES)
def test_keyboard_interrupt_keeps_a_working_estimator(name, blobs):
    """Ctrl-C during fit stops training and keeps a usable model."""
    X, y = blobs

    class Interrupt(Callback):
        def on_batch_end(self, net, **kwargs):
            raise KeyboardInterrupt

    estimator = make(name, callbacks=[Interrupt()]).fit(X, y)
    assert len(estimator.history_[-1]["batches"]) == 1
    assert np.isfinite(estimator.transform(X[:4])).all()
    estimator.partial_fit(X[y < 3][::5], y[y < 3][::5])
    assert estimator.predict(X[:4]).shape == (4,)


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_loss_is_a_clear_error(name, blobs):
    """A loss that stops being finite raises a ValueError naming the learning rate."""
    X, y = blobs

    class Poison(Callback):
        """Makes the weights NaN after the first step, as a diverging run does."""

        def on_batch_end(self, net, training=False, **kwargs):
            with torch.no_grad():
                for parameter in net.module_.parameters():
                    parameter.fill_(float("nan"))

    with pytest.raises(ValueError, match="diverged.*meta_lr"):
        make(name, callbacks=[Poison()], episodes_per_epoch=32).fit(X, y)


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("MetaMetricClassifier", {"meta_lr": 1e3, "max_epochs": 3}, "meta_lr"),
        ("MAMLFeatureExtractor", {"inner_lr": 1e8}, "meta_lr.*inner_lr"),
        ("LEOTransformer", {"inner_lr": 1e4, "max_epochs": 2}, "meta_lr.*inner_lr"),
    ],
)
def test_divergence_names_the_learning_rates(name, params, match, blobs):
    """Step sizes that make meta-training diverge: an error naming what to lower."""
    X, y = blobs
    groups = None
    if name == "MAMLFeatureExtractor":
        # Classification's first inner step moves the head only, which does
        # not overflow; regression's steps move the whole network.
        X, y, groups = make_sinusoid_tasks(n_tasks=50, n_points=20, random_state=0)
        params = {**params, "k_shot": 5, "n_query": 5}
    with pytest.raises(ValueError, match=f"diverged.*{match}"):
        make(name, **params).fit(X, y, groups=groups)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_in_a_fresh_process(name, blobs, tmp_path):
    """pickle and joblib files load in a new interpreter with identical outputs."""
    X, y = blobs
    estimator = adapted(name, X, y)
    expected = outputs(estimator, X)
    with open(tmp_path / "model.pkl", "wb") as file:
        pickle.dump(estimator, file)
    import joblib

    joblib.dump(estimator, tmp_path / "model.joblib")
    np.save(tmp_path / "X.npy", X)
    script = textwrap.dedent(
        f"""
        import pickle, joblib, numpy as np
        X = np.load({str(tmp_path / "X.npy")!r})
        for model in (pickle.load(open({str(tmp_path / "model.pkl")!r}, "rb")),
                      joblib.load({str(tmp_path / "model.joblib")!r})):
            out = {{"transform": model.transform(X)}}
            if hasattr(model, "predict_proba"):
                out["proba"] = model.predict_proba(X)
            np.savez({str(tmp_path / "out")!r}, **out)
        """
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    restored = np.load(tmp_path / "out.npz")
    for key, value in expected.items():
        assert_array_equal(restored[key], value)


@pytest.mark.parametrize("name", NAMES)
def test_estimator_fitted_on_cuda_loads_on_cpu(name, blobs):
    """State saved from a GPU is mapped to the CPU when no GPU is there.

    Without a GPU the CUDA state is simulated: skorch records the net's
    device as "cuda" and must map it to the CPU on loading, and everything
    the estimator keeps of the adapted task is pickled as CPU tensors.
    """
    X, y = blobs
    estimator = adapted(name, X, y)
    expected = outputs(estimator, X)
    estimator.net_.device = "cuda"
    state = estimator.__getstate__()
    assert state["_adaptation"] is not None
    for tensor in _tensors(state["_adaptation"]):
        assert tensor.device.type == "cpu"
    if torch.cuda.is_available():
        pytest.skip("simulation only makes sense without a GPU")
    with pytest.warns(UserWarning, match="CUDA"):
        restored = pickle.loads(pickle.dumps(estimator))
    assert torch.device(restored.net_.device).type == "cpu"
    for key, value in outputs(restored, X).items():
        assert_array_equal(value, expected[key])


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, torch.nn.Module):
        yield from value.parameters()
        yield from value.buffers()
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif hasattr(value, "__dataclass_fields__"):
        for field in value.__dataclass_fields__:
            yield from _tensors(getattr(value, field))


def _threads(estimator, X, y):
    """A 'score' that reports how many threads torch uses where it runs."""
    return float(torch.get_num_threads())


@pytest.mark.parametrize("name", NAMES)
def test_parallel_grid_search_matches_serial_without_oversubscription(name, blobs):
    """n_jobs=2 finds what n_jobs=1 finds, with torch limited to its share of cores."""
    X, y = blobs
    grid = {"meta_lr": [1e-3, 3e-3]}
    scoring = {"few_shot": make_few_shot_scorer(n_episodes=20), "threads": _threads}
    searches = [
        GridSearchCV(
            make(name),
            grid,
            cv=ClassKFold(2),
            scoring=scoring,
            refit="few_shot",
            n_jobs=n_jobs,
        ).fit(X, y)
        for n_jobs in (1, 2)
    ]
    assert searches[0].best_params_ == searches[1].best_params_
    np.testing.assert_allclose(
        searches[0].cv_results_["mean_test_few_shot"],
        searches[1].cv_results_["mean_test_few_shot"],
    )
    per_worker = max(1, (os.cpu_count() or 1) // 2)
    assert searches[1].cv_results_["mean_test_threads"].max() <= per_worker


@pytest.mark.parametrize("name", NAMES)
def test_pandas_in_pandas_out(name, blobs):
    """DataFrames keep feature names; set_output gives named columns."""
    pd = pytest.importorskip("pandas")
    X, y = blobs
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    estimator = make(name).fit(frame, y).set_output(transform="pandas")
    assert_array_equal(estimator.feature_names_in_, frame.columns)
    out = estimator.transform(frame.iloc[:3])
    assert isinstance(out, pd.DataFrame)
    assert_array_equal(out.columns, estimator.get_feature_names_out())
    assert out.columns[0] == f"{name.lower()}0"


@pytest.mark.parametrize("name", NAMES)
def test_refit_forgets_the_adapted_task(name, blobs):
    """fit after partial_fit starts over: no stale adapted network survives."""
    X, y = blobs
    estimator = adapted(name, X, y)
    fresh = make(name).fit(X[y < 30], y[y < 30])
    estimator.fit(X[y < 30], y[y < 30])
    assert getattr(estimator, "_adaptation", None) is None
    assert_array_equal(estimator.classes_, np.arange(30))
    assert hasattr(estimator, "predict") == (name == "MetaMetricClassifier")
    assert_array_equal(estimator.transform(X), fresh.transform(X))
