"""Tasks and episodes: the units meta-learning trains and evaluates on.

An *episode* (a task) has a support set, whose labels the learner sees, and a
query set on which it is judged. Episodes are drawn either from a pool of
classes (``n_way`` classes, ``k_shot`` support and ``n_query`` query examples
each, labels remapped to ``0..n_way-1``) or, when ``groups`` are given, from
the samples of one group.

Samplers return index tensors into the sample pool, never copies of the data,
so the pool can stay on the device and a meta-batch is gathered in one step.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ._episodes import Episodes
from ._sources import (
    SourceIndex,
    check_enough_sources,
    check_sources,
    n_classes_with_sources,
)

__all__ = [
    "Episodes",
    "EpisodeSampler",
    "GroupTaskSampler",
    "TaskCollection",
    "plan_episodes",
]


class TaskCollection(Sequence):
    """A list of tasks, each an ``(X_i, y_i)`` pair, convertible to ``X, y, groups``.

    It is the literal "collection of tasks" that meta-learning trains on. The
    estimators accept it (or a plain list of pairs) in ``fit``; it is turned
    into one array of samples with a ``groups`` array of task ids.

    Parameters
    ----------
    tasks : iterable of (array-like, array-like)
        Each task's samples and targets. All tasks must have samples of the
        same shape.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_meta import TaskCollection
    >>> tasks = TaskCollection([(np.zeros((3, 2)), [0, 1, 0]), (np.ones((2, 2)), [1, 1])])
    >>> X, y, groups = tasks.to_arrays()
    >>> X.shape, groups.tolist()
    ((5, 2), [0, 0, 0, 1, 1])
    >>> len(TaskCollection.from_arrays(X, y, groups))
    2
    """

    def __init__(self, tasks: Iterable) -> None:
        self.tasks = [_check_task(index, task) for index, task in enumerate(tasks)]
        if not self.tasks:
            raise ValueError("TaskCollection needs at least one (X, y) task, got none")
        shapes = {task[0].shape[1:] for task in self.tasks}
        if len(shapes) > 1:
            raise ValueError(
                "every task must have samples of the same shape; got sample shapes "
                f"{sorted(shapes)}: reshape or pad the tasks' X to one shape"
            )

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index):
        return self.tasks[index]

    def __repr__(self) -> str:
        sizes = [len(task[1]) for task in self.tasks]
        return f"TaskCollection(n_tasks={len(sizes)}, n_samples={sum(sizes)})"

    def to_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Concatenate the tasks into ``X, y, groups`` (task ids ``0..n_tasks-1``)."""
        X = np.concatenate([task[0] for task in self.tasks])
        y = np.concatenate([task[1] for task in self.tasks])
        groups = np.repeat(np.arange(len(self.tasks)), [len(t[1]) for t in self.tasks])
        return X, y, groups

    @classmethod
    def from_arrays(cls, X, y, groups) -> TaskCollection:
        """Split ``X, y`` into one task per distinct value of ``groups``.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Samples of all tasks.
        y : array-like of shape (n_samples,)
            Their targets.
        groups : array-like of shape (n_samples,)
            Task id of each sample.

        Returns
        -------
        tasks : TaskCollection
            One ``(X_i, y_i)`` task per group, in the order of the sorted ids.
        """
        X, y, groups = np.asarray(X), np.asarray(y), np.asarray(groups)
        if not (len(X) == len(y) == len(groups)):
            raise ValueError(
                f"X, y and groups must have the same length, got {len(X)}, {len(y)} "
                f"and {len(groups)}"
            )
        return cls((X[members], y[members]) for members in split_by_group(groups))


def _check_task(index: int, task) -> tuple[np.ndarray, np.ndarray]:
    try:
        X, y = task
    except (TypeError, ValueError):
        raise ValueError(
            f"task {index} must be an (X, y) pair, got {type(task).__name__}"
        ) from None
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim < 2:
        raise ValueError(
            f"task {index}: X must be 2-D (n_samples, n_features) or 4-D images, "
            f"got an array of shape {X.shape}"
        )
    if y.ndim != 1 or len(y) != len(X):
        raise ValueError(
            f"task {index}: y must be 1-D with one target per sample; got X with "
            f"{len(X)} samples and y of shape {y.shape}"
        )
    return X, y


