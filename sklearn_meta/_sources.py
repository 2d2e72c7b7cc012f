"""Episodes whose support and query samples come from different sources.

A *source* is who or what produced a sample: Omniglot's drawer, a
recording session, a camera. Lake et al.'s within-alphabet protocol has
one drawer draw all support characters and another draw all query
characters, so that a learner cannot match a query to its class by the
drawer's hand. Generalised to ``k_shot`` and ``n_query``: each episode
draws ``k_shot + n_query`` different sources shared by all its classes;
each class gives one support sample by each of the first ``k_shot``
sources and one query sample by each of the other ``n_query``. No source
of an episode's support is a source of its query.
"""

from __future__ import annotations

import numpy as np
import torch

# Redraws of the episodes whose classes share too few sources; with every
# class drawn by every source (Omniglot) none is ever needed.
_MAX_REDRAWS = 100


def check_sources(sources, n_samples: int) -> np.ndarray:
    """``sources`` as a 1-D array of one entry per sample, or a ValueError."""
    sources = np.asarray(sources)
    if sources.ndim != 1 or len(sources) != n_samples:
        raise ValueError(
            f"sources must have one entry per sample ({n_samples}), got an array "
            f"of shape {sources.shape}; pass who or what produced each sample, "
            "such as load_omniglot's drawer"
        )
    try:
        np.unique(sources)
    except TypeError:
        raise ValueError(
            "sources must be values that sort, such as ints or strings, not a "
            f"mix of types ({sources.dtype})"
        ) from None
    return sources


def check_enough_sources(sources: np.ndarray, k_shot: int, n_query: int):
    """``sources``, or a ValueError if it has fewer than ``k_shot + n_query`` values."""
    n_sources = len(np.unique(sources))
    if n_sources < k_shot + n_query:
        raise ValueError(
            f"sources has {n_sources} distinct values, but each episode takes "
            f"its k_shot={k_shot} support and n_query={n_query} query samples "
            f"per class from k_shot + n_query = {k_shot + n_query} different "
            "sources; lower k_shot or n_query, or pass sources=None"
        )
    return sources


def n_classes_with_sources(labels, sources, per_episode: int) -> int:
    """Number of classes of ``labels`` with samples by ``per_episode`` different sources."""
    _, classes = np.unique(labels, return_inverse=True)
    _, source_ids = np.unique(sources, return_inverse=True)
    n_sources = int(source_ids.max()) + 1
    cells = np.unique(classes * n_sources + source_ids)
    return int(np.sum(np.bincount(cells // n_sources) >= per_episode))


class SourceIndex:
    """The samples of each (class, source) cell, to draw source-disjoint episodes.

    Parameters
    ----------
    labels : LongTensor of shape (n_samples,)
        Classes encoded ``0..n_classes-1``.
    sources : array-like of shape (n_samples,)
        Source of each sample, any values.
    n_way, k_shot, n_query : int
        Episode shape.
    """

    def __init__(self, labels, sources, n_way: int, k_shot: int, n_query: int):
        sources = check_enough_sources(
            check_sources(sources, len(labels)), k_shot, n_query
        )
        self.n_way, self.k_shot = n_way, k_shot
        self.per_episode = k_shot + n_query
        _, source_ids = np.unique(sources, return_inverse=True)
        n_sources = int(source_ids.max()) + 1
        labels = np.asarray(labels)
        n_classes = int(labels.max()) + 1
        cell = labels * n_sources + source_ids
        cell_counts = np.bincount(cell, minlength=n_classes * n_sources)
        starts = (np.cumsum(cell_counts) - cell_counts).reshape(n_classes, n_sources)
        cell_counts = cell_counts.reshape(n_classes, n_sources)
        classes = np.flatnonzero((cell_counts > 0).sum(1) >= self.per_episode)
        if len(classes) < n_way:
            raise ValueError(
                f"{len(classes)} classes have samples by k_shot + n_query = "
                f"{self.per_episode} different sources, fewer than n_way={n_way}; "
                "lower n_way, k_shot or n_query"
            )
        self.classes = torch.as_tensor(classes)
        counts = cell_counts[classes]
        self.covered = torch.as_tensor(counts > 0)
        # Members of each cell padded with -1 to a box, so that one argmin
        # over random keys picks a sample per (episode, class, source).
        order = np.argsort(cell, kind="stable")
        position = np.arange(max(int(counts.max()), 1))
        valid = position < counts[:, :, None]
        members = (starts[classes][:, :, None] + position).clip(max=len(order) - 1)
        self.members = torch.as_tensor(np.where(valid, order[members], -1))
        self.valid = torch.as_tensor(valid)

    def sample(self, n_episodes: int, generator: torch.Generator) -> torch.Tensor:
        """Indices of shape (n_episodes, n_way, k_shot + n_query), support first."""
        n_classes, n_sources = self.covered.shape
        chosen = torch.empty(n_episodes, self.n_way, dtype=torch.long)
        drawn = torch.empty(n_episodes, self.per_episode, dtype=torch.long)
        pending = torch.arange(n_episodes)
        for _ in range(_MAX_REDRAWS):
            class_keys = torch.rand(len(pending), n_classes, generator=generator)
            classes = class_keys.argsort(dim=1)[:, : self.n_way]
            shared = self.covered[classes].all(dim=1)
            source_keys = torch.rand(len(pending), n_sources, generator=generator)
            source_keys = source_keys.masked_fill(~shared, float("inf"))
            sources = source_keys.argsort(dim=1)[:, : self.per_episode]
            done = shared.sum(dim=1) >= self.per_episode
            chosen[pending[done]] = classes[done]
            drawn[pending[done]] = sources[done]
            pending = pending[~done]
            if not len(pending):
                break
        else:
            raise ValueError(
                f"in {_MAX_REDRAWS} draws, no n_way={self.n_way} classes were found "
                f"that share k_shot + n_query = {self.per_episode} sources: few "
                "classes have samples by the same sources; lower n_way, k_shot "
                "or n_query"
            )
        cell = (chosen[:, :, None], drawn[:, None, :])
        keys = torch.rand(*self.members[cell].shape, generator=generator)
        keys = keys.masked_fill(~self.valid[cell], float("inf"))
        picked = keys.argmin(dim=3, keepdim=True)
        return torch.gather(self.members[cell], 3, picked).squeeze(3)
