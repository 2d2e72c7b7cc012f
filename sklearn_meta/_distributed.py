"""Data-parallel meta-training across the processes that ``torchrun`` starts.

With ``distributed=True`` an estimator's ``fit`` trains as one of
``WORLD_SIZE`` processes: every process draws the episode stream a
one-process run would draw and keeps its share (episode ``i`` goes to rank
``i mod WORLD_SIZE``), computes the gradients of its share, and the
gradients and the loss are averaged across processes before anything else
sees them. Every process then takes the same optimiser step, so with
``meta_batch_size=B`` one outer step sees ``WORLD_SIZE * B`` episodes.

The averaging happens in the net's training step, right after the module's
backward pass and before skorch notifies ``on_grad_computed``: callbacks
(LEO's gradient-norm clipping, a user's) run in the order they were given,
so at ``on_grad_computed`` a callback could see the gradients before the
averaging; in the training step nothing can. The loss is averaged in the
same all-reduce, so the history and the non-finite-loss check see the loss
of the whole meta-batch, identically on every process.

Every collective of a fit carries a status slot per process. A process that
leaves training (the last epoch, early stopping, an interrupt, an error)
sends one last all-reduce of the same shape saying so; the others receive it
in place of their next step's and stop too (with an error if it stopped with
one), so no process waits for one that has gone.
"""

from __future__ import annotations

import atexit
import datetime
import os
import zlib

import numpy as np
import torch
import torch.distributed as dist
from skorch.callbacks import Checkpoint, TrainEndCheckpoint
from skorch.callbacks import logging as skorch_logging

#: How long a process waits for the others at any collective (process group
#: set-up included) before failing; torch's default is 30 minutes.
TIMEOUT = datetime.timedelta(seconds=120)

#: What torchrun sets in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

#: Rows of ``X`` that the start-up check compares (evenly spaced): reading all
#: of a large memory-mapped dataset only to compare it would cost more than
#: a short fit.
N_FINGERPRINT_ROWS = 4096

# Status of a process in the tail of every all-reduce.
_TRAINING, _LEFT, _FAILED = 0.0, 1.0, 2.0

#: Callbacks that print, log or save: only rank 0 keeps them.
_RANK_ZERO_CALLBACKS = (
    Checkpoint,
    TrainEndCheckpoint,
    *(
        getattr(skorch_logging, name)
        for name in (
            "PrintLog",
            "ProgressBar",
            "TensorBoard",
            "WandbLogger",
            "NeptuneLogger",
            "SacredLogger",
            "MlflowLogger",
        )
    ),
)


def process_device(device: torch.device) -> torch.device:
    """The device this process trains on, after checking it was started by torchrun.

    On CUDA a device without an index becomes the process's own GPU,
    ``cuda:LOCAL_RANK``, so ``torchrun --nproc_per_node=N`` uses N GPUs.
    """
    if not dist.is_available():
        raise ValueError(
            "distributed=True needs torch.distributed, which this build of torch "
            "lacks; pass distributed=False"
        )
    if not dist.is_initialized():
        missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
        if missing:
            raise ValueError(
                f"distributed=True trains as one of several processes started by "
                f"torchrun, but {', '.join(missing)} is not set: launch the script "
                f"with `torchrun --nproc_per_node=N script.py`, or pass "
                f"distributed=False"
            )
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def fingerprint(X: np.ndarray, targets: np.ndarray, groups, seed: int) -> tuple:
    """Checksums of the data and the seed that every process must agree on."""
    rows = np.unique(np.linspace(0, len(X) - 1, min(len(X), N_FINGERPRINT_ROWS)))
    data = zlib.crc32(np.asarray(X.shape).tobytes())
    data = zlib.crc32(np.ascontiguousarray(X[rows.astype(np.intp)]).tobytes(), data)
    data = zlib.crc32(np.ascontiguousarray(targets).tobytes(), data)
    if groups is not None:
        codes = np.unique(groups, return_inverse=True)[1]
        data = zlib.crc32(codes.astype(np.int64).tobytes(), data)
    return data, seed


