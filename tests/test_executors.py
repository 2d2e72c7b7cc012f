"""Executors: any per-task function over a meta-batch, and the rule that picks one."""

import threading

import pytest
import torch
from numpy.testing import assert_allclose
from torch import nn

from sklearn_meta.nn.backbones import MLP, Conv4
from sklearn_meta.nn.executors import (
    AutoExecutor,
    TaskThreads,
    TaskVmap,
    choose_executor,
    map_tasks,
)


def quadratic_task(weight):
    """A per-task function that is not MAML: a loss and an output per task."""

    def task(x, y):
        output = x @ weight
        return ((output - y) ** 2).mean(), output

    return task


@pytest.mark.parametrize("executor", [TaskThreads(), TaskVmap()])
def test_executors_map_any_per_task_function(executor):
    """forward stacks the tasks' results; backward gives the gradient of the
    mean loss, as plain autograd over a loop does."""
    torch.manual_seed(0)
    weight = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 4, 3, dtype=torch.float64)
    y = torch.randn(5, 4, 2, dtype=torch.float64)
    task = quadratic_task(weight)
    losses = torch.stack([task(x[t], y[t])[0] for t in range(5)])
    (expected,) = torch.autograd.grad(losses.mean(), weight)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        loss, output = executor.forward(task, x, y)
        (grads,), losses_out, output_out = executor.backward(task, [weight], x, y)
    finally:
        torch.set_num_threads(previous)
    assert output.shape == (5, 4, 2) and output.requires_grad
    assert_allclose(loss.detach(), losses.detach(), rtol=1e-12)
    assert_allclose(grads, expected, rtol=1e-12)
    assert not losses_out.requires_grad and not output_out.requires_grad
    assert_allclose(output_out, output.detach())


def test_map_tasks_keeps_order_grad_mode_and_thread_count():
    """Results in task order; workers run in the caller's grad mode; the
    caller's thread count is left alone."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            seen = list(
                map_tasks(
                    lambda t: (
                        t,
                        torch.is_grad_enabled(),
                        threading.current_thread().name,
                    ),
                    6,
                )
            )
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
    assert [t for t, _, _ in seen] == list(range(6))
    assert not any(enabled for _, enabled, _ in seen)
    assert any(name.startswith("sklearn-meta-task") for _, _, name in seen)


class ReadsValues(nn.Module):
    def forward(self, x):
        return x * (2.0 if x.sum().item() > 0 else 1.0)


def test_choose_executor_states_the_rule():
    """Threads on a CPU; vmap on CUDA only for bodies and functions it can run."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    conv4 = Conv4((1, 28, 28))
    assert isinstance(choose_executor(cpu, conv4), TaskThreads)
    assert isinstance(choose_executor(cuda, conv4), TaskVmap)
    assert isinstance(choose_executor(cuda, MLP(4, (8,), 3)), TaskVmap)
    assert isinstance(choose_executor(cuda, conv4, vectorisable=False), TaskThreads)
    running_statistics = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert isinstance(choose_executor(cuda, running_statistics), TaskThreads)
    assert isinstance(choose_executor(cuda, ReadsValues()), TaskThreads)


def test_auto_executor_follows_the_inputs_device():
    """AutoExecutor picks per call, from the device of the meta-batch."""
    executor = AutoExecutor(MLP(4, (8,), 3))
    x = torch.randn(3, 2, 4)
    assert isinstance(executor._executor((x,)), TaskThreads)
    (output,) = executor.forward(lambda x: (x.sum(),), x)
    assert_allclose(output, x.sum(dim=(1, 2)), rtol=1e-6)
