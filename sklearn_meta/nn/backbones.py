"""Feature extractors ("backbones") shared by the three meta-learners.

Every backbone maps a batch ``(n, *input_shape)`` to embeddings
``(n, out_features)`` and exposes ``out_features``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

_elementary = threading.local()


@contextlib.contextmanager
def elementary_batch_norm() -> Iterator[None]:
    """In this thread, :class:`TaskBatchNorm2d` computes with elementary operations."""
    previous = getattr(_elementary, "on", False)
    _elementary.on = True
    try:
        yield
    finally:
        _elementary.on = previous


class TaskBatchNorm2d(nn.Module):
    """BatchNorm that never carries statistics from one task to the next.

    In training mode it normalises with the statistics of the batch it sees,
    as MAML's reference implementation does for every task, and it never
    updates running statistics (an in-place update would leak information
    between tasks and is not allowed under ``torch.func.vmap``). In eval mode
    it uses the statistics stored by :func:`calibrate_batch_norm` when there
    are some, so that a transform does not depend on which other samples
    share the batch; before calibration it falls back to batch statistics.

    Inside the ``elementary_batch_norm()`` context the normalisation is written with
    elementary operations: under ``vmap`` the second-order gradient of the
    native ``batch_norm`` kernel was measured wrong in torch 2.13, this form
    is exact.

    Parameters
    ----------
    num_features : int
        Channels of the input.
    eps : float, default=1e-5
        Added to the variance before its square root.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_batch = self.training or not bool(self.calibrated)
        if use_batch and not getattr(_elementary, "on", False):
            return F.batch_norm(
                x, None, None, self.weight, self.bias, training=True, eps=self.eps
            )
        if use_batch:
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            var = (x - mean).square().mean(dim=(0, 2, 3), keepdim=True)
        else:
            mean = self.running_mean.view(1, -1, 1, 1)
            var = self.running_var.view(1, -1, 1, 1)
        scale = self.weight.view(1, -1, 1, 1) * torch.rsqrt(var + self.eps)
        return (x - mean) * scale + self.bias.view(1, -1, 1, 1)


#: The BatchNorm layers :func:`calibrate_batch_norm` knows: ours and torch's.
BATCH_NORMS = (TaskBatchNorm2d, nn.modules.batchnorm._BatchNorm)


def _tracking_layers(module: nn.Module) -> list[nn.Module]:
    """torch BatchNorm layers of ``module`` that keep running statistics."""
    return [
        layer
        for layer in module.modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm)
        and layer.track_running_stats
    ]


@contextlib.contextmanager
def batch_statistics(module: nn.Module) -> Iterator[None]:
    """Inside, every torch BatchNorm layer of ``module`` uses its batch's statistics.

    Their running statistics are set aside (``None``), so a layer normalises
    each task by its own samples in training and evaluation modes alike and
    updates nothing that the next task would see: the behaviour of
    :class:`TaskBatchNorm2d`, which needs no help. The statistics come back
    on exit.

    Parameters
    ----------
    module : torch.nn.Module
        The network whose BatchNorm layers (with ``track_running_stats``)
        use batch statistics inside the context.
    """
    saved = []
    for layer in _tracking_layers(module):
        saved.append(
            (layer, layer.running_mean, layer.running_var, layer.num_batches_tracked)
        )
        layer.running_mean = layer.running_var = layer.num_batches_tracked = None
    try:
        yield
    finally:
        for layer, mean, var, count in saved:
            layer.running_mean, layer.running_var = mean, var
            layer.num_batches_tracked = count


