"""The task ``partial_fit`` adapted to: one ``_adaptation`` object per estimator.

An estimator keeps its adapted task as one object in ``_adaptation`` (None,
or absent, when no task is adapted): reset forgets it, pickling maps its
tensors between devices, and the methods that answer for a task exist once
it is there.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable
from types import MethodType

import torch


def is_adapted(estimator) -> bool:
    """Whether ``partial_fit`` has adapted ``estimator`` to a task."""
    return getattr(estimator, "_adaptation", None) is not None


class _AvailableAfterAdaptation:
    """``available_if(is_adapted)`` whose AttributeError says what to call.

    scikit-learn asks ``hasattr(estimator, "predict")``, so the method must
    stay absent (an ``AttributeError``) until a task is adapted; the message
    then tells a user calling it too early what to do first.
    """

    def __init__(self, method: Callable, check: Callable | None) -> None:
        self.method = method
        self.check = check
        functools.update_wrapper(self, method)

    def __get__(self, estimator, owner=None):
        if estimator is None:
            return self.method
        name = self.method.__name__
        if not is_adapted(estimator):
            raise AttributeError(
                f"This {type(estimator).__name__!r} has no attribute {name!r} "
                f"yet: {name} answers for the task adapted by partial_fit; call "
                "partial_fit on the new task's support set first"
            )
        if self.check is not None and not self.check(estimator):
            raise AttributeError(
                f"This {type(estimator).__name__!r} has no attribute {name!r}"
            )
        return MethodType(self.method, estimator)


def available_after_adaptation(check: Callable | None = None) -> Callable:
    """Decorate a method that exists only once ``partial_fit`` adapted a task.

    ``check(estimator)``, when given, is a further condition (as in
    :func:`sklearn.utils.metaestimators.available_if`).
    """
    return lambda method: _AvailableAfterAdaptation(method, check)


def move_to_device(value, device):
    """``value`` with every tensor and module in it moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, torch.nn.Module):
        tensors = [*value.parameters(), *value.buffers()]
        if all(t.device == torch.device(device) for t in tensors):
            return value
        # Module.to works in place: move a copy, never the caller's module.
        return copy.deepcopy(value).to(device)
    if isinstance(value, dict):
        return {key: move_to_device(item, device) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(move_to_device(item, device) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value,
            **{
                field.name: move_to_device(getattr(value, field.name), device)
                for field in dataclasses.fields(value)
                if field.init
            },
        )
    return value


class AdaptationMixin:
    """``reset_adaptation`` and device-safe pickling of the ``_adaptation`` state.

    Estimators with training classes keep them in ``_fit_classes``, which
    ``reset_adaptation`` restores as ``classes_``.
    """

    def __getstate__(self):
        # skorch maps net_ between devices itself; the adaptation state is ours
        # to map, so a model adapted on a GPU loads on a machine without one.
        state = super().__getstate__()
        if state.get("_adaptation") is not None:
            state["_adaptation"] = move_to_device(state["_adaptation"], "cpu")
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        net = self.__dict__.get("net_")
        adaptation = self.__dict__.get("_adaptation")
        if adaptation is not None and torch.device(net.device).type != "cpu":
            self._adaptation = move_to_device(adaptation, net.device)

    def reset_adaptation(self):
        """Forget the task adapted to by ``partial_fit``; go back to the fitted state.

        ``classes_`` are the training classes again (none when the network
        was initialised by ``partial_fit`` without ``fit``).

        Returns
        -------
        self : object
            The estimator.
        """
        vars(self).pop("_adaptation", None)
        if hasattr(self, "_fit_classes"):
            self.classes_ = self._fit_classes
        else:
            vars(self).pop("classes_", None)
        return self
