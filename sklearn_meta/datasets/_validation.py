"""The checks of the datasets' arguments: a ValueError that says what to pass."""

import numbers

import numpy as np


def _check_int(value, name, minimum, hint=""):
    """Return ``value`` as an int, or raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"{name} must be an integer >= {minimum}, got {value!r} "
            f"of type {type(value).__name__}."
        )
    if value < minimum:
        raise ValueError(f"{name}={value} is too small{hint}; use {name} >= {minimum}.")
    return int(value)


def _check_range(value, name, *, strict=False, nonnegative=False):
    """Return ``value`` as a ``(low, high)`` pair of floats, or raise."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a pair of numbers (low, high), got {value!r}."
        ) from None
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    if low > high:
        relation = "<" if strict else "<="
        raise ValueError(
            f"{name}={value!r} has low > high; pass (low, high) with "
            f"low {relation} high."
        )
    if strict and low == high:
        raise ValueError(
            f"{name}={value!r} is an empty interval; pass (low, high) with low < high."
        )
    if nonnegative and low < 0:
        raise ValueError(
            f"{name}={value!r} contains negative values; "
            "a negative amplitude is a phase shift by pi: use low >= 0."
        )
    return low, high