def _state_checksum(module: torch.nn.Module) -> int:
    checksum = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        checksum = zlib.crc32(raw.numpy().tobytes(), checksum)
    return checksum


def _join_process_group(device: torch.device) -> None:
    """Join the default process group, unless this process already has.

    The group is kept for the process's later fits and left at exit: gloo
    cannot join a second group through the store torchrun's agent keeps.
    """
    if dist.is_initialized():
        return
    options = {"timeout": TIMEOUT}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        options.update(backend="nccl", device_id=device)
    else:
        options.update(backend="gloo")
    try:
        dist.init_process_group(**options)
    except (RuntimeError, ValueError) as error:
        raise RuntimeError(
            f"distributed=True could not reach the other processes at "
            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} within "
            f"{TIMEOUT.total_seconds():.0f} s ({error}); check that all "
            f"{os.environ.get('WORLD_SIZE')} processes were started"
        ) from error
    atexit.register(_leave_process_group)


def _leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def episodes_per_process(n_episodes: int) -> int:
    """Episodes of an epoch each process trains on: whole rounds of one each
    (before the process group exists, torchrun's ``WORLD_SIZE`` says how many)."""
    if dist.is_initialized():
        world_size = dist.get_world_size()
    else:
        world_size = int(os.environ.get("WORLD_SIZE", 1))
    return n_episodes // max(1, world_size)


def _without_rank_zero_callbacks(callbacks: list) -> list:
    """``callbacks`` (skorch's forms: instances, classes, named pairs) less those that print or save."""
    kept = []
    for item in callbacks:
        callback = item[1] if isinstance(item, tuple | list) else item
        kind = callback if isinstance(callback, type) else type(callback)
        if not issubclass(kind, _RANK_ZERO_CALLBACKS):
            kept.append(item)
    return kept


class PeerLostError(RuntimeError):
    """Another process of a distributed fit stopped answering."""