@torch.no_grad()
def calibrate_batch_norm(
    module: nn.Module, x: torch.Tensor, chunk_size: int = 1024
) -> None:
    """Store in every BatchNorm layer of ``module`` the statistics of ``x``.

    One pass over ``x`` in chunks, every BatchNorm layer normalising with the
    chunk's statistics (as in training) and every other layer in eval mode
    (no dropout). Each layer records the pooled mean and variance of its
    inputs over all chunks: with ``x`` in one chunk, exactly what a
    training-mode pass over ``x`` sees. Afterwards, in eval mode,
    :class:`TaskBatchNorm2d` and torch's ``BatchNorm1d/2d/3d`` layers (those
    with ``track_running_stats``) normalise with these statistics, so a
    sample's output no longer depends on the other samples of its batch.

    Parameters
    ----------
    module : torch.nn.Module
        The network whose BatchNorm layers are calibrated.
    x : torch.Tensor
        Inputs of ``module`` whose statistics the layers store.
    chunk_size : int, default=1024
        Samples per forward pass.
    """
    layers = [m for m in module.modules() if isinstance(m, BATCH_NORMS)]
    layers = [
        m for m in layers if isinstance(m, TaskBatchNorm2d) or m.track_running_stats
    ]
    if not layers:
        return
    was_training = {m: m.training for m in module.modules()}
    module.eval()
    for layer in layers:
        layer.train()
    chunks: dict[nn.Module, list] = {layer: [] for layer in layers}

    def record(layer, inputs, _output):
        (inp,) = inputs
        dims = [0, *range(2, inp.dim())]
        var, mean = torch.var_mean(inp.detach(), dim=dims, correction=0)
        count = inp.numel() // inp.shape[1]
        chunks[layer].append((count, mean.double(), var.double()))

    handles = [layer.register_forward_hook(record) for layer in layers]
    try:
        with batch_statistics(module):
            for start in range(0, x.shape[0], chunk_size):
                module(x[start : start + chunk_size])
    finally:
        for handle in handles:
            handle.remove()
        for submodule, training in was_training.items():
            submodule.train(training)
    for layer, statistics in chunks.items():
        counts = torch.tensor(
            [count for count, _, _ in statistics], dtype=torch.float64
        )
        means = torch.stack([mean for _, mean, _ in statistics])
        variances = torch.stack([var for _, _, var in statistics])
        weights = (counts / counts.sum()).to(means.device).unsqueeze(1)
        mean = (weights * means).sum(dim=0)
        # Pooled over chunks: the mean within-chunk variance plus the
        # variance of the chunk means, so one chunk or many give the same.
        var = (weights * (variances + (means - mean).square())).sum(dim=0)
        # The variance the layer normalised with in training (biased), not
        # torch's unbiased running estimate: eval mode then matches training.
        if isinstance(layer, TaskBatchNorm2d):
            layer.calibrated.fill_(True)
        layer.running_mean.copy_(mean.to(layer.running_mean.dtype))
        layer.running_var.copy_(var.to(layer.running_var.dtype))


