"""The skorch net that meta-trains, its data loader and callbacks.

A dataset item is an episode and a batch a meta-batch: :class:`EpisodeLoader`
gathers the samples of each meta-batch from the pool and converts them on
the device, and :class:`MetaNet`'s training step calls the module's own
meta-gradient (MAML) or penalty (LEO) where it has one, so that skorch's
loop and callbacks carry the outer update unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback
from skorch.dataset import unpack_data
from skorch.utils import to_tensor

from ._data import Samples
from ._distributed import DataParallel
from .nn.losses import episode_scores
from .tasks import Episodes


class EpisodeDataset(torch.utils.data.Dataset):
    """Episodes over some rows of a sample pool: one item is one episode.

    ``rows`` are the pool's rows the sampler's indices refer to. With
    ``fixed=True`` the episodes are drawn once (validation episodes that stay
    the same every epoch); otherwise each epoch draws new ones.
    """

    def __init__(
        self,
        samples: Samples,
        rows: np.ndarray,
        sampler,
        n_episodes: int,
        fixed: bool,
        device: torch.device,
    ) -> None:
        self.samples = samples
        self.rows = rows
        self.sampler = sampler
        self.n_episodes = n_episodes
        self.device = device
        self.fixed_episodes = sampler.sample(n_episodes) if fixed else None

    def __len__(self) -> int:
        return self.n_episodes

    def epoch_episodes(self) -> Episodes:
        if self.fixed_episodes is not None:
            return self.fixed_episodes
        return self.sampler.sample(self.n_episodes)

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """Float samples of the episodes' ``index``, converted for this batch only."""
        return self.samples.take(self.rows[index.numpy()], self.device)


class EpisodeLoader:
    """skorch iterator over an :class:`EpisodeDataset`: yields meta-batches.

    Each batch is ``({"support_x", "support_y", "query_x"}, query_y)`` with
    samples shaped ``(meta_batch, n, *sample_shape)``, gathered from the pool
    and converted to float32 on the device one meta-batch at a time.
    ``augment``, when given, maps a batch of samples shaped
    ``(n, *sample_shape)`` to new ones of the same shape and is applied to
    the support and query samples of every batch. ``shard`` picks the
    episodes of an epoch this process trains on (a distributed fit's share).
    """

    shard = slice(None)

    def __init__(
        self,
        dataset: EpisodeDataset,
        batch_size: int,
        augment: Callable | None = None,
        sample_shape: tuple | None = None,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.augment = augment
        self.sample_shape = sample_shape

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self):
        episodes = self.dataset.epoch_episodes()[self.shard]
        device = self.dataset.device
        for start in range(0, len(episodes), self.batch_size):
            batch = episodes[start : start + self.batch_size]
            inputs = {
                "support_x": self.dataset.take(batch.support_index),
                "support_y": batch.support_target.to(device),
                "query_x": self.dataset.take(batch.query_index),
            }
            if self.augment is not None:
                for key in ("support_x", "query_x"):
                    inputs[key] = augment_samples(
                        self.augment, inputs[key], self.sample_shape
                    )
            yield inputs, batch.query_target.to(device)


@torch.no_grad()
def augment_samples(augment: Callable, x: torch.Tensor, sample_shape) -> torch.Tensor:
    """``augment`` applied to samples ``(..., n_features)`` seen as ``(n, *sample_shape)``."""
    samples = x.reshape(-1, *sample_shape)
    augmented = augment(samples)
    if not isinstance(augmented, torch.Tensor):
        raise ValueError(
            f"augment must return a torch.Tensor, got {type(augmented).__name__}; "
            "it receives a tensor: use torch operations, or convert the result "
            "with torch.as_tensor"
        )
    if augmented.shape != samples.shape:
        shape = getattr(augmented, "shape", type(augmented).__name__)
        raise ValueError(
            f"augment must return a tensor shaped like its input {tuple(samples.shape)}, "
            f"got {tuple(shape) if isinstance(shape, torch.Size) else shape}; pass a "
            "callable that maps a batch of samples to a batch of the same shape"
        )
    return augmented.to(x.dtype).reshape(x.shape)


class MetaNet(NeuralNet):
    """skorch net whose training step adds the module's penalty, if it has one.

    A module with a ``meta_backward`` method (MAML's core) computes its
    training step's gradients itself: it can back-propagate task by task,
    which a single ``loss.backward()`` over the meta-batch cannot. A module
    with a penalty (LEO's) offers ``forward_with_penalty(**inputs) ->
    (predictions, penalty)``, which the training step calls instead of
    ``forward`` and whose penalty it adds to the loss; ``forward`` stays
    penalty-free, so evaluation and skorch's scoring see predictions only.
    """

    def train_step_single(self, batch, **fit_params):
        meta_backward = getattr(self.module_, "meta_backward", None)
        forward_with_penalty = getattr(self.module_, "forward_with_penalty", None)
        if fit_params or (meta_backward is None and forward_with_penalty is None):
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        inputs, targets = unpack_data(batch)
        inputs = to_tensor(inputs, device=self.device)
        targets = to_tensor(targets, device=self.device)
        if meta_backward is not None:
            loss, predictions = meta_backward(
                **inputs, query_y=targets, loss_fn=self.criterion_
            )
            return {"loss": loss, "y_pred": predictions}
        predictions, penalty = forward_with_penalty(**inputs)
        loss = self.get_loss(predictions, targets, X=inputs, training=True) + penalty
        loss.backward()
        return {"loss": loss, "y_pred": predictions}


class DataParallelMetaNet(DataParallel, MetaNet):
    """A :class:`MetaNet` trained as one of the processes torchrun started."""


class StopOnNonFiniteLoss(Callback):
    """Stop meta-training with a clear error as soon as the loss is not finite."""

    def __init__(self, hint: str) -> None:
        self.hint = hint

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        loss = kwargs.get("loss")
        if loss is not None and not torch.isfinite(loss).all():
            epoch = len(net.history)
            raise ValueError(
                f"meta-training diverged: the loss became {loss.item()} in epoch "
                f"{epoch}; {self.hint}"
            )


def _score_cached_episodes(net, X, y, regression: bool) -> float:
    """``EpochScoring``'s scorer over the cached query predictions of an epoch.

    A module-level function (bound with ``functools.partial``), so that a
    net fitted with validation episodes can be pickled.
    """
    predictions = net.forward(X)
    targets = torch.as_tensor(y, device=predictions.device)
    return episode_scores(predictions, targets, regression).mean().item()