def plan_episodes(
    counts: Sequence[int], n_way: int, k_shot: int, n_query: int, *, where: str = ""
) -> tuple[int, int]:
    """Shrink ``n_way`` and ``n_query`` to what classes of ``counts`` samples allow.

    Small data is not an error: a warning says what was shrunk. Only data
    that cannot form one episode (fewer than two classes with more than
    ``k_shot`` samples) raises a ``ValueError``.

    Parameters
    ----------
    counts : sequence of int
        Samples of each class.
    n_way : int
        Classes per episode asked for.
    k_shot : int
        Support samples per class.
    n_query : int
        Query samples per class asked for.
    where : str, default=""
        Words inserted in the messages after "the data", such as
        ``" to evaluate"``.

    Returns
    -------
    n_way, n_query : int
        The episode shape the data allows.
    """
    counts = np.asarray(counts)
    eligible = counts[counts > k_shot]
    if len(eligible) < 2:
        raise ValueError(
            f"cannot form a single episode{where}: it needs at least two classes "
            f"with more than k_shot={k_shot} samples each, but "
            f"{len(eligible)} of the {len(counts)} classes have that many; "
            "lower k_shot or provide more samples per class"
        )
    new_way = min(n_way, len(eligible))
    new_query = min(n_query, int(eligible.min()) - k_shot)
    if new_way < n_way or new_query < n_query:
        warnings.warn(
            f"the data{where} allows episodes of n_way={new_way} and "
            f"n_query={new_query} only (asked n_way={n_way}, n_query={n_query}, "
            f"k_shot={k_shot}: {len(eligible)} classes have more than k_shot "
            f"samples, the smallest has {int(eligible.min())}); the episodes "
            "drawn are that small",
            UserWarning,
            stacklevel=3,
        )
    return new_way, new_query


def split_by_group(groups) -> list[np.ndarray]:
    """Indices of the samples of each group, in the order of ``np.unique(groups)``.

    One stable sort instead of a mask per group: thousands of tasks (MAML's
    sinusoids) would otherwise cost groups x samples operations.
    """
    groups = np.asarray(groups)
    _, group_index = np.unique(groups, return_inverse=True)
    order = np.argsort(group_index, kind="stable")
    bounds = np.cumsum(np.bincount(group_index))[:-1]
    return np.split(order, bounds)


def _generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(int(seed) if seed is not None else torch.seed())
    return generator


