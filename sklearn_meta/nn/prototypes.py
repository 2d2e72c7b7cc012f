"""Prototypical networks with a learnable metric (Snell et al., 2017)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import embed_episodes

METRICS = ("euclidean", "cosine", "mahalanobis")


class PrototypicalNetwork(nn.Module):
    """Embed, average each class into a prototype, classify by distance.

    Parameters
    ----------
    backbone : nn.Module
        Maps ``(n, *input)`` to embeddings ``(n, embedding_dim)``.
    embedding_dim : int
        Width of the backbone's embedding.
    metric : {"euclidean", "cosine", "mahalanobis"}, default="euclidean"
        ``"euclidean"``: squared distance; ``"cosine"``: cosine similarity;
        ``"mahalanobis"``: squared distance under a learned positive-definite
        metric, a positive diagonal plus a rank-``metric_rank`` term.
    metric_rank : int, default=0
        Rank of the low-rank part of the Mahalanobis metric.

    Notes
    -----
    Every metric is scaled by a learned temperature: logits are
    ``-temperature * distance`` (or ``temperature * cosine``). The
    temperature starts at 1 for distances and at 10 for cosine similarity,
    where an unscaled softmax over values in [-1, 1] would be nearly flat.
    """

    def __init__(
        self,
        backbone: nn.Module,
        embedding_dim: int,
        metric: str = "euclidean",
        metric_rank: int = 0,
    ) -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.backbone = backbone
        self.metric = metric
        initial_temperature = 10.0 if metric == "cosine" else 1.0
        self.log_temperature = nn.Parameter(torch.tensor(math.log(initial_temperature)))
        if metric == "mahalanobis":
            # softplus(x) = 1 at this value: the metric starts as the euclidean one.
            self.diagonal = nn.Parameter(
                torch.full((embedding_dim,), math.log(math.e - 1.0))
            )
            # A zero start would be a saddle point (the gradient of |U^T v|^2 is
            # proportional to U), so the low-rank factor starts small and random.
            self.low_rank = (
                nn.Parameter(
                    torch.randn(embedding_dim, metric_rank) / math.sqrt(embedding_dim)
                )
                if metric_rank > 0
                else None
            )
        else:
            self.low_rank = None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(n, embedding_dim)`` of a batch of samples.

        Parameters
        ----------
        x : torch.Tensor of shape (n, ...)
            Samples, in the shape the backbone takes.

        Returns
        -------
        embeddings : torch.Tensor of shape (n, embedding_dim)
            The backbone's output.
        """
        return self.backbone(x)

    def metric_space(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Map embeddings to the space in which the metric is euclidean (or cosine).

        Parameters
        ----------
        embeddings : torch.Tensor of shape (..., embedding_dim)
            Embeddings of samples or prototypes.

        Returns
        -------
        mapped : torch.Tensor of shape (..., n_dims)
            Normalised (cosine), scaled and extended by the low-rank part
            (Mahalanobis), or unchanged (euclidean).
        """
        if self.metric == "cosine":
            return F.normalize(embeddings, dim=-1)
        if self.metric == "mahalanobis":
            # (a-b)^T (D + U U^T) (a-b) = |sqrt(D)(a-b)|^2 + |U^T(a-b)|^2
            mapped = embeddings * F.softplus(self.diagonal).sqrt()
            if self.low_rank is not None:
                low_rank = self.low_rank.to(embeddings.dtype)
                mapped = torch.cat([mapped, embeddings @ low_rank], dim=-1)
            return mapped
        return embeddings

    @staticmethod
    def class_prototypes(
        embeddings: torch.Tensor, labels: torch.Tensor, n_classes: int
    ) -> torch.Tensor:
        """Mean embedding of each class: ``(..., S, D), (..., S) -> (..., n_classes, D)``.

        Parameters
        ----------
        embeddings : torch.Tensor of shape (..., S, D)
            Support embeddings.
        labels : torch.Tensor of shape (..., S)
            Their classes, in ``0..n_classes-1``.
        n_classes : int
            Number of classes; a class without examples gets a zero prototype.

        Returns
        -------
        prototypes : torch.Tensor of shape (..., n_classes, D)
            Class means.
        """
        # Sums by scatter-add: a one-hot matrix would be samples x classes.
        shape = (*labels.shape[:-1], n_classes)
        sums = embeddings.new_zeros(*shape, embeddings.shape[-1])
        sums = sums.scatter_add(
            -2, labels.unsqueeze(-1).expand_as(embeddings), embeddings
        )
        counts = embeddings.new_zeros(shape).scatter_add(
            -1, labels, embeddings.new_ones(labels.shape)
        )
        return sums / counts.clamp_min(1.0).unsqueeze(-1)

    def logits(self, queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., Q, C)`` of query embeddings against class prototypes.

        Parameters
        ----------
        queries : torch.Tensor of shape (..., Q, D)
            Query embeddings.
        prototypes : torch.Tensor of shape (..., C, D)
            Class prototypes.

        Returns
        -------
        logits : torch.Tensor of shape (..., Q, C)
            Minus the scaled squared distance, or the scaled cosine similarity.
        """
        temperature = self.log_temperature.exp()
        queries = self.metric_space(queries)
        prototypes = self.metric_space(prototypes)
        if self.metric == "cosine":
            return temperature * queries @ prototypes.transpose(-1, -2)
        distances = (
            queries.square().sum(-1, keepdim=True)
            + prototypes.square().sum(-1).unsqueeze(-2)
            - 2.0 * queries @ prototypes.transpose(-1, -2)
        )
        return -temperature * distances.clamp_min(0.0)

    def forward(
        self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor
    ) -> torch.Tensor:
        """Query logits ``(B, Q, n_way)`` for a meta-batch of ``B`` episodes.

        Parameters
        ----------
        support_x : torch.Tensor of shape (B, S, ...)
            Support samples of each episode.
        support_y : torch.Tensor of shape (B, S)
            Their classes, in ``0..n_way-1``.
        query_x : torch.Tensor of shape (B, Q, ...)
            Query samples of each episode.

        Returns
        -------
        logits : torch.Tensor of shape (B, Q, n_way)
            Logits of each query against its episode's prototypes.
        """
        support, queries = embed_episodes(self.embed, support_x, query_x)
        n_classes = int(support_y.max()) + 1
        return self.logits(
            queries, self.class_prototypes(support, support_y, n_classes)
        )


def finetune(
    network: PrototypicalNetwork,
    support_x: torch.Tensor,
    support_y: torch.Tensor,
    n_classes: int,
    *,
    n_steps: int,
    lr: float,
) -> PrototypicalNetwork:
    """A copy of ``network`` fine-tuned on one task's support set.

    Each of ``n_steps`` Adam steps at ``lr`` minimises the prototypical loss
    of the support set against its own prototypes. BatchNorm layers stay in
    eval mode: a support set of a few samples would give poor batch
    statistics. ``network`` itself is left untouched.

    Parameters
    ----------
    network : PrototypicalNetwork
        The meta-learned network.
    support_x : torch.Tensor of shape (S, *sample_shape)
        Support samples.
    support_y : torch.Tensor of shape (S,)
        Their labels in ``0 .. n_classes - 1``.
    n_classes : int
        Number of classes of the task.
    n_steps : int
        Adam steps.
    lr : float
        Adam's learning rate.

    Returns
    -------
    network : PrototypicalNetwork
        The fine-tuned copy, in eval mode. Its weights may be non-finite when
        ``lr`` is too large; the caller decides what to do with that.

    Examples
    --------
    >>> import torch
    >>> from sklearn_meta.nn.prototypes import PrototypicalNetwork, finetune
    >>> network = PrototypicalNetwork(torch.nn.Linear(4, 3), embedding_dim=3)
    >>> tuned = finetune(network, torch.randn(6, 4), torch.tensor([0, 1] * 3), 2,
    ...                  n_steps=2, lr=0.01)
    >>> tuned is network
    False
    """
    network = copy.deepcopy(network)
    network.eval()
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    for _ in range(n_steps):
        optimizer.zero_grad()
        embeddings = network.embed(support_x)
        prototypes = network.class_prototypes(embeddings, support_y, n_classes)
        F.cross_entropy(network.logits(embeddings, prototypes), support_y).backward()
        optimizer.step()
    return network
