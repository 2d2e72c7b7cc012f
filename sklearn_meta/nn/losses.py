"""Losses over a meta-batch of episodes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EpisodeLoss(nn.Module):
    """Mean query loss over all tasks of a meta-batch.

    Predictions have shape ``(n_tasks, n_query, n_classes)`` (cross-entropy
    against class ids) or ``(n_tasks, n_query)`` (mean squared error).
    """

    def __init__(self, regression: bool = False) -> None:
        super().__init__()
        self.regression = regression

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return F.mse_loss(predictions, targets.to(predictions.dtype))
        return F.cross_entropy(
            predictions.reshape(-1, predictions.shape[-1]), targets.reshape(-1)
        )


def episode_scores(
    predictions: torch.Tensor, targets: torch.Tensor, regression: bool = False
) -> torch.Tensor:
    """Per-task score: query accuracy, or negative mean squared error."""
    if regression:
        return -(predictions - targets).square().mean(dim=1)
    return (predictions.argmax(dim=-1) == targets).float().mean(dim=1)
