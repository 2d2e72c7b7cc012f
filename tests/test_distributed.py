"""Data-parallel meta-training under torchrun (gloo on CPU) and model selection on dask.

Run as a script (``python -m torch.distributed.run --nproc_per_node=2
tests/test_distributed.py OUT``) this file is what every process of the
distributed tests executes; the tests launch it and compare what the
processes wrote with one-process references computed here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback, TrainEndCheckpoint
from torch import nn

import sklearn_meta._net
import sklearn_meta.nn.leo
from sklearn_meta import LEOTransformer, MAMLFeatureExtractor, MetaMetricClassifier

#: Tasks per process and outer step (N_PROCESSES times as many in all).
META_BATCH = 2
N_STEPS = 5
#: benchmarks/gpu_check.sh runs the torchrun tests on CUDA: one process per GPU.
N_PROCESSES = int(os.environ.get("SKLEARN_META_TEST_PROCESSES", 2))
DEVICE = os.environ.get("SKLEARN_META_TEST_DEVICE", "cpu")
needs_two = pytest.mark.skipif(N_PROCESSES < 2, reason="needs two processes")


class Float64(nn.Module):
    """Casts the (float32) samples to float64, so a whole fit runs in float64."""

    def forward(self, x):
        return x.double()


def _data():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(12), 8)
    X = rng.normal(size=(len(y), 6)) + 0.5 * rng.normal(size=(12, 6))[y]
    return X.astype(np.float32), y


def _estimators(meta_batch_size: int, distributed: bool) -> dict:
    """The three estimators, built in float64, whose training draws no random numbers.

    The metric classifier's BatchNorm normalises over its whole meta-batch,
    so a process's share is not a meta-batch of the one-process run.
    """
    common = dict(
        n_way=3,
        k_shot=1,
        n_query=2,
        meta_batch_size=meta_batch_size,
        episodes_per_epoch=N_PROCESSES * META_BATCH * N_STEPS,
        max_epochs=1,
        meta_lr=0.01,
        device=DEVICE,
        distributed=distributed,
        inference_dtype="float64",  # the whole fit runs in float64, calibration too
        random_state=0,
    )
    torch.manual_seed(0)  # the backbones' initial weights
    with _in_float64():
        return {
            "maml": MAMLFeatureExtractor(
                inner_lr=0.1,
                backbone=nn.Sequential(Float64(), nn.Linear(6, 8), nn.Tanh()),
                **common,
            ),
            "leo": LEOTransformer(
                latent_dim=4,
                dropout=0.0,
                backbone=nn.Sequential(Float64(), nn.Linear(6, 8)),
                **common,
            ),
            "metric": MetaMetricClassifier(
                backbone=nn.Sequential(
                    Float64(), nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU()
                ),
                **common,
            ),
        }


@contextlib.contextmanager
def _in_float64():
    """Default dtype float64 and LEO's sampling noise zero, restored after."""
    dtype, noise = torch.get_default_dtype(), sklearn_meta.nn.leo.LEO._noise_like
    torch.set_default_dtype(torch.float64)
    sklearn_meta.nn.leo.LEO._noise_like = lambda self, tensor: torch.zeros_like(tensor)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        sklearn_meta.nn.leo.LEO._noise_like = noise


def _parameters(estimator) -> dict:
    return {
        name: p.detach().cpu().numpy()
        for name, p in estimator.net_.module_.named_parameters()
    }


class _StopOnOneProcess(Callback):
    """Stops (or fails) after ``n_batches`` batches on one rank only."""

    def __init__(self, rank: int, n_batches: int, error: bool = False):
        self.rank, self.n_batches, self.error = rank, n_batches, error

    def on_batch_end(self, net, training=False, **kwargs):
        if training and int(os.environ["RANK"]) == self.rank:
            if len(net.history[-1]["batches"]) >= self.n_batches:
                if self.error:
                    raise ValueError("this process failed on purpose")
                raise KeyboardInterrupt


class _MarkTraining(Callback):
    """Writes a file once training has taken a step, then slows each step down."""

    def __init__(self, path: str):
        self.path = path

    def on_batch_end(self, net, training=False, **kwargs):
        Path(self.path).touch()
        time.sleep(0.05)