class _Group:
    """The collectives of one distributed fit; remembers when training has ended."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.done = False

    def _call(self, what: str, collective, *args, **kwargs):
        try:
            return collective(*args, **kwargs)
        except RuntimeError as error:
            self.done = True
            raise PeerLostError(
                f"process {self.rank} of {self.world_size} lost the other processes "
                f"of the distributed fit while {what}: one of them stopped or hung "
                f"(waited at most {TIMEOUT.total_seconds():.0f} s); its own output "
                f"says why. ({error})"
            ) from error

    def check_same_start(self, module: torch.nn.Module, fingerprint: tuple) -> None:
        """Raise ``ValueError`` on every process unless all start alike."""
        values = torch.tensor(
            [_state_checksum(module), *fingerprint],
            dtype=torch.float64,
            device=self.device,
        )
        extremes = torch.cat([values, -values])
        self._call(
            "checking that all start alike",
            dist.all_reduce,
            extremes,
            dist.ReduceOp.MAX,
        )
        differ = (extremes[: len(values)] != -extremes[len(values) :]).tolist()
        if any(differ):
            what = [
                name
                for name, different in zip(
                    ("initial parameters", "training data", "random_state"),
                    differ,
                    strict=True,
                )
                if different
            ]
            raise ValueError(
                f"the {self.world_size} processes of the distributed fit start with "
                f"different {' and '.join(what)}: give every process the same data "
                "and the same integer random_state"
            )

    def average(self, parameters: list, loss: torch.Tensor, status: float = _TRAINING):
        """All-reduce the gradients (in place) and the loss; stop if a process left.

        Returns the mean loss. Raises ``KeyboardInterrupt`` (which ends
        skorch's training loop quietly) when another process has left
        training, and ``RuntimeError`` when one failed.
        """
        first = parameters[0]
        gradients = [
            torch.zeros_like(p) if p.grad is None or status != _TRAINING else p.grad
            for p in parameters
        ]
        tail = torch.zeros(1 + self.world_size, dtype=first.dtype, device=first.device)
        tail[0] = loss.detach()
        tail[1 + self.rank] = status
        flat = torch.cat([*(g.reshape(-1).to(first.dtype) for g in gradients), tail])
        self._call("averaging gradients", dist.all_reduce, flat)
        flat /= self.world_size
        statuses = (flat[-self.world_size :] * self.world_size).round().tolist()
        if any(statuses):
            self.done = True
            failed = [rank for rank, s in enumerate(statuses) if s == _FAILED]
            if failed and status != _FAILED:
                raise RuntimeError(
                    f"meta-training stopped with an error on process(es) {failed} of "
                    f"the distributed fit; their own output says why"
                )
            if status == _TRAINING:
                raise KeyboardInterrupt
            return flat[-self.world_size - 1]
        offset = 0
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            size = parameter.numel()
            parameter.grad.copy_(flat[offset : offset + size].view_as(parameter))
            offset += size
        return flat[offset]

    def leave(self, parameters: list, failed: bool) -> None:
        """Tell the others this process stops training (unless all know already)."""
        if not self.done:
            loss = torch.zeros(
                (), dtype=parameters[0].dtype, device=parameters[0].device
            )
            self.average(parameters, loss, _FAILED if failed else _LEFT)

    def broadcast_state(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every process."""
        for tensor in [*module.parameters(), *module.buffers()]:
            self._call("sharing the final parameters", dist.broadcast, tensor.data, 0)


class DataParallel:
    """Mixin for a skorch net: train as one of the processes started by torchrun.

    ``fingerprint`` (set after construction) holds the checksums of the data
    and seed; the start-up check compares them, and the initial parameters,
    across processes.
    """

    fingerprint: tuple = ()
    _group: _Group | None = None

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        if not self.initialized_:
            self.initialize()
        _join_process_group(torch.device(self.device))
        group = _Group(torch.device(self.device))
        if group.rank != 0:
            self.verbose = 0
            # Same episodes split by rank, but each process its own random
            # draws (dropout, LEO's sampling, augmentation) for its share.
            torch.manual_seed((torch.initial_seed() + group.rank) % 2**63)
        self._group = group
        try:
            super().partial_fit(X, y, classes, **fit_params)
            group.broadcast_state(self.module_)
        finally:
            self._group = None
        return self

    def get_default_callbacks(self):
        defaults = super().get_default_callbacks()
        return defaults if _rank() == 0 else _without_rank_zero_callbacks(defaults)

    def initialize_callbacks(self):
        if _rank() != 0:
            # Before skorch initialises them: a checkpoint makes its folder then.
            self.callbacks = _without_rank_zero_callbacks(self.callbacks or [])
        super().initialize_callbacks()
        for _, callback in self.callbacks_:
            if isinstance(callback, skorch_logging.ProgressBar):
                # Its count is a one-process run's; a share has fewer batches.
                callback.batches_per_epoch = "auto"
        return self

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        group = self._group
        parameters = self._trained_parameters()
        group.check_same_start(self.module_, self.fingerprint)
        try:
            if len(X) < group.world_size:
                raise ValueError(
                    f"episodes_per_epoch={len(X)} leaves some of the "
                    f"{group.world_size} processes without an episode; raise "
                    "episodes_per_epoch"
                )
            super().fit_loop(X, y, epochs, **fit_params)
        except BaseException as error:
            if not isinstance(error, PeerLostError):
                group.leave(parameters, failed=not isinstance(error, KeyboardInterrupt))
            raise
        group.leave(parameters, failed=False)
        return self

    def _trained_parameters(self) -> list:
        return [p for _, p in self.get_all_learnable_params() if p.requires_grad]

    def get_iterator(self, dataset, training=False):
        iterator = super().get_iterator(dataset, training)
        group = self._group
        if training and group is not None:
            # Episode i to rank i mod N, over a whole number of rounds, so
            # every process has as many steps as the others.
            end = episodes_per_process(len(dataset)) * group.world_size
            iterator.shard = slice(group.rank, end, group.world_size)
        return iterator

    def train_step_single(self, batch, **fit_params):
        step = super().train_step_single(batch, **fit_params)
        if self._group is not None:
            parameters = self._trained_parameters()
            step["loss"] = self._group.average(parameters, step["loss"])
        return step