class EpisodeSampler:
    """Draw N-way K-shot episodes from a pool of classes, vectorised.

    Classes with at most ``k_shot`` samples are never drawn; the caller shrinks
    ``n_way`` and ``n_query`` beforehand with :func:`plan_episodes`.

    Parameters
    ----------
    labels : array-like of int of shape (n_samples,)
        Class of every sample of the pool, encoded ``0..n_classes-1``.
    n_way, k_shot, n_query : int
        Classes per episode, support and query samples per class.
    seed : int or None
        Seed of the sampler's own generator: the same seed draws the same
        episodes, whatever else uses torch's global generator.
    sources : array-like of shape (n_samples,), default=None
        Who or what produced each sample (Omniglot's drawer). When given,
        each episode draws ``k_shot + n_query`` different sources shared by
        its classes: every class has one support sample by each of the first
        ``k_shot`` and one query sample by each of the other ``n_query``, so
        no source of the support is a source of the query.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_meta.tasks import EpisodeSampler
    >>> sampler = EpisodeSampler(np.repeat(np.arange(10), 6), 3, 1, 2, seed=0)
    >>> episodes = sampler.sample(4)
    >>> episodes.support_index.shape, episodes.query_index.shape
    (torch.Size([4, 3]), torch.Size([4, 6]))
    >>> episodes.query_target[0].tolist()
    [0, 0, 1, 1, 2, 2]
    """

    def __init__(
        self,
        labels,
        n_way: int,
        k_shot: int,
        n_query: int,
        seed: int | None = None,
        *,
        sources=None,
    ) -> None:
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(n_query)
        self.by_source = None
        if sources is not None:
            self.by_source = SourceIndex(
                labels, sources, self.n_way, self.k_shot, self.n_query
            )
            self.classes = self.by_source.classes
            self.generator = _generator(seed)
            return
        per_episode = self.k_shot + self.n_query
        n_classes = int(labels.max()) + 1 if len(labels) else 0
        counts = torch.bincount(labels, minlength=n_classes)
        self.classes = torch.nonzero(counts >= per_episode).flatten()
        if len(self.classes) < self.n_way:
            raise ValueError(
                f"{len(self.classes)} classes have k_shot + n_query = {per_episode} "
                f"samples, fewer than n_way={self.n_way}; lower n_way, k_shot or n_query"
            )
        # Members of each usable class, padded with -1 to a rectangle so that
        # drawing samples for many episodes is a single argsort.
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        width = int(counts[self.classes].max())
        position = torch.arange(width)
        members = starts[self.classes, None] + position
        valid = position < counts[self.classes, None]
        self.members = torch.where(valid, order[members.clamp(max=len(order) - 1)], -1)
        self.valid = valid
        self.generator = _generator(seed)

    def sample(self, n_episodes: int) -> Episodes:
        """Draw ``n_episodes`` episodes.

        Parameters
        ----------
        n_episodes : int
            Number of episodes.

        Returns
        -------
        episodes : Episodes
            Their index and target tensors.
        """
        if self.by_source is not None:
            index = self.by_source.sample(n_episodes, self.generator)
        else:
            index = self._sample_index(n_episodes)
        labels = torch.arange(self.n_way).view(1, -1, 1)
        support = index[:, :, : self.k_shot].reshape(n_episodes, -1)
        query = index[:, :, self.k_shot :].reshape(n_episodes, -1)
        support_target = labels.expand(n_episodes, -1, self.k_shot).reshape(
            n_episodes, -1
        )
        query_target = labels.expand(n_episodes, -1, self.n_query).reshape(
            n_episodes, -1
        )
        return Episodes(support, query, support_target, query_target)

    def _sample_index(self, n_episodes: int) -> torch.Tensor:
        n_classes = len(self.classes)
        class_keys = torch.rand(n_episodes, n_classes, generator=self.generator)
        chosen = class_keys.argsort(dim=1)[:, : self.n_way]
        sample_keys = torch.rand(
            n_episodes, self.n_way, self.members.shape[1], generator=self.generator
        )
        sample_keys = sample_keys.masked_fill(~self.valid[chosen], float("inf"))
        picked = sample_keys.argsort(dim=2)[:, :, : self.k_shot + self.n_query]
        return torch.gather(self.members[chosen], 2, picked)


