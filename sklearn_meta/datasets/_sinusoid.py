"""make_sinusoid_tasks: the sinusoid regression benchmark of MAML."""

import numpy as np
from sklearn.utils import check_random_state

from ._validation import _check_int, _check_range


def make_sinusoid_tasks(
    n_tasks: int = 100,
    n_points: int = 20,
    *,
    amplitude_range=(0.1, 5.0),
    phase_range=(0.0, np.pi),
    x_range=(-5.0, 5.0),
    random_state=None,
):
    """Generate sinusoid regression tasks, the regression benchmark of MAML.

    Task ``i`` is ``y = A_i * sin(x - phi_i)`` with amplitude ``A_i`` and phase
    ``phi_i`` drawn uniformly from their ranges, and ``n_points`` inputs
    drawn uniformly from ``x_range`` (Finn et al., 2017).

    Parameters
    ----------
    n_tasks : int, default=100
        Number of tasks (sinusoids).
    n_points : int, default=20
        Number of points per task, at least 2 (a support and a query point).
    amplitude_range : tuple of float, default=(0.1, 5.0)
        ``(low, high)`` of the amplitudes, ``0 <= low <= high``.
    phase_range : tuple of float, default=(0, pi)
        ``(low, high)`` of the phases, ``low <= high``.
    x_range : tuple of float, default=(-5.0, 5.0)
        ``(low, high)`` of the inputs, ``low < high``.
    random_state : int, RandomState instance or None, default=None
        Seeds the tasks and their points.

    Returns
    -------
    X : ndarray of shape (n_tasks * n_points, 1)
        The inputs, float64, grouped by task.
    y : ndarray of shape (n_tasks * n_points,)
        The targets, float64.
    groups : ndarray of shape (n_tasks * n_points,)
        The task of each point, int64 in ``0..n_tasks - 1``: pass it as
        ``fit(X, y, groups=groups)``.

    References
    ----------
    .. [1] C. Finn, P. Abbeel and S. Levine, "Model-Agnostic Meta-Learning
       for Fast Adaptation of Deep Networks", ICML 2017.

    Examples
    --------
    >>> from sklearn_meta.datasets import make_sinusoid_tasks
    >>> X, y, groups = make_sinusoid_tasks(n_tasks=3, n_points=4, random_state=0)
    >>> X.shape, y.shape, groups
    ((12, 1), (12,), array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]))
    """
    n_tasks = _check_int(n_tasks, "n_tasks", 1)
    n_points = _check_int(
        n_points, "n_points", 2, hint=": a task needs a support and a query point"
    )
    amplitude_range = _check_range(amplitude_range, "amplitude_range", nonnegative=True)
    phase_range = _check_range(phase_range, "phase_range")
    x_range = _check_range(x_range, "x_range", strict=True)
    rng = check_random_state(random_state)

    amplitude = rng.uniform(*amplitude_range, size=n_tasks)
    phase = rng.uniform(*phase_range, size=n_tasks)
    x = rng.uniform(*x_range, size=(n_tasks, n_points))
    y = amplitude[:, None] * np.sin(x - phase[:, None])
    groups = np.repeat(np.arange(n_tasks, dtype=np.int64), n_points)
    return x.reshape(-1, 1), y.ravel(), groups