def _run_processes(out: Path) -> None:
    """What each process of the torchrun test does; writes its findings to ``out``."""
    rank = int(os.environ["RANK"])
    X, y = _data()
    found = {}
    with _in_float64():
        for name, estimator in _estimators(META_BATCH, distributed=True).items():
            estimator.set_params(
                verbose=1,
                callbacks=[TrainEndCheckpoint(dirname=str(out / f"saved_{rank}"))],
            )
            estimator.fit(X, y)
            np.savez(out / f"{name}_{rank}.npz", **_parameters(estimator))
        # Start-up check: different seeds, then different data.
        estimator = _estimators(META_BATCH, distributed=True)["maml"]
        for params, data in (
            ({"random_state": rank}, X),
            ({"random_state": 0}, X + rank),
        ):
            try:
                estimator.set_params(**params).fit(data, y)
            except ValueError as error:
                found.setdefault("start", []).append(str(error))
        # One process stops alone (as a time budget or an interrupt would), then
        # one fails alone: the other must follow, not wait.
        for key, error in (("stop", False), ("error", True)):
            estimator = _estimators(META_BATCH, distributed=True)["maml"]
            estimator.set_params(callbacks=[_StopOnOneProcess(1, 2, error)])
            try:
                estimator.fit(X, y)
                batches = estimator.history_[-1]["batches"]
                found[key] = {
                    "batches": sum("train_loss" in batch for batch in batches),
                    "checksum": float(
                        sum(p.sum() for p in _parameters(estimator).values())
                    ),
                }
            except (ValueError, RuntimeError) as failure:
                found[key] = f"{type(failure).__name__}: {failure}"
    (out / f"found_{rank}.json").write_text(json.dumps(found))


def _run_until_killed(out: Path) -> None:
    """A long fit for the dead-peer test; it should end with an error."""
    X, y = _data()
    estimator = _estimators(META_BATCH, distributed=True)["maml"]
    rank = os.environ["RANK"]
    estimator.set_params(
        max_epochs=10_000, callbacks=[_MarkTraining(str(out / f"training_{rank}"))]
    )
    with _in_float64():
        estimator.fit(X, y)


