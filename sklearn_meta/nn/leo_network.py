"""LEO's core with an optional backbone in front of it, trained jointly."""

from __future__ import annotations

import torch
from torch import nn

from .backbones import embed_episodes
from .leo import LEO


class LEONetwork(nn.Module):
    """An optional backbone in front of the LEO core, trained jointly.

    Without a backbone the core sees the input features; with one, the
    backbone's embeddings of all the samples of a meta-batch, computed in
    one pass.

    Parameters
    ----------
    leo : LEO
        The core.
    backbone : torch.nn.Module or None, default=None
        Maps samples ``(n, *sample_shape)`` to features ``(n, leo.in_features)``.

    Examples
    --------
    >>> import torch
    >>> from sklearn_meta.nn.leo import LEO
    >>> from sklearn_meta.nn.leo_network import LEONetwork
    >>> network = LEONetwork(LEO(3, latent_dim=2), torch.nn.Linear(5, 3))
    >>> network(torch.randn(1, 2, 5), torch.tensor([[0, 1]]), torch.randn(1, 4, 5)).shape
    torch.Size([1, 4, 2])
    """

    def __init__(self, leo: LEO, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.leo = leo
        self.backbone = backbone

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features that the core sees for samples ``x``.

        Parameters
        ----------
        x : torch.Tensor of shape (n, \\*sample_shape)
            Samples.

        Returns
        -------
        features : torch.Tensor of shape (n, in_features)
            The backbone's output, or ``x`` flattened without a backbone.
        """
        return x.flatten(1) if self.backbone is None else self.backbone(x)

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """Query logits of every task of a meta-batch, as :meth:`LEO.forward`.

        Parameters
        ----------
        support_x : torch.Tensor of shape (B, S, \\*sample_shape)
            Support samples of ``B`` tasks.
        support_y : torch.Tensor of shape (B, S)
            Support labels in ``0 .. n_classes - 1``.
        query_x : torch.Tensor of shape (B, Q, \\*sample_shape)
            Query samples.

        Returns
        -------
        logits : torch.Tensor of shape (B, Q, n_classes)
            Query logits of the adapted classifiers.
        """
        support_x, query_x = embed_episodes(self.embed, support_x, query_x)
        return self.leo(support_x, support_y, query_x)

    def forward_with_penalty(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Query logits and the core's penalty, as :meth:`LEO.forward_with_penalty`.

        Parameters
        ----------
        support_x : torch.Tensor of shape (B, S, \\*sample_shape)
            Support samples of ``B`` tasks.
        support_y : torch.Tensor of shape (B, S)
            Support labels in ``0 .. n_classes - 1``.
        query_x : torch.Tensor of shape (B, Q, \\*sample_shape)
            Query samples.

        Returns
        -------
        logits : torch.Tensor of shape (B, Q, n_classes)
            As :meth:`forward`.
        penalty : torch.Tensor of shape ()
            The core's weighted penalties, to add to the query loss.
        """
        support_x, query_x = embed_episodes(self.embed, support_x, query_x)
        return self.leo.forward_with_penalty(support_x, support_y, query_x)