def inference_forward(
    module: nn.Module, dtype: torch.dtype = torch.float32
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``module``'s forward without grad, computed in ``dtype``.

    float32 runs the module itself. float64 runs it with float64 copies of
    its weights, made once here: in float32 the rounding of a sample's
    output depends on how many samples share its batch (matrix kernels block
    the work by batch size), in float64 that noise is far below float32
    resolution, which bit-level comparisons need.

    Parameters
    ----------
    module : torch.nn.Module
        The network; its own weights are left as they are.
    dtype : torch.dtype, default=torch.float32
        Precision of the forward pass.

    Returns
    -------
    forward : callable
        Maps a batch of inputs to ``module``'s outputs in ``dtype``.
    """
    if dtype == torch.float32:
        parameter = next(module.parameters(), None)
        if parameter is None or parameter.dtype == torch.float32:

            def forward(x: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    return module(x)

            return forward
    params = {name: p.detach().to(dtype) for name, p in module.named_parameters()}
    buffers = {
        name: b.to(dtype) if b.is_floating_point() else b
        for name, b in module.named_buffers()
    }

    def forward_in_dtype(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.func.functional_call(module, (params, buffers), (x.to(dtype),))

    return forward_in_dtype


class MLP(nn.Module):
    """Fully connected network for tabular rows: ``Linear -> ReLU`` blocks.

    The last layer is linear, so the embedding is not clipped at zero.

    Parameters
    ----------
    in_features : int
        Width of an input row (a sample is flattened to it).
    hidden_layer_sizes : sequence of int, default=(128, 128)
        Width of each hidden ``Linear -> ReLU`` block.
    out_features : int, default=64
        Width of the embedding.
    """

    def __init__(
        self,
        in_features: int,
        hidden_layer_sizes: Sequence[int] = (128, 128),
        out_features: int = 64,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_layer_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, out_features))
        self.layers = nn.Sequential(*layers)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


class Conv4(nn.Module):
    """The standard few-shot backbone: 4 x [3x3 conv, BatchNorm, ReLU, 2x2 pool].

    Parameters
    ----------
    input_shape : tuple of int
        ``(channels, height, width)`` of one image. Flat rows are reshaped.
    hidden_channels : int, default=64
        Channels of every convolution.
    out_features : int or None, default=None
        When given and different from the flattened feature map, a linear
        layer projects to it.
    downsample : {"max_pool", "stride"}, default="max_pool"
        ``"max_pool"`` is the layout of the MAML and prototypical-network
        papers; ``"stride"`` uses stride-2 convolutions instead of pooling
        (learn2learn's ``OmniglotCNN``), about four times cheaper.
    n_blocks : int, default=4
        Number of convolution blocks.

    Attributes
    ----------
    fused : bool
        Whether :meth:`fused_forward` may use the fused
        first block (True); False runs the native layers, to compare.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden_channels: int = 64,
        out_features: int | None = None,
        downsample: str = "max_pool",
        n_blocks: int = 4,
    ) -> None:
        super().__init__()
        if downsample not in ("max_pool", "stride"):
            raise ValueError(
                f"downsample must be 'max_pool' or 'stride', got {downsample!r}"
            )
        self.input_shape = tuple(int(s) for s in input_shape)
        self.channels_last = False
        self.fused = True
        channels, height, width = self.input_shape
        blocks: list[nn.Module] = []
        for _ in range(n_blocks):
            stride = 2 if downsample == "stride" else 1
            block = [
                nn.Conv2d(channels, hidden_channels, 3, stride=stride, padding=1),
                TaskBatchNorm2d(hidden_channels),
                nn.ReLU(),
            ]
            if downsample == "max_pool":
                if height < 2 or width < 2:
                    raise ValueError(
                        f"images of {self.input_shape[1]}x{self.input_shape[2]} "
                        f"pixels are too small for {n_blocks} max-pooling blocks "
                        f"(at least {2**n_blocks}x{2**n_blocks} needed); use "
                        "backbone='conv4_strided' or larger images"
                    )
                block.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            else:
                height, width = (height + 1) // 2, (width + 1) // 2
            blocks.append(nn.Sequential(*block))
            channels = hidden_channels
        self.blocks = nn.Sequential(*blocks)
        flat = hidden_channels * max(height, 1) * max(width, 1)
        if out_features is None or out_features == flat:
            self.projection = None
            self.out_features = flat
        else:
            self.projection = nn.Linear(flat, out_features)
            self.out_features = out_features

    def to_channels_last(self) -> Conv4:
        """Store weights and run convolutions in the channels-last memory layout.

        The numbers are the same up to rounding. The prototypical network
        trains faster this way on a CPU; MAML's functional passes do not, and
        GPUs keep the default layout (docs/concepts.md, Memory layout).
        """
        self.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def fused_forward(
        self, params: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor | None:
        """``self(x)`` with ``params``, the first block fused where it applies.

        On a CPU, for the max-pool layout normalising with batch statistics
        and images of at most three channels, the first block is one fused
        autograd node (``nn/_fused_conv4.py``): fewer full-resolution passes
        and a much smaller graph than the native layers; twice
        differentiable, also inside :func:`torch.func.grad`. MAML calls this
        for every pass.

        Parameters
        ----------
        params : dict of str to torch.Tensor
            Tensors in place of the module's parameters, keyed as in
            ``named_parameters()``.
        x : torch.Tensor of shape (n, \\*input_shape)
            Images, or flat rows of their values.

        Returns
        -------
        features : torch.Tensor of shape (n, out_features) or None
            The embedding, or None where the fused block does not apply
            (other layouts, more than three channels, calibrated statistics
            in eval mode, under ``vmap``, or ``fused`` set to False): then
            run the module itself.
        """
        from . import _fused_conv4

        if not self.fused or getattr(_elementary, "on", False):
            return None
        if not _fused_conv4.can_fuse(self, x):
            return None
        return _fused_conv4.fused_forward(self, params, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.input_shape)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.blocks(x).flatten(1)
        if self.projection is not None:
            features = self.projection(features)
        return features


#: Largest image side for which ``make_backbone("auto", ...)`` picks the
#: stride-2 Conv4.
SMALL_IMAGE_SIZE = 32


def make_backbone(
    kind: str | nn.Module,
    input_shape: Sequence[int],
    hidden_layer_sizes: Sequence[int] = (128, 128),
    embedding_dim: int = 64,
) -> nn.Module:
    """Build the backbone named by ``kind`` for inputs of ``input_shape``.

    ``kind`` is ``"mlp"``, ``"conv4"`` (max-pooling Conv4 with
    ``embedding_dim`` channels), ``"conv4_strided"`` (stride-2 Conv4),
    ``"auto"`` or an ``nn.Module`` used as it is. ``input_shape`` is
    ``(n_features,)`` for rows and ``(C, H, W)`` for images.

    Parameters
    ----------
    kind : {"auto", "mlp", "conv4", "conv4_strided"} or torch.nn.Module
        The backbone to build, or one to return as it is. ``"auto"`` is
        ``"mlp"`` for rows, ``"conv4_strided"`` for images of at most
        ``SMALL_IMAGE_SIZE`` pixels a side (a fraction of the max-pool one's
        cost there, the choice of MAML's paper for Omniglot) and ``"conv4"``
        for larger ones.
    input_shape : sequence of int
        Shape of one sample: ``(n_features,)`` or ``(C, H, W)``.
    hidden_layer_sizes : sequence of int, default=(128, 128)
        Hidden widths of the ``"mlp"`` backbone.
    embedding_dim : int, default=64
        Width of the embedding (and channels of the Conv4 backbones).

    Returns
    -------
    backbone : torch.nn.Module
        The network, untrained.
    """
    if isinstance(kind, nn.Module):
        return kind
    input_shape = tuple(int(s) for s in input_shape)
    if kind == "auto":
        if len(input_shape) != 3:
            kind = "mlp"
        elif max(input_shape[1:]) <= SMALL_IMAGE_SIZE:
            kind = "conv4_strided"
        else:
            kind = "conv4"
    if kind == "mlp":
        n_features = 1
        for size in input_shape:
            n_features *= size
        return MLP(n_features, tuple(hidden_layer_sizes), embedding_dim)
    if kind in ("conv4", "conv4_strided"):
        if len(input_shape) != 3:
            raise ValueError(
                f"backbone={kind!r} needs images: pass X as (n, C, H, W) or set "
                f"input_shape=(C, H, W); got samples of shape {input_shape}"
            )
        downsample = "stride" if kind == "conv4_strided" else "max_pool"
        return Conv4(
            input_shape,
            hidden_channels=embedding_dim,
            out_features=embedding_dim,
            downsample=downsample,
        )
    raise ValueError(
        f"backbone must be 'auto', 'mlp', 'conv4', 'conv4_strided' or a "
        f"torch.nn.Module, got {kind!r}"
    )


def embed_episodes(
    embed, support_x: torch.Tensor, query_x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``embed`` of every support and query sample of a meta-batch in one
    pass, split back into ``(n_tasks, n_support, -1)`` and
    ``(n_tasks, n_query, -1)``."""
    n_tasks, n_support = support_x.shape[:2]
    features = embed(torch.cat([support_x.flatten(0, 1), query_x.flatten(0, 1)]))
    return (
        features[: n_tasks * n_support].view(n_tasks, n_support, -1),
        features[n_tasks * n_support :].view(n_tasks, query_x.shape[1], -1),
    )


def embedding_size(backbone: nn.Module, input_shape: Sequence[int]) -> int:
    """Width of the embedding that ``backbone`` gives for one sample.

    Parameters
    ----------
    backbone : torch.nn.Module
        The network; its ``out_features`` when it has one, otherwise measured
        on a forward pass of zeros.
    input_shape : sequence of int
        Shape of one sample.

    Returns
    -------
    n_features : int
        Width of the flattened output of one sample.
    """
    size = getattr(backbone, "out_features", None)
    if isinstance(size, int):
        return size
    parameter = next(backbone.parameters(), None)
    device = parameter.device if parameter is not None else "cpu"
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(2, *input_shape, device=device))
    backbone.train(was_training)
    return int(out.reshape(2, -1).shape[1])