def _environment() -> dict:
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": root + (os.pathsep + path if path else ""),
        "OMP_NUM_THREADS": "1",
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def torchrun_output(tmp_path_factory):
    """What two torchrun processes (gloo, 127.0.0.1) wrote, with their output."""
    out = tmp_path_factory.mktemp("torchrun")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={N_PROCESSES}",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        __file__,
        "run",
        str(out),
    ]
    result = subprocess.run(
        command, env=_environment(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result.stdout


def _one_process_reference(name: str) -> dict:
    """Parameters of a one-process fit on the same 2 x META_BATCH episodes per step."""
    X, y = _data()
    with _in_float64():
        estimator = _estimators(N_PROCESSES * META_BATCH, distributed=False)[name]
        if name != "metric":
            return _parameters(estimator.fit(X, y))
        # Each process's share is every N_PROCESSES-th episode of the
        # one-process meta-batch: average the shares' gradients, computed
        # one after the other.
        original = sklearn_meta._net.MetaNet.train_step_single

        def mean_of_shares(net, batch, **fit_params):
            inputs, targets = batch
            total, losses = None, []
            for rank in range(N_PROCESSES):
                net.optimizer_.zero_grad()
                share = {k: v[rank::N_PROCESSES] for k, v in inputs.items()}
                step = original(net, (share, targets[rank::N_PROCESSES]), **fit_params)
                losses.append(step["loss"].detach())
                grads = [p.grad.clone() for p in net.module_.parameters()]
                total = (
                    grads
                    if total is None
                    else [a + b for a, b in zip(total, grads, strict=True)]
                )
            for p, grad in zip(net.module_.parameters(), total, strict=True):
                p.grad = grad / N_PROCESSES
            return {"loss": torch.stack(losses).mean(), "y_pred": step["y_pred"]}

        sklearn_meta._net.MetaNet.train_step_single = mean_of_shares
        try:
            return _parameters(estimator.fit(X, y))
        finally:
            sklearn_meta._net.MetaNet.train_step_single = original


@pytest.mark.parametrize("name", ["maml", "leo", "metric"])
def test_processes_end_equal_and_match_one_process(torchrun_output, name):
    """After 5 outer steps both processes hold the one-process run's parameters.

    Everything runs in float64, so the only differences are summation
    orders (about 1e-16 relative); 1e-6 leaves room for Adam's division.
    """
    out, _ = torchrun_output
    ranks = [dict(np.load(out / f"{name}_{r}.npz")) for r in range(N_PROCESSES)]
    reference = _one_process_reference(name)
    assert ranks[0].keys() == reference.keys()
    for key, expected in reference.items():
        for other in ranks[1:]:
            np.testing.assert_allclose(other[key], ranks[0][key], rtol=0, atol=1e-6)
        np.testing.assert_allclose(ranks[0][key], expected, rtol=0, atol=1e-6)


def test_only_rank_zero_prints_and_saves(torchrun_output):
    """The epoch table is printed once per fit and only rank 0 saved the history."""
    out, stdout = torchrun_output
    assert stdout.count("train_loss") == 3
    assert (out / "saved_0" / "train_end_history.json").exists()
    assert not (out / "saved_1").exists()


@needs_two
def test_different_start_is_refused(torchrun_output):
    """Different seeds or different data fail on every process before training."""
    out, _ = torchrun_output
    for rank in range(2):
        seed, data = json.loads((out / f"found_{rank}.json").read_text())["start"]
        assert "random_state" in seed and "initial parameters" in seed
        assert "training data" in data


@needs_two
def test_one_process_stopping_stops_the_others(torchrun_output):
    """A stop on one process ends both at the same step with the same parameters;
    an error on one makes the other fail with an error naming it."""
    out, _ = torchrun_output
    found = [json.loads((out / f"found_{r}.json").read_text()) for r in range(2)]
    assert found[0]["stop"] == found[1]["stop"]
    assert found[0]["stop"]["batches"] == 2  # the third step never happened
    assert "RuntimeError" in found[0]["error"] and "[1]" in found[0]["error"]
    assert found[1]["error"] == "ValueError: this process failed on purpose"


def test_distributed_without_torchrun_is_refused(monkeypatch):
    """distributed=True outside torchrun says how to launch, and trains nothing."""
    from sklearn_meta._distributed import TORCHRUN_VARIABLES

    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    estimator = MetaMetricClassifier(distributed=True, device="cpu")
    with pytest.raises(ValueError, match="torchrun --nproc_per_node"):
        estimator.fit(*_data())
    assert not hasattr(estimator, "net_")


@pytest.mark.skipif(DEVICE != "cpu", reason="nccl's watchdog ends it after TIMEOUT")
def test_killed_peer_ends_the_other_with_a_clear_error(tmp_path):
    """Killing one of two processes makes the other fail clearly within 60 s.

    The processes are started directly rather than by torchrun, whose agent
    would itself terminate the survivor: on several nodes the survivor's own
    agent only learns of the death through the survivor's failure.
    """
    port = _free_port()
    processes = []
    for rank in range(2):
        env = _environment() | {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(2),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        processes.append(
            subprocess.Popen(
                [sys.executable, __file__, "kill", str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"training_{r}").exists() for r in range(2)):
            assert time.monotonic() < deadline, "the processes never started training"
            assert all(p.poll() is None for p in processes), processes[0].stdout.read()
            time.sleep(0.2)
        processes[1].send_signal(signal.SIGKILL)
        output, _ = processes[0].communicate(timeout=60)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert processes[0].returncode != 0
    assert "lost the other processes of the distributed fit" in output


def test_grid_search_and_evaluation_on_a_dask_cluster():
    """On two dask workers, GridSearchCV and evaluate_few_shot give the n_jobs=1 results.

    Each worker has one thread and torch one per task (dask starts workers
    with OMP_NUM_THREADS=1), as this process has, so the float32 reductions
    run in the same order and the scores are equal, not merely close.
    """
    import joblib
    from distributed import Client, LocalCluster
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    from sklearn_meta.model_selection import ClassKFold, evaluate_few_shot

    X, y = _data()
    search = GridSearchCV(
        MAMLFeatureExtractor(
            hidden_layer_sizes=(16,),
            embedding_dim=8,
            n_way=3,
            k_shot=1,
            n_query=2,
            meta_batch_size=2,
            max_epochs=1,
            episodes_per_epoch=8,
            device="cpu",
            random_state=0,
        ),
        {"inner_lr": [0.05, 0.5], "inner_steps": [2]},
        cv=ClassKFold(2),
    )
    evaluation = dict(n_way=3, n_query=2, n_episodes=30, random_state=0)
    assert torch.get_num_threads() == 1
    reference = clone(search).fit(X, y)
    expected = evaluate_few_shot(reference.best_estimator_, X, y, **evaluation)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        assert set(client.run(torch.get_num_threads).values()) == {1}
        with joblib.parallel_backend("dask"):
            on_dask = clone(search).set_params(n_jobs=-1).fit(X, y)
            result = evaluate_few_shot(
                reference.best_estimator_, X, y, n_jobs=-1, **evaluation
            )
    assert on_dask.best_params_ == reference.best_params_
    np.testing.assert_array_equal(
        on_dask.cv_results_["mean_test_score"],
        reference.cv_results_["mean_test_score"],
    )
    # The scores differ between candidates, so equal best_params_ means something.
    assert len(set(reference.cv_results_["mean_test_score"])) > 1
    np.testing.assert_array_equal(result.scores, expected.scores)


if __name__ == "__main__":
    torch.set_num_threads(1)
    {"run": _run_processes, "kill": _run_until_killed}[sys.argv[1]](Path(sys.argv[2]))
