"""A module's forward with given tensors, from any thread."""

from __future__ import annotations

import copy
import threading
import weakref

import torch
from torch import nn
from torch.func import functional_call

__all__ = ["functional_forward"]

# functional_call swaps a module's tensors in place for the duration of the
# call, so two threads must not run it on the same module: a thread other
# than the main one runs it on its own shallow replica of the module.
_replicas = threading.local()


def _replica(module: nn.Module) -> nn.Module:
    if threading.current_thread() is threading.main_thread():
        return module
    replicas = _replicas.__dict__.setdefault("modules", weakref.WeakKeyDictionary())
    replica = replicas.get(module)
    if replica is None:
        shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
        replica = replicas[module] = copy.deepcopy(module, memo=shared)
    for mine, original in zip(replica.modules(), module.modules(), strict=True):
        mine.training = original.training
    return replica


def functional_forward(
    module: nn.Module,
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    x: torch.Tensor,
) -> torch.Tensor:
    """``module(x)`` computed with given parameters and buffers in place of its own.

    Safe to call from several threads at once: a thread other than the main
    one runs a shallow replica of ``module`` that shares its tensors.

    Parameters
    ----------
    module : torch.nn.Module
        The network to run.
    params : dict of str to torch.Tensor
        Tensors replacing the module's parameters, keyed as in
        ``module.named_parameters()``.
    buffers : dict of str to torch.Tensor
        Tensors replacing the module's buffers, keyed as in
        ``module.named_buffers()``.
    x : torch.Tensor
        The module's input.

    Returns
    -------
    output : torch.Tensor
        ``module(x)`` with those tensors.
    """
    return functional_call(_replica(module), (params, buffers), (x,))