class GroupTaskSampler:
    """Draw tasks from groups: each group of samples is one task.

    For classification a task is an ``n_way`` episode among the classes of one
    group (labels remapped); for regression it is ``k_shot`` support and
    ``n_query`` query points of one group.

    Parameters
    ----------
    targets : array-like of shape (n_samples,)
        Encoded class labels (classification) or float targets (regression).
    groups : array-like of shape (n_samples,)
        Task id of every sample.
    n_way, k_shot, n_query : int
        Episode shape; ``n_way`` is ignored for regression.
    regression : bool
        Whether ``targets`` are continuous.
    seed : int or None
        Seed of the sampler's own generator.
    sources : array-like of shape (n_samples,), default=None
        Who or what produced each sample, for classification: each episode
        takes its support and query samples from different sources, see
        :class:`EpisodeSampler`.

    Warns
    -----
    UserWarning
        When some groups have fewer than ``n_way`` usable classes: they are
        never drawn, and the warning names them.
    """

    def __init__(
        self,
        targets,
        groups,
        n_way: int,
        k_shot: int,
        n_query: int,
        *,
        regression: bool,
        seed: int | None = None,
        sources=None,
    ) -> None:
        targets, groups = np.asarray(targets), np.asarray(groups)
        if sources is not None:
            sources = check_sources(sources, len(targets))
        self.regression = regression
        self.n_way, self.k_shot, self.n_query = int(n_way), int(k_shot), int(n_query)
        self.targets = torch.as_tensor(
            targets, dtype=torch.float32 if regression else torch.long
        )
        self.tasks: list[torch.Tensor] = []
        self.samplers: list[EpisodeSampler] = []
        per_episode = self.k_shot + self.n_query
        dropped = []
        for name, members in zip(
            np.unique(groups).tolist(), split_by_group(groups), strict=True
        ):
            if regression:
                if len(members) >= per_episode:
                    self.tasks.append(torch.as_tensor(members))
                continue
            _, encoded = np.unique(targets[members], return_inverse=True)
            if sources is None:
                n_usable = int(np.sum(np.bincount(encoded) >= per_episode))
            else:
                n_usable = n_classes_with_sources(
                    encoded, sources[members], per_episode
                )
            if n_usable < self.n_way:
                dropped.append((name, n_usable))
                continue
            self.tasks.append(torch.as_tensor(members))
            self.samplers.append(
                EpisodeSampler(
                    encoded,
                    self.n_way,
                    self.k_shot,
                    self.n_query,
                    0,
                    sources=None if sources is None else sources[members],
                )
            )
        usable = (
            f"k_shot + n_query = {per_episode} samples"
            if sources is None
            else f"samples by k_shot + n_query = {per_episode} different sources"
        )
        if not self.tasks:
            raise ValueError(
                "no group has enough samples for one task with "
                f"k_shot={self.k_shot} and n_query={self.n_query}"
                + (
                    ""
                    if regression
                    else f" in n_way={self.n_way} classes with {usable}"
                )
                + "; lower k_shot or n_query"
                + ("" if regression else ", or n_way")
            )
        if dropped:
            listed = ", ".join(
                f"{name!r} ({count} classes)" for name, count in dropped[:10]
            )
            more = f" and {len(dropped) - 10} more" if len(dropped) > 10 else ""
            warnings.warn(
                f"{len(dropped)} of the {len(dropped) + len(self.tasks)} groups have "
                f"fewer than n_way={self.n_way} classes with {usable} and are never "
                f"drawn: {listed}{more}; lower n_way to draw from them too",
                UserWarning,
                stacklevel=5,
            )
        self.generator = _generator(seed)
        for sampler in self.samplers:
            sampler.generator = self.generator

    def sample(self, n_episodes: int) -> Episodes:
        """Draw ``n_episodes`` tasks, each from a group chosen uniformly.

        Parameters
        ----------
        n_episodes : int
            Number of episodes.

        Returns
        -------
        episodes : Episodes
            Their index and target tensors.
        """
        chosen = torch.randint(
            len(self.tasks), (n_episodes,), generator=self.generator
        ).tolist()
        supports, queries, support_targets, query_targets = [], [], [], []
        for task in chosen:
            members = self.tasks[task]
            if self.regression:
                order = torch.randperm(len(members), generator=self.generator)
                support = members[order[: self.k_shot]]
                query = members[order[self.k_shot : self.k_shot + self.n_query]]
                support_target, query_target = (
                    self.targets[support],
                    self.targets[query],
                )
            else:
                episode = self.samplers[task].sample(1)
                support = members[episode.support_index[0]]
                query = members[episode.query_index[0]]
                support_target = episode.support_target[0]
                query_target = episode.query_target[0]
            supports.append(support)
            queries.append(query)
            support_targets.append(support_target)
            query_targets.append(query_target)
        return Episodes(
            torch.stack(supports),
            torch.stack(queries),
            torch.stack(support_targets),
            torch.stack(query_targets),
        )


def group_plan(
    targets,
    groups,
    n_way: int,
    k_shot: int,
    n_query: int,
    *,
    regression: bool,
    where: str = "",
) -> tuple[int, int]:
    """Shrink the episode shape to what the smallest usable group allows;
    ``where`` as in :func:`plan_episodes`."""
    targets, groups = np.asarray(targets), np.asarray(groups)
    members_of_groups = split_by_group(groups)
    if regression:
        sizes = np.array([len(members) for members in members_of_groups])
        if sizes.max() <= k_shot:
            raise ValueError(
                f"every task (group) has at most {sizes.max()} samples, but "
                f"k_shot={k_shot} support points plus at least one query point "
                "are needed; lower k_shot"
            )
        usable = sizes[sizes > k_shot]
        new_query = min(n_query, int(usable.min()) - k_shot)
        if new_query < n_query:
            warnings.warn(
                f"the smallest task{where} allows n_query={new_query} (asked "
                f"{n_query}); the episodes drawn have fewer query points",
                UserWarning,
                stacklevel=3,
            )
        return n_way, new_query
    best_way, best_query = 0, 0
    for members in members_of_groups:
        _, encoded = np.unique(targets[members], return_inverse=True)
        counts = np.bincount(encoded)
        eligible = counts[counts > k_shot]
        if len(eligible) >= 2:
            shape = (
                min(n_way, len(eligible)),
                min(n_query, int(eligible.min()) - k_shot),
            )
            best_way, best_query = max((best_way, best_query), shape)
    if best_way < 2:
        raise ValueError(
            "no task (group) has two classes with more than "
            f"k_shot={k_shot} samples each; lower k_shot or provide more samples"
        )
    if best_way < n_way or best_query < n_query:
        warnings.warn(
            f"the tasks{where} allow episodes of n_way={best_way} and "
            f"n_query={best_query} only (asked n_way={n_way}, n_query={n_query}); "
            "the episodes drawn are that small",
            UserWarning,
            stacklevel=3,
        )
    return best_way, best_query


