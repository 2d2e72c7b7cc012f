"""Episodes: a batch of tasks as index tensors into a sample pool.

Re-exported by :mod:`sklearn_meta.tasks`, whose samplers draw them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Episodes:
    """A batch of episodes as index tensors into a sample pool.

    Parameters
    ----------
    support_index, query_index : LongTensor of shape (n_episodes, n_support) and (n_episodes, n_query_total)
        Rows of the pool in each episode's support and query set.
    support_target, query_target : Tensor of the same shapes
        Labels remapped to ``0..n_way-1`` (classification) or the regression
        targets.
    """

    support_index: torch.Tensor
    query_index: torch.Tensor
    support_target: torch.Tensor
    query_target: torch.Tensor

    def __len__(self) -> int:
        return self.support_index.shape[0]

    def __getitem__(self, item) -> Episodes:
        return Episodes(
            self.support_index[item],
            self.query_index[item],
            self.support_target[item],
            self.query_target[item],
        )

    def to(self, device) -> Episodes:
        """The same episodes with every tensor on ``device``.

        Parameters
        ----------
        device : str or torch.device
            Where the tensors go.

        Returns
        -------
        episodes : Episodes
            A copy on ``device``.
        """
        return Episodes(*(t.to(device) for t in self._tensors()))

    def _tensors(self):
        return (
            self.support_index,
            self.query_index,
            self.support_target,
            self.query_target,
        )

    def compact(self) -> tuple[np.ndarray, Episodes]:
        """The pool rows these episodes draw, each once, and the episodes over them.

        Returns ``rows`` (sorted) and the same episodes with indices into
        ``rows``, so that only the drawn samples need embedding.
        """
        n_support = self.support_index.shape[1]
        drawn = torch.cat([self.support_index, self.query_index], dim=1)
        rows, position = np.unique(drawn.cpu().numpy(), return_inverse=True)
        position = torch.as_tensor(position.reshape(drawn.shape), device=drawn.device)
        return rows, Episodes(
            position[:, :n_support],
            position[:, n_support:],
            self.support_target,
            self.query_target,
        )

    def gather(self, X: torch.Tensor) -> dict[str, torch.Tensor]:
        """The module inputs of these episodes, gathered from the pool ``X``.

        Parameters
        ----------
        X : torch.Tensor of shape (n_samples, ...)
            The sample pool the indices point into.

        Returns
        -------
        inputs : dict of str to torch.Tensor
            ``support_x``, ``support_y`` and ``query_x``, each with a leading
            episode dimension.
        """
        return {
            "support_x": X[self.support_index],
            "support_y": self.support_target,
            "query_x": X[self.query_index],
        }
