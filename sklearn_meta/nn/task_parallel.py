"""Run independent per-task computations on the CPU's cores, one task per core.

The networks of few-shot learning are small: a task's convolutions keep two
intra-op threads only partly busy (measured on 2 cores for a Conv4 MAML task:
one thread 5.0 s, two threads 3.0 s for 16 tasks), while two tasks run side
by side on one thread each finish both in the time of one (2.6 s). PyTorch
releases the GIL inside its kernels and runs a CPU backward pass in the
calling thread, so Python threads are enough.

Results come back in task order, whatever order the threads finish in, so a
caller that sums them gets the same numbers on every run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["map_tasks", "task_workers"]

Result = TypeVar("Result")

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def task_workers(n_tasks: int) -> int:
    """How many tasks :func:`map_tasks` runs at once: one per torch thread."""
    return max(1, min(int(n_tasks), torch.get_num_threads()))


def _pool(n_workers: int) -> ThreadPoolExecutor:
    # One long-lived pool per size: starting threads at every meta-batch
    # would cost more than it saves for small tasks.
    with _pools_lock:
        pool = _pools.get(n_workers)
        if pool is None:
            pool = ThreadPoolExecutor(n_workers, thread_name_prefix="sklearn-meta-task")
            _pools[n_workers] = pool
        return pool


def map_tasks(
    function: Callable[[int], Result], n_tasks: int, parallel: bool = True
) -> Iterator[Result]:
    """``function(t)`` for ``t`` in ``range(n_tasks)``, in that order.

    With ``parallel=True`` and more than one torch thread, the tasks are
    spread over :func:`task_workers` Python threads, each running torch on
    ``torch.get_num_threads() // workers`` intra-op threads; the calling
    thread's setting is left as it was. Otherwise the tasks run one after
    the other in the calling thread.

    ``function`` must be safe to run in several threads at once: no writes
    to shared state (module attributes, buffers, ``.grad``).
    """
    n_workers = task_workers(n_tasks) if parallel else 1
    if n_workers == 1:
        for task in range(n_tasks):
            yield function(task)
        return
    caller_threads = torch.get_num_threads()
    threads_per_worker = max(1, caller_threads // n_workers)

    def run(task: int) -> Result:
        if torch.get_num_threads() != threads_per_worker:
            torch.set_num_threads(threads_per_worker)
        return function(task)

    try:
        yield from _pool(n_workers).map(run, range(n_tasks))
    finally:
        # torch.set_num_threads also stores the count that threads started
        # later inherit; a worker's setting must not become that default.
        torch.set_num_threads(caller_threads)
