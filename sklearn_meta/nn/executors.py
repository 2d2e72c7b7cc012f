"""How the tasks of a meta-batch run: side by side on threads, or vectorised.

An executor maps a per-task function over the first dimension of its
inputs and knows nothing of what the function computes. Two methods:

``forward(function, *batched)``
    ``function(*task_inputs)`` returns a tuple of tensors per task; the
    result is those tuples stacked over tasks (graphs kept).
``backward(function, parameters, *batched)``
    ``function`` returns ``(loss, *outputs)`` per task. Returns the gradient
    of the mean of the tasks' losses with respect to ``parameters`` (None
    where unused), then the losses and outputs stacked and detached.

:func:`choose_executor` states the rule that picks one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch
from torch import nn

from .backbones import elementary_batch_norm

__all__ = ["AutoExecutor", "TaskThreads", "TaskVmap", "choose_executor"]

Result = TypeVar("Result")

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(n_workers: int) -> ThreadPoolExecutor:
    # One long-lived pool per size: starting threads at every meta-batch
    # would cost more than it saves for small tasks.
    with _pools_lock:
        pool = _pools.get(n_workers)
        if pool is None:
            pool = ThreadPoolExecutor(n_workers, thread_name_prefix="sklearn-meta-task")
            _pools[n_workers] = pool
        return pool


def map_tasks(function: Callable[[int], Result], n_tasks: int) -> Iterator[Result]:
    """``function(t)`` for ``t`` in ``range(n_tasks)``, in that order, one
    task per torch thread at a time.

    PyTorch releases the GIL inside its kernels and runs a CPU backward pass
    in the calling thread, so Python threads keep the cores busy: the small
    networks of few-shot learning keep two intra-op threads only partly busy,
    while two tasks on one thread each finish both in about the time of one.
    Each worker runs torch on ``threads // workers`` intra-op threads and the
    caller's grad mode (thread-local in torch); the caller's thread count is
    left as it was.
    """
    caller_threads = torch.get_num_threads()
    n_workers = max(1, min(int(n_tasks), caller_threads))
    if n_workers == 1:
        for task in range(n_tasks):
            yield function(task)
        return
    threads_per_worker = max(1, caller_threads // n_workers)
    grad_enabled = torch.is_grad_enabled()

    def run(task: int) -> Result:
        if torch.get_num_threads() != threads_per_worker:
            torch.set_num_threads(threads_per_worker)
        with torch.set_grad_enabled(grad_enabled):
            return function(task)

    try:
        yield from _pool(n_workers).map(run, range(n_tasks))
    finally:
        # torch.set_num_threads also stores the count that threads started
        # later inherit; a worker's setting must not become that default.
        torch.set_num_threads(caller_threads)


def _stack(results: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.stack(parts) for parts in zip(*results, strict=True))


class TaskThreads:
    """The tasks on the CPU's threads, each back-propagated on its own.

    Only the graphs of the tasks in flight are alive (the memory of a
    per-task loop), and the per-task gradients are summed in task order,
    so the result does not depend on which thread finishes first.
    """

    def forward(self, function: Callable, *batched: torch.Tensor):
        def task(t: int):
            return function(*(x[t] for x in batched))

        return _stack(list(map_tasks(task, len(batched[0]))))

    def backward(
        self, function: Callable, parameters: Sequence[torch.Tensor], *batched
    ):
        n_tasks = len(batched[0])

        def task(t: int):
            loss, *outputs = function(*(x[t] for x in batched))
            grads = torch.autograd.grad(loss / n_tasks, parameters, allow_unused=True)
            return grads, loss.detach(), *(o.detach() for o in outputs)

        total: list[torch.Tensor | None] = [None] * len(parameters)
        results = []
        for grads, *rest in map_tasks(task, n_tasks):
            results.append(rest)
            total = [
                g if t is None else t if g is None else t + g
                for t, g in zip(total, grads, strict=True)
            ]
        return total, *_stack(results)


class TaskVmap:
    """The tasks vectorised by :func:`torch.func.vmap`, back-propagated together.

    Under ``vmap`` the second derivative of the native ``batch_norm`` was
    wrong in torch 2.13, so :class:`~sklearn_meta.nn.backbones.TaskBatchNorm2d`
    computes with elementary operations while a vmap runs.
    """

    def forward(self, function: Callable, *batched: torch.Tensor):
        with elementary_batch_norm():
            return torch.func.vmap(function, randomness="different")(*batched)

    def backward(
        self, function: Callable, parameters: Sequence[torch.Tensor], *batched
    ):
        losses, *outputs = self.forward(function, *batched)
        grads = torch.autograd.grad(losses.mean(), parameters, allow_unused=True)
        return grads, losses.detach(), *(o.detach() for o in outputs)


def runs_under_vmap(body: nn.Module) -> bool:
    """Whether :class:`TaskVmap` can run ``body``: every layer from torch.nn
    or this package (a user's own layer might read values or branch on
    data), and no BatchNorm that updates running statistics in place."""
    return all(
        type(m).__module__.startswith(("torch.nn.", "sklearn_meta.nn."))
        and not isinstance(m, nn.modules.batchnorm._BatchNorm)
        for m in body.modules()
    )


def choose_executor(
    device: torch.device, body: nn.Module, vectorisable: bool = True
) -> TaskThreads | TaskVmap:
    """The executor for a meta-batch on ``device``: the measured rule.

    On a CPU, :class:`TaskThreads`: a vmap over tasks measured slower than a
    per-task loop there (figures in the Architecture page), and threads run
    tasks side by side.
    On CUDA, :class:`TaskVmap` when it can run the body and the per-task
    function (``vectorisable``): a per-task loop leaves a GPU idle.

    Parameters
    ----------
    device : torch.device
        Device the meta-batch's tensors are on.
    body : torch.nn.Module
        The network the per-task function runs; :class:`TaskVmap` is chosen
        only when every layer of it can run under :func:`torch.func.vmap`.
    vectorisable : bool, default=True
        Whether the per-task function itself may run under ``vmap``.

    Returns
    -------
    executor : TaskThreads or TaskVmap
        Maps the per-task function over the tasks of a meta-batch.
    """
    if device.type == "cuda" and vectorisable and runs_under_vmap(body):
        return TaskVmap()
    return TaskThreads()


class AutoExecutor:
    """:func:`choose_executor` at every call, for the device of the inputs.

    Parameters
    ----------
    body : torch.nn.Module
        The network the per-task function runs.
    vectorisable : bool, default=True
        Whether the per-task function may run under :func:`torch.func.vmap`.
    """

    def __init__(self, body: nn.Module, vectorisable: bool = True) -> None:
        self.body = body
        self.vectorisable = vectorisable

    def _executor(self, batched) -> TaskThreads | TaskVmap:
        return choose_executor(batched[0].device, self.body, self.vectorisable)

    def forward(self, function: Callable, *batched: torch.Tensor):
        return self._executor(batched).forward(function, *batched)

    def backward(self, function: Callable, parameters, *batched: torch.Tensor):
        return self._executor(batched).backward(function, parameters, *batched)