def make_sampler(
    targets,
    groups,
    n_way: int,
    k_shot: int,
    n_query: int,
    *,
    regression: bool = False,
    seed: int | None = None,
    where: str = "",
    sources=None,
) -> EpisodeSampler | GroupTaskSampler:
    """The sampler of episodes of this shape, shrunk to what the data allows.

    With ``groups`` each episode is drawn within one group (a task);
    otherwise from the pool of classes of ``targets``. ``n_way`` and
    ``n_query`` shrink, with a warning, where the data is small (see
    :func:`plan_episodes`); ``where`` names the data in those messages.
    With ``sources`` the support and query of an episode come from
    different sources (see :class:`EpisodeSampler`).
    """
    if sources is not None:
        if regression:
            raise ValueError(
                "sources apply to classification episodes, but the targets are "
                "continuous (regression); pass sources=None"
            )
        sources = check_enough_sources(
            check_sources(sources, len(targets)), k_shot, n_query
        )
    if groups is not None:
        n_way, n_query = group_plan(
            targets, groups, n_way, k_shot, n_query, regression=regression, where=where
        )
        return GroupTaskSampler(
            targets,
            groups,
            n_way,
            k_shot,
            n_query,
            regression=regression,
            seed=seed,
            sources=sources,
        )
    _, encoded = np.unique(targets, return_inverse=True)
    n_way, n_query = plan_episodes(
        np.bincount(encoded), n_way, k_shot, n_query, where=where
    )
    return EpisodeSampler(encoded, n_way, k_shot, n_query, seed=seed, sources=sources)


def training_and_validation_samplers(
    targets,
    groups,
    n_way: int,
    k_shot: int,
    n_query: int,
    *,
    validation_fraction: float,
    regression: bool,
    seed: int,
) -> tuple[tuple[np.ndarray, EpisodeSampler | GroupTaskSampler], tuple | None]:
    """Split off held-out classes (or tasks) for meta-validation; a sampler for each part.

    ``validation_fraction`` of the classes (of the groups, when given) is
    held out. Returns ``(train_index, train_sampler)`` and
    ``(valid_index, valid_sampler)`` or None without validation; each
    sampler's indices point into its part.
    """
    rng = np.random.default_rng(seed)
    holdout_keys = groups if groups is not None else targets
    valid_mask = np.zeros(len(targets), dtype=bool)
    if validation_fraction > 0:
        keys = np.unique(holdout_keys)
        n_valid = int(round(validation_fraction * len(keys)))
        if n_valid < 1 or n_valid > len(keys) - 1:
            kind = "tasks" if groups is not None else "classes"
            raise ValueError(
                f"validation_fraction={validation_fraction} holds out "
                f"{n_valid} of {len(keys)} {kind}; it must leave at least one "
                f"for validation and one for training: change validation_fraction"
            )
        valid_mask = np.isin(holdout_keys, rng.choice(keys, n_valid, replace=False))
    parts = []
    for offset, (part, mask) in enumerate(
        (("training", ~valid_mask), ("validation", valid_mask))
    ):
        if not mask.any():
            parts.append(None)
            continue
        index = np.flatnonzero(mask)
        sampler = make_sampler(
            targets[index],
            None if groups is None else groups[index],
            n_way,
            k_shot,
            n_query,
            regression=regression,
            seed=seed + offset,
            where=f" ({part} part)" if validation_fraction > 0 else "",
        )
        parts.append((index, sampler))
    return parts[0], parts[1]
