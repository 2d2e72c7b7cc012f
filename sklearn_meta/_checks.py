"""Checks of the estimators' input and parameters that scikit-learn's do not cover.

Each refuses, with a message that says what to change, something that would
otherwise fail deep inside torch or skorch, or give a silent wrong answer.
"""

from __future__ import annotations

import numbers

import numpy as np
from skorch.callbacks import Callback


def check_labels(y) -> None:
    """Refuse class labels that mix types or hold None, before numpy does."""
    y = np.asarray(y)
    if y.dtype != object:
        return
    values = y.ravel().tolist()
    if any(value is None for value in values):
        raise ValueError(
            "y holds None labels; give every sample a class (drop the unlabelled "
            "samples, or label them)"
        )
    kinds = {isinstance(value, str) for value in values}
    if len(kinds) > 1:
        raise ValueError(
            "y mixes string and number labels; use one type for all classes, "
            "e.g. y.astype(str)"
        )


def check_float32_range(X: np.ndarray) -> None:
    """Refuse values that become infinite in the networks' float32."""
    if X.dtype != np.float64 or not X.size:
        return
    largest = max(float(X.max()), -float(X.min()))
    if largest > np.finfo(np.float32).max:
        raise ValueError(
            f"X has values up to {largest:.3g} in magnitude, beyond float32's range "
            f"({np.finfo(np.float32).max:.3g}), where the network computes: they "
            "would give infinite outputs; scale X (e.g. StandardScaler in a "
            "Pipeline)"
        )


def check_channels_first(shape: tuple, where: str) -> None:
    """Refuse (H, W, C) images: the networks read (C, H, W)."""
    if len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4):
        raise ValueError(
            f"{where} looks channels-last (height, width, channels) = {shape}; "
            "images must be channels-first (channels, height, width): pass "
            "np.moveaxis(X, -1, 1)"
            + (" and input_shape=(C, H, W)" if where == "input_shape" else "")
        )


def check_hidden_layer_sizes(hidden_layer_sizes) -> None:
    """Refuse widths that are not positive ints (torch would fail, or build nothing)."""
    sizes = hidden_layer_sizes
    if isinstance(sizes, numbers.Integral):
        sizes = (sizes,)
    if not all(
        isinstance(size, numbers.Integral) and not isinstance(size, bool)
        for size in sizes
    ) or any(size < 1 for size in sizes):
        raise ValueError(
            "hidden_layer_sizes must be positive ints, one per hidden layer, "
            f"such as (128, 128); got {hidden_layer_sizes!r}"
        )


def check_callbacks(callbacks, validation_fraction: float) -> None:
    """Refuse what skorch would fail on mid-fit: non-callbacks, unmet monitors."""
    for callback in callbacks or []:
        named = (
            isinstance(callback, tuple)
            and len(callback) == 2
            and isinstance(callback[0], str)
        )
        instance = callback[1] if named else callback
        if not isinstance(instance, Callback):
            raise ValueError(
                "callbacks must be skorch callbacks, such as "
                "skorch.callbacks.EarlyStopping(), or (name, callback) pairs; "
                f"got {callback!r}"
            )
        monitor = getattr(instance, "monitor", None)
        if (
            validation_fraction == 0
            and isinstance(monitor, str)
            and monitor.startswith("valid")
        ):
            raise ValueError(
                f"{type(instance).__name__} monitors {monitor!r}, which exists "
                "only with meta-validation: set validation_fraction (e.g. 0.2, "
                "classes held out for validation), or monitor='train_loss'"
            )
