"""Functional MAML core: MAML, first-order MAML, ANIL, Meta-SGD and Reptile.

One :class:`MAML` module holds the meta-learned initialisation (a backbone
``body`` and a linear ``head``) and runs the inner loop functionally, with
:func:`torch.func.functional_call`, so the module's own parameters stay the
initialisation. Its ``forward`` adapts every task of a meta-batch on its
support set and returns the query predictions; the gradient of a loss on
those predictions is the exact meta-gradient, so a plain
``loss.backward(); optimizer.step()`` is MAML's outer update.

How the tasks of a meta-batch are run (``strategy``):

``"loop"``
    One task after the other, as the reference implementations do.
``"shared"``
    The first inner step of every task starts from the same weights, so all
    support sets go through the network as one batch (with per-task
    BatchNorm statistics, under :func:`torch.func.vmap` with the parameters
    shared); the later steps and the query passes run task by task.
``"vmap"``
    Everything vectorised over tasks with :func:`torch.func.vmap`.
``"auto"``
    ``"vmap"`` on CUDA (a per-task loop leaves a GPU idle), ``"shared"`` on
    a CPU, where a vmap over tasks was measured 1.5x to 2.3x slower than a
    loop and sharing the first step a few percent faster than a plain loop
    (``benchmarks/speed_maml.py``). Bodies made of other layers than
    torch.nn's and this package's run the ``"loop"``, which needs nothing of
    them.

On a CPU most of the time goes to the query passes (75 query images against
5 support images per task in 5-way 1-shot): with a Conv4 body they run
through fused blocks (see ``fused``). A training step that calls
:meth:`MAML.meta_backward` instead of ``forward`` and ``backward`` also
back-propagates task by task (the memory of a per-task loop) and, on a CPU
with several torch threads, runs the tasks side by side, one per thread.

Every strategy computes the same numbers up to rounding; the tests check
each against a plain per-task ``torch.autograd.grad(create_graph=True)``
reference. ANIL's body runs once per task whatever the number of inner
steps: on a GPU (and on a CPU without fused blocks, under ``"shared"`` or
``"vmap"``) as one batched call for all tasks of the meta-batch, on a CPU
with fused blocks task by task, which measured faster there.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

from .backbones import Conv4, TaskBatchNorm2d
from .task_parallel import map_tasks, task_workers

__all__ = ["MAML"]

Params = dict[str, torch.Tensor]

_HEAD_NAMES = ("head.weight", "head.bias")
_STRATEGIES = ("auto", "loop", "shared", "vmap")


# functional_call swaps a module's parameters in place for the duration of
# the call, so two threads must not run it on the same module: a worker
# thread of MAML.meta_backward runs it on its own shallow replica of the body.
_thread_bodies = threading.local()


def _shallow_replica(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s structure that shares its parameters and buffers."""
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo=shared)


def _check_option(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        options = ", ".join(repr(option) for option in allowed)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")


def _lr_key(name: str) -> str:
    # ParameterDict keys may not contain dots; module names never contain "-".
    return name.replace(".", "-")


@contextlib.contextmanager
def _elementary_batch_norm(module: nn.Module) -> Iterator[None]:
    """Switch :class:`TaskBatchNorm2d` layers to elementary operations for a while.

    Under ``vmap`` the second-order gradient of the native ``batch_norm``
    kernel was measured wrong (torch 2.13); the elementary form is exact.
    """
    layers = [m for m in module.modules() if isinstance(m, TaskBatchNorm2d)]
    previous = [layer.elementary for layer in layers]
    for layer in layers:
        layer.elementary = True
    try:
        yield
    finally:
        for layer, flag in zip(layers, previous, strict=True):
            layer.elementary = flag


def _has_running_statistics(module: nn.Module) -> bool:
    """Whether ``module`` holds BatchNorm layers that update running statistics.

    Such layers write to their buffers in training mode, which ``vmap``
    forbids, so only the ``"loop"`` strategy can run them.
    """
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for m in module.modules()
    )


def _vmap_friendly(module: nn.Module) -> bool:
    """Whether every layer of ``module`` comes from torch.nn or this package.

    Those are known to run under ``vmap``; a user's own layer might not (in-
    place buffer updates, data-dependent control flow).
    """
    return all(
        type(m).__module__.startswith(("torch.nn.", "sklearn_meta.nn."))
        for m in module.modules()
    )


def _mixes_samples(module: nn.Module) -> bool:
    """Whether an output of ``module`` depends on the other samples of its batch.

    Only batch-statistics normalisation does among the standard layers; a
    body without it can run the samples of all tasks as one flat batch.
    """
    return any(
        isinstance(m, (TaskBatchNorm2d, nn.modules.batchnorm._BatchNorm))
        for m in module.modules()
    )


# ----------------------------------------------------------------------
# Fused Conv4 block for the passes that are differentiated only once
#
# Second-order MAML differentiates the support passes twice, but the query
# passes (and, in first order, everything) only once. For those, one
# autograd node per Conv4 block (3x3 convolution, batch-statistics
# BatchNorm, ReLU, 2x2 max-pool) computes the same numbers with far fewer
# full-resolution passes, measured on a CPU where they dominate:
#
# - channels-last layout: the native NCHW max-pool was the costliest
#   element-wise kernel of the reference (about 15x slower than in
#   channels-last);
# - the pool is taken on the convolution output: BatchNorm is a per-channel
#   affine map and ReLU is monotone, so they commute with the max (a channel
#   with a negative scale pools the minimum instead) and then run on a
#   quarter of the elements; ties go to the same element as in max_pool2d;
# - the backward pass is written out: BatchNorm's input gradient is an affine
#   map of z plus the pooled gradient routed to the winners;
# - with very few input channels (grey images) the convolution is a matrix
#   product over patches (oneDNN's weight gradient was 7x slower there) and
#   no full-resolution tensor of all images is made (``_GreyConvBlock``).
#
# The grey first block also serves the support passes of second-order MAML
# (``_TwiceDifferentiableGreyBlock``): there its gradient is a node of its
# own whose backward recomputes the block, so the inner loop stops keeping
# the block's full-resolution tensors for the outer backward.

_CHANNELS_LAST = torch.channels_last


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A channels-last ``(n, c, h, w)`` tensor as ``(n * h * w, c)`` rows (a view)."""
    n, c, h, w = t.shape
    return t.permute(0, 2, 3, 1).reshape(n * h * w, c)


def _from_rows(rows: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_rows`: a channels-last ``(n, c, h, w)`` view."""
    return rows.reshape(n, h, w, -1).permute(0, 3, 1, 2)


def _patches(x: torch.Tensor) -> torch.Tensor:
    """3x3 patches (padding 1) of ``x`` as rows ``(n * h * w, c * 9)``."""
    n, c, h, w = x.shape
    patches = F.pad(x, (1, 1, 1, 1)).unfold(2, 3, 1).unfold(3, 3, 1)
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(n * h * w, c * 9)


def _few_channels(x: torch.Tensor) -> bool:
    return x.shape[1] * 9 <= 32


def _conv_backward(grad, x, weight, mask):
    return torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask
    )


def _pool(
    centred: torch.Tensor, scale: torch.Tensor, shape: tuple[int, int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The values of ``centred`` (rows per group) that win the 2x2 max-pool of
    ``scale * centred``, as rows per group, and their max-pool indices."""
    n, c, h, w = shape
    groups = centred.shape[0]
    sign = None
    if bool((scale < 0).any()):
        # A negative scale turns the max of the output into a min of z.
        sign = torch.where(scale < 0, -1.0, 1.0).to(centred.dtype)
        centred = centred * sign
    pooled, index = F.max_pool2d(_from_rows(centred, n, h, w), 2, return_indices=True)
    picked = _rows(pooled.contiguous(memory_format=_CHANNELS_LAST))
    picked = picked.view(groups, -1, c)
    if sign is not None:
        picked = picked * sign
    return picked, index


class _ConvBlock(torch.autograd.Function):
    """``max_pool2d(relu(batch_norm(conv2d(x, padding=1))), 2)``, fused.

    The batch is ``groups`` equal blocks of samples (tasks), each normalised
    with its own statistics. Output in channels-last layout. Once
    differentiable.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, eps, groups):
        n, _, h, w = x.shape
        c = weight.shape[0]
        saved_input = x.contiguous(memory_format=_CHANNELS_LAST)
        z = F.conv2d(saved_input, weight, bias, padding=1)
        z = z.contiguous(memory_format=_CHANNELS_LAST)
        rows = _rows(z)
        per_group = rows.view(groups, -1, c)
        count = per_group.shape[1]
        # Column sums as matrix products: much faster than sum(dim=0) here.
        ones = rows.new_ones(groups, 1, count)
        mean = torch.bmm(ones, per_group) / count
        # Everything after works on z - mean, as native BatchNorm does: an
        # affine map of z itself loses float32 digits to cancellation when
        # the mean is large against the spread.
        centred = per_group - mean
        # z itself is not needed any more: its memory takes the squares.
        var = torch.bmm(ones, torch.mul(centred, centred, out=per_group)) / count
        del z, rows, per_group
        invstd = torch.rsqrt(var + eps)
        scale = gamma * invstd
        picked, _ = _pool(centred, scale, (n, c, h, w))
        out = torch.addcmul(beta, picked, scale).relu_()
        ctx.groups, ctx.has_bias = groups, bias is not None
        ctx.z_shape = (n, c, h, w)
        # The pool's winners and indices are recomputed in backward (one cheap
        # pass) rather than kept: a quarter of the graph's memory.
        ctx.save_for_backward(saved_input, weight, bias, centred, out, invstd, scale)
        return _from_rows(out, n, h // 2, w // 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        saved_input, weight, bias, centred, out, invstd, scale = ctx.saved_tensors
        picked, index = _pool(centred, scale, ctx.z_shape)
        grad, k0, k1, *affine_grads = _batch_norm_backward_terms(
            grad_out, out, picked, centred.shape[1], invstd, scale
        )
        grad_z = _grad_z(grad, scale, centred, k0, k1, index, ctx.z_shape)
        needs = ctx.needs_input_grad
        grad_x, grad_weight, _ = _conv_backward(
            grad_z, saved_input, weight, [needs[0], needs[1], False]
        )
        grad_bias = None
        if ctx.has_bias and needs[2]:
            rows = _rows(grad_z)
            grad_bias = (rows.new_ones(1, rows.shape[0]) @ rows).view(-1)
        return (grad_x, grad_weight, grad_bias, *affine_grads, None, None)


class _GreyConvBlock(torch.autograd.Function):
    """:class:`_ConvBlock` on an input of very few channels (grey images)
    that needs no gradient: the first block of a Conv4.

    Its full-resolution tensors were the largest of a task's graph, so none
    is made for all images at once. The convolution is a product of 3x3
    patches (9 columns) with the weights, so BatchNorm's mean and variance
    follow from the patches' mean and covariance; then z - mean is made,
    pooled and dropped a chunk of images at a time, in backward again
    (oneDNN's weight gradient was also 7x slower than this product there).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, eps, groups):
        out, saved = _grey_block_forward(x, weight, gamma, beta, eps, groups)
        ctx.has_bias = bias is not None
        ctx.z_shape = (x.shape[0], weight.shape[0], *x.shape[2:])
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        grad_weight, grad_bias, grad_gamma, grad_beta = _grey_block_gradients(
            grad_out, ctx.saved_tensors, ctx.z_shape, ctx.has_bias
        )
        needs = ctx.needs_input_grad
        return (
            None,
            grad_weight if needs[1] else None,
            grad_bias if needs[2] else None,
            grad_gamma,
            grad_beta,
            None,
            None,
        )


def _grey_block_forward(x, weight, gamma, beta, eps, groups):
    """:class:`_GreyConvBlock`'s output and the tensors its backward needs.

    The convolution's bias does not enter: BatchNorm subtracts it again.
    """
    n, _, h, w = x.shape
    c = weight.shape[0]
    patches = _patches(x).view(groups, -1, x.shape[1] * 9)
    count = patches.shape[1]
    ones = patches.new_ones(groups, 1, count)
    centred_patches = patches - torch.bmm(ones, patches) / count
    del patches
    covariance = torch.bmm(centred_patches.transpose(1, 2), centred_patches)
    flat_weight = weight.reshape(c, -1)
    # Each channel's variance is w' Cov w.
    var = ((flat_weight @ covariance) * flat_weight).sum(-1).unsqueeze(1) / count
    invstd = torch.rsqrt(var + eps)
    scale = gamma * invstd
    pooled_rows = count // (h * w) * (h // 2) * (w // 2)
    out = centred_patches.new_empty(groups, pooled_rows, c)
    for chunk in _grey_chunks(centred_patches, flat_weight, (n, c, h, w)):
        picked, _ = _pool(chunk.centred, scale[chunk.groups], chunk.z_shape)
        out[chunk.groups, chunk.pooled_rows] = torch.addcmul(
            beta, picked, scale[chunk.groups]
        ).relu_()
    saved = (centred_patches, weight, out, invstd, scale)
    return _from_rows(out, n, h // 2, w // 2), saved


def _grey_block_gradients(grad_out, saved, z_shape, has_bias):
    """Gradients of :class:`_GreyConvBlock`'s weight, bias (None without
    one), gamma and beta, from what :func:`_grey_block_forward` saved."""
    centred_patches, weight, out, invstd, scale = saved
    c = weight.shape[0]
    flat_weight = weight.reshape(c, -1)
    # BatchNorm's backward needs sums over all winners before any
    # full-resolution gradient: one pass for the sums, one for the rest.
    picked = torch.empty_like(out)
    for chunk in _grey_chunks(centred_patches, flat_weight, z_shape):
        picked[chunk.groups, chunk.pooled_rows], _ = _pool(
            chunk.centred, scale[chunk.groups], chunk.z_shape
        )
    grad, k0, k1, grad_gamma, grad_beta = _batch_norm_backward_terms(
        grad_out, out, picked, centred_patches.shape[1], invstd, scale
    )
    del picked
    grad_weight = torch.zeros_like(flat_weight)
    grad_bias = flat_weight.new_zeros(c) if has_bias else None
    for chunk in _grey_chunks(centred_patches, flat_weight, z_shape):
        part = chunk.groups
        _, index = _pool(chunk.centred, scale[part], chunk.z_shape)
        grad_z = _grad_z(
            grad[part, chunk.pooled_rows].contiguous(),
            scale[part],
            chunk.centred,
            k0[part],
            k1[part],
            index,
            chunk.z_shape,
        )
        rows = _rows(grad_z)
        grad_weight += (chunk.patches.reshape(-1, flat_weight.shape[1]).T @ rows).T
        if grad_bias is not None:
            grad_bias += (rows.new_ones(1, rows.shape[0]) @ rows).view(c)
    return grad_weight.reshape(weight.shape), grad_bias, grad_gamma, grad_beta


def _native_conv_block(x, weight, bias, gamma, beta, eps):
    """A Conv4 block in batch-statistics mode, in native (twice-differentiable)
    operations: what the modules compute, without swapping their parameters."""
    z = F.conv2d(x, weight, bias, padding=1)
    z = F.batch_norm(z, None, None, gamma, beta, training=True, eps=eps)
    return F.max_pool2d(F.relu(z), 2)


def _recomputed_grey_block(x, weight, bias, gamma, beta, eps):
    """:class:`_GreyConvBlock`'s output in differentiable operations, for a
    second derivative.

    As in the fused blocks, BatchNorm and ReLU run on the pool's winners
    only, picked with ``gather`` (whose derivatives need just the indices):
    its forward, backward and second derivative together measured about
    1.3x faster than :func:`_native_conv_block`'s (5 images of 28x28, 64
    channels, one thread).
    """
    z = F.conv2d(x, weight, bias, padding=1)
    mean = z.mean(dim=(0, 2, 3), keepdim=True)
    centred = z - mean
    var = (centred * centred).mean(dim=(0, 2, 3), keepdim=True)
    scale = gamma.view(1, -1, 1, 1) * torch.rsqrt(var + eps)
    with torch.no_grad():
        _, index = F.max_pool2d(centred * scale, 2, return_indices=True)
    picked = centred.flatten(2).gather(2, index.flatten(2)).view(index.shape)
    return F.relu(picked * scale + beta.view(1, -1, 1, 1))


class _TwiceDifferentiableGreyBlock(torch.autograd.Function):
    """:class:`_GreyConvBlock` for one task's support pass in second-order MAML.

    An inner step differentiates the block once (with the fused backward)
    and the outer backward differentiates that gradient again. For this
    second derivative, native operations keep the block's full-resolution
    tensors (the convolution and ReLU outputs and two gradients of that
    size: 3.8 of the 6.4 MiB a Conv4 support step keeps for 5 images of
    28x28) through the whole inner loop; this block keeps only its small
    inputs and the pooled gradient, and :class:`_GreyBlockGradient`
    recomputes the block (:func:`_recomputed_grey_block`) when the outer
    backward reaches it.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, eps):
        out, saved = _grey_block_forward(x, weight, gamma, beta, eps, 1)
        ctx.eps = eps
        ctx.z_shape = (x.shape[0], weight.shape[0], *x.shape[2:])
        ctx.save_for_backward(x, bias, gamma, beta, *saved)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, bias, gamma, beta, *saved = ctx.saved_tensors
        grads = _GreyBlockGradient.apply(
            grad_out, x, saved[1], bias, gamma, beta, ctx.eps, saved, ctx.z_shape
        )
        grad_weight, grad_bias, grad_gamma, grad_beta = grads
        if bias is None:
            grad_bias = None
        return None, grad_weight, grad_bias, grad_gamma, grad_beta, None


class _GreyBlockGradient(torch.autograd.Function):
    """The gradient of :class:`_TwiceDifferentiableGreyBlock`'s parameters
    as a function of ``grad_out`` and the parameters: fused in forward,
    recomputed in differentiable operations in backward (the second
    derivative)."""

    @staticmethod
    def forward(ctx, grad_out, x, weight, bias, gamma, beta, eps, saved, z_shape):
        grad_weight, grad_bias, grad_gamma, grad_beta = _grey_block_gradients(
            grad_out, saved, z_shape, bias is not None
        )
        ctx.eps = eps
        ctx.save_for_backward(grad_out, x, weight, bias, gamma, beta)
        if grad_bias is None:
            # A Function's outputs must be tensors; the caller drops this one.
            grad_bias = gamma.new_zeros(())
        return grad_weight, grad_bias, grad_gamma, grad_beta

    @staticmethod
    @once_differentiable
    def backward(
        ctx, weight_cotangent, bias_cotangent, gamma_cotangent, beta_cotangent
    ):
        grad_out, x, weight, bias, gamma, beta = ctx.saved_tensors
        has_bias = bias is not None
        with torch.enable_grad():
            grad_out, weight, gamma, beta = (
                t.detach().requires_grad_() for t in (grad_out, weight, gamma, beta)
            )
            parameters = [weight, gamma, beta]
            cotangents = [weight_cotangent, gamma_cotangent, beta_cotangent]
            if has_bias:
                bias = bias.detach().requires_grad_()
                parameters.append(bias)
                cotangents.append(bias_cotangent)
            out = _recomputed_grey_block(x, weight, bias, gamma, beta, ctx.eps)
            grads = torch.autograd.grad(out, parameters, grad_out, create_graph=True)
            # beta enters the gradients only through ReLU's mask: no derivative.
            second = torch.autograd.grad(
                grads, [grad_out, *parameters], cotangents, allow_unused=True
            )
        grad_grad_out, grad_weight, grad_gamma, grad_beta, *grad_bias = second
        return (
            grad_grad_out,
            None,
            grad_weight,
            grad_bias[0] if has_bias else None,
            grad_gamma,
            grad_beta,
            None,
            None,
            None,
        )


class _GreyChunk(NamedTuple):
    groups: slice
    pooled_rows: slice
    patches: torch.Tensor
    centred: torch.Tensor
    z_shape: tuple[int, int, int, int]


# Full-resolution elements per chunk of _GreyConvBlock (2 MiB in float32):
# below that the peak memory of a Conv4 MAML task stopped falling.
_CHUNK_ELEMENTS = 1 << 19


def _grey_chunks(
    centred_patches: torch.Tensor,
    flat_weight: torch.Tensor,
    z_shape: tuple[int, int, int, int],
) -> Iterator[_GreyChunk]:
    """Chunks of about ``_CHUNK_ELEMENTS`` with their z - mean: whole groups
    when a group fits in one, else parts of one group."""
    groups = centred_patches.shape[0]
    _, c, h, w = z_shape
    per_group = centred_patches.shape[1] // (h * w)
    images = max(1, _CHUNK_ELEMENTS // (c * h * w))
    if per_group <= images:
        step = images // per_group
        spans = [
            (slice(g, min(g + step, groups)), 0, per_group)
            for g in range(0, groups, step)
        ]
    else:
        spans = [
            (slice(g, g + 1), i, min(i + images, per_group))
            for g in range(groups)
            for i in range(0, per_group, images)
        ]
    pooled = (h // 2) * (w // 2)
    for part, first, stop in spans:
        patches = centred_patches[part, first * h * w : stop * h * w]
        n_images = (part.stop - part.start) * (stop - first)
        yield _GreyChunk(
            groups=part,
            pooled_rows=slice(first * pooled, stop * pooled),
            patches=patches,
            centred=patches @ flat_weight.T,
            z_shape=(n_images, c, h, w),
        )


def _batch_norm_backward_terms(grad_out, out, picked, count, invstd, scale):
    """The pooled gradient ``grad`` (zero where ReLU cut) as rows per group,
    the per-group terms of BatchNorm's input gradient,
    dz = scale * (g - mean(g) - z_hat * mean(g z_hat)) = scale g + k0 + k1 (z - mean),
    where g is ``grad`` routed to the winners (zero elsewhere) and
    z_hat = (z - mean) * invstd."""
    grad_out = grad_out.contiguous(memory_format=_CHANNELS_LAST)
    grad = torch.where(out > 0, _rows(grad_out).view(out.shape), 0.0)
    ones = grad.new_ones(grad.shape[0], 1, grad.shape[1])
    sum_grad = torch.bmm(ones, grad)
    sum_grad_z = torch.bmm(ones, grad * picked) * invstd
    k1 = -scale * invstd * sum_grad_z / count
    k0 = -scale * sum_grad / count
    # The last two are the gradients of BatchNorm's weight and bias.
    return grad, k0, k1, sum_grad_z.sum(dim=(0, 1)), sum_grad.sum(dim=(0, 1))


def _grad_z(grad, scale, centred, k0, k1, index, z_shape):
    """The gradient of the convolution output z, channels-last."""
    n, c, h, w = z_shape
    groups = centred.shape[0]
    routed = _from_rows(grad * scale, n, h // 2, w // 2)
    grad_z = torch.ops.aten.max_pool2d_with_indices_backward(
        routed,
        _from_rows(centred, n, h, w),
        [2, 2],
        [2, 2],
        [0, 0],
        [1, 1],
        False,
        index,
    ).contiguous(memory_format=_CHANNELS_LAST)
    _rows(grad_z).view(groups, -1, c).addcmul_(centred, k1).add_(k0)
    return grad_z


def _fusable_conv4(body: nn.Module) -> bool:
    """Whether ``body`` is a max-pool :class:`Conv4` the fused blocks reproduce."""
    if not isinstance(body, Conv4):
        return False
    for block in body.blocks:
        layers = list(block)
        if len(layers) != 4:
            return False
        conv, norm, relu, pool = layers
        if not (
            isinstance(conv, nn.Conv2d)
            and conv.kernel_size == (3, 3)
            and conv.stride == (1, 1)
            and conv.padding == (1, 1)
            and conv.dilation == (1, 1)
            and conv.groups == 1
            and conv.padding_mode == "zeros"
            and isinstance(norm, TaskBatchNorm2d)
            and isinstance(relu, nn.ReLU)
            and isinstance(pool, nn.MaxPool2d)
            and pool.kernel_size in (2, (2, 2))
            and pool.stride in (2, (2, 2))
            and pool.padding in (0, (0, 0))
            and pool.dilation in (1, (1, 1))
            and not pool.ceil_mode
        ):
            return False
    return True


def _fused_conv4_forward(
    body: Conv4, params: Params, x: torch.Tensor, groups: int, twice: bool = False
) -> torch.Tensor:
    """``body(x)`` with the fused blocks; ``params`` are the body's, by name.

    ``twice=True`` (one task, a grey input without gradient): a pass to be
    differentiated twice, with the first block fused
    (:class:`_TwiceDifferentiableGreyBlock`) and the others native.
    """
    x = x.reshape(x.shape[0], *body.input_shape)
    for index, block in enumerate(body.blocks):
        conv, norm = block[0], block[1]
        prefix = f"blocks.{index}"
        block_params = (
            params[f"{prefix}.0.weight"],
            params.get(f"{prefix}.0.bias") if conv.bias is not None else None,
            params[f"{prefix}.1.weight"],
            params[f"{prefix}.1.bias"],
            norm.eps,
        )
        if twice and index == 0:
            x = _TwiceDifferentiableGreyBlock.apply(x, *block_params)
        elif twice:
            x = _native_conv_block(x, *block_params)
        elif _few_channels(x) and not x.requires_grad:
            x = _GreyConvBlock.apply(x, *block_params, groups)
        else:
            x = _ConvBlock.apply(x, *block_params, groups)
    features = x.flatten(1)
    if body.projection is not None:
        features = F.linear(
            features, params["projection.weight"], params.get("projection.bias")
        )
    return features


class MAML(nn.Module):
    """Model-agnostic meta-learning on a backbone and a linear head.

    The module's parameters are the meta-learned initialisation. ``forward``
    adapts to every task of a meta-batch with ``inner_steps`` gradient steps
    on its support set and returns the predictions of the adapted networks
    on the query sets; back-propagating a loss on them gives the
    meta-gradient (exact second order unless ``first_order=True``).

    Parameters
    ----------
    body : torch.nn.Module
        Backbone mapping ``(n, *input_shape)`` to ``(n, embedding_dim)``.
        Its only layers that may mix samples of a batch are BatchNorm layers;
        :class:`~sklearn_meta.nn.backbones.TaskBatchNorm2d` keeps their
        statistics per task (and is required by the ``"shared"`` and
        ``"vmap"`` strategies).
    embedding_dim : int or None, default=None
        Width of the body's output; ``None`` reads ``body.out_features``.
    inner_lr : float, default=0.1
        Step size of the inner (adaptation) loop; with ``learn_inner_lr`` the
        initial value of every learned step size.
    inner_steps : int, default=1
        Inner gradient steps per task when ``forward`` gets no ``n_steps``.
    first_order : bool, default=False
        Drop the second-order terms (first-order MAML): the inner gradients
        are treated as constants of the initialisation.
    inner_params : {"all", "head"}, default="all"
        Parameters adapted in the inner loop. ``"head"`` is ANIL: only the
        head adapts, so the body runs once per meta-batch.
    learn_inner_lr : bool, default=False
        Meta-SGD: learn one inner step size per adapted parameter entry,
        initialised at ``inner_lr``.
    algorithm : {"maml", "reptile"}, default="maml"
        ``"reptile"`` replaces MAML's meta-gradient by Reptile's direction
        ``init - adapted`` averaged over tasks; see :meth:`regularization`.
    task : {"classification", "regression"}, default="classification"
        Classification returns logits and uses cross-entropy in the inner
        loop; regression returns one value per sample and uses the mean
        squared error.
    strategy : {"auto", "loop", "shared", "vmap"}, default="auto"
        How the tasks of a meta-batch are run; see the module docstring.
    fused : bool or "auto", default="auto"
        When the body is a max-pool :class:`~sklearn_meta.nn.backbones.Conv4`
        in batch-statistics mode, run the passes that are differentiated only
        once (query passes; support passes of first-order MAML; ANIL's body)
        through fused, once-differentiable blocks, and the grey first block
        of second-order support passes through a fused block whose second
        derivative is recomputed: same numbers up to rounding, faster and
        lighter (measured on a CPU). ``"auto"`` uses them on a CPU only;
        never under ``vmap``.
    checkpoint_query : bool, default=False
        Recompute each task's query pass during the backward pass instead of
        keeping its graph from the forward pass (``"loop"`` and ``"shared"``
        strategies): the graphs kept for the meta-batch are then the support
        passes' and one task's query pass at a time, for one more query
        forward pass per task. See Notes.

    Attributes
    ----------
    body : torch.nn.Module
        The backbone.
    head : torch.nn.Linear
        ``Linear(embedding_dim, 1)``. For classification its single row and
        bias are replicated for every class at the start of adaptation
        (the permutation-invariant initialisation of UnicornMAML), so a task
        can have any number of classes and the arbitrary label order of
        episodes does not matter.
    inner_lrs : torch.nn.ParameterDict or None
        Meta-SGD step sizes, one tensor shaped like each adapted parameter
        (like the head's single row for the head), keyed by the parameter
        name with dots replaced by ``-``.

    Notes
    -----
    BatchNorm layers use the statistics of the batch they see, per task and
    per set (support or query), as MAML's reference implementation does; no
    statistics travel from one task to another.

    With the replicated head every class has the same logit before the
    first inner step, so that step's gradient reaches the head only (the
    embedding's gradient sums to zero over the classes): with
    ``inner_steps=1`` the body is meta-learned but not adapted, as in ANIL;
    from the second step on, it adapts too.

    Adaptation works under :func:`torch.no_grad` too (validation in a
    training loop): the inner gradients are then taken without building a
    graph for a meta-gradient.

    Memory: ``forward`` returns the predictions of the whole meta-batch and
    the loss is back-propagated once, so the graphs of all its tasks are
    alive together and grow with the meta-batch, where a per-task loop that
    back-propagates after each task (learn2learn's examples) holds one
    task's graph at a time (``checkpoint_query=True`` recomputes the query
    passes in backward instead of keeping them). :meth:`meta_backward`,
    which the estimator's training step uses, keeps only the graphs of the
    tasks in flight, one per thread. Measured for Conv4 on 28x28 images,
    5-way 1-shot, 15 queries, on 2 CPU threads (peak resident memory of a
    meta-iteration, ``benchmarks/speed_maml.py``): 53 to 56 MiB against
    the loop's 66 with one second-order inner step at meta-batches 4 to 32,
    73 to 77 MiB against 93 to 94 with five (47 to 51 against 60 to 63 in
    first order and for ANIL). Two tasks' graphs are alive at once there,
    each smaller than the loop's: the query passes go through the fused
    blocks, and a second-order support step keeps 2.5 MiB for the outer
    backward instead of 6.4 (the first block's second derivative is
    recomputed; before that, five steps took 115 MiB).

    References
    ----------
    .. [1] C. Finn, P. Abbeel and S. Levine, "Model-Agnostic Meta-Learning
       for Fast Adaptation of Deep Networks", ICML 2017.
    .. [2] A. Raghu et al., "Rapid Learning or Feature Reuse? Towards
       Understanding the Effectiveness of MAML", ICLR 2020 (ANIL).
    .. [3] Z. Li et al., "Meta-SGD: Learning to Learn Quickly for Few-Shot
       Learning", 2017.
    .. [4] A. Nichol, J. Achiam and J. Schulman, "On First-Order
       Meta-Learning Algorithms", 2018 (Reptile).
    .. [5] H.-J. Ye and W.-L. Chao, "How to Train Your MAML to Excel in
       Few-Shot Classification", ICLR 2022 (UnicornMAML).

    Examples
    --------
    >>> import torch
    >>> from sklearn_meta.nn.backbones import MLP
    >>> from sklearn_meta.nn.maml import MAML
    >>> _ = torch.manual_seed(0)
    >>> model = MAML(MLP(4, (16,), 8), inner_lr=0.5)
    >>> support_x, query_x = torch.randn(2, 6, 4), torch.randn(2, 9, 4)
    >>> support_y = torch.tensor([[0, 1, 2] * 2, [0, 1, 2] * 2])
    >>> model(support_x, support_y, query_x).shape
    torch.Size([2, 9, 3])
    >>> params = model.adapt(support_x[0], support_y[0])
    >>> model.predict(query_x[0], params).shape
    torch.Size([9, 3])
    """

    def __init__(
        self,
        body: nn.Module,
        *,
        embedding_dim: int | None = None,
        inner_lr: float = 0.1,
        inner_steps: int = 1,
        first_order: bool = False,
        inner_params: str = "all",
        learn_inner_lr: bool = False,
        algorithm: str = "maml",
        task: str = "classification",
        strategy: str = "auto",
        fused: bool | str = "auto",
        checkpoint_query: bool = False,
    ) -> None:
        super().__init__()
        _check_option("inner_params", inner_params, ("all", "head"))
        _check_option("algorithm", algorithm, ("maml", "reptile"))
        _check_option("task", task, ("classification", "regression"))
        _check_option("strategy", strategy, _STRATEGIES)
        if int(inner_steps) < 0:
            raise ValueError(f"inner_steps must be >= 0; got {inner_steps!r}")
        if algorithm == "reptile" and learn_inner_lr:
            raise ValueError(
                "learn_inner_lr=True needs a meta-gradient, which Reptile does "
                "not compute; use algorithm='maml' or learn_inner_lr=False"
            )
        if algorithm == "reptile" and inner_params == "head":
            # The body would never move, and the shared head row's Reptile
            # direction is zero (cross-entropy gradients sum to zero over the
            # classes), so nothing would be learned.
            raise ValueError(
                "algorithm='reptile' needs inner_params='all': with only the "
                "head adapting, Reptile never changes the initialisation"
            )
        if embedding_dim is None:
            embedding_dim = getattr(body, "out_features", None)
            if not isinstance(embedding_dim, int):
                raise ValueError(
                    "the body has no integer out_features; pass embedding_dim"
                )
        self.body = body
        self.head = nn.Linear(int(embedding_dim), 1)
        self.embedding_dim = int(embedding_dim)
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.first_order = bool(first_order)
        self.inner_params = inner_params
        self.learn_inner_lr = bool(learn_inner_lr)
        self.algorithm = algorithm
        self.task = task
        self.strategy = strategy
        if fused not in (True, False, "auto"):
            raise ValueError(f"fused must be True, False or 'auto'; got {fused!r}")
        self.fused = fused
        self.checkpoint_query = bool(checkpoint_query)
        self._fusable = _fusable_conv4(body)
        self._body_names = [name for name, _ in body.named_parameters()]
        if inner_params == "head":
            self._adapted_names = list(_HEAD_NAMES)
        else:
            self._adapted_names = [f"body.{n}" for n in self._body_names] + list(
                _HEAD_NAMES
            )
        if self.learn_inner_lr:
            own = dict(self.named_parameters())
            self.inner_lrs = nn.ParameterDict(
                {
                    _lr_key(name): nn.Parameter(
                        torch.full_like(own[name].detach(), self.inner_lr)
                    )
                    for name in self._adapted_names
                }
            )
        else:
            self.inner_lrs = None
        self._regularization: torch.Tensor | None = None

    # ------------------------------------------------------------------
    # Parameters and functional evaluation

    @property
    def adapted_names(self) -> list[str]:
        """Names of the parameters the inner loop adapts."""
        return list(self._adapted_names)

    def initial_parameters(self, n_classes: int | None = None) -> Params:
        """The meta-learned initialisation as a name -> tensor dictionary.

        Parameters
        ----------
        n_classes : int or None, default=None
            Classes of the task (classification only): the head's row and
            bias are replicated (as views, so gradients flow back to the
            shared row) once per class. Ignored for regression.

        Returns
        -------
        params : dict of str to torch.Tensor
            ``body.*`` entries are the module's own parameters.
        """
        params = {f"body.{n}": p for n, p in self.body.named_parameters()}
        weight, bias = self.head.weight, self.head.bias
        if self.task == "classification":
            if n_classes is None or int(n_classes) < 1:
                raise ValueError(
                    f"n_classes must be a positive integer for classification; "
                    f"got {n_classes!r}"
                )
            n_classes = int(n_classes)
            weight = weight.expand(n_classes, self.embedding_dim)
            bias = bias.expand(n_classes)
        params["head.weight"] = weight
        params["head.bias"] = bias
        return params

    def _body_params(self, params: Params) -> Params:
        return {n: params[f"body.{n}"] for n in self._body_names}

    def _can_fuse(self, device: torch.device) -> bool:
        if not self._fusable or self.fused is False:
            return False
        if self.fused == "auto" and device.type != "cpu":
            return False
        return all(
            not layer.elementary and (layer.training or not bool(layer.calibrated))
            for layer in self.body.modules()
            if isinstance(layer, TaskBatchNorm2d)
        )

    def _embed(
        self,
        params: Params,
        x: torch.Tensor,
        once: bool = False,
        groups: int = 1,
        *,
        outside_vmap: bool = False,
    ) -> torch.Tensor:
        """The body's embedding of ``x``.

        ``once=True`` promises that the result is differentiated at most once,
        which allows the fused blocks; ``groups`` (fused blocks only) splits
        the batch into that many tasks with their own BatchNorm statistics.
        ``outside_vmap=True`` promises that this call is not under
        :func:`torch.func.vmap` (which custom autograd nodes would need rules
        for): a pass to be differentiated twice may then fuse a grey first
        block, keeping less memory for the second derivative.
        """
        if once and self._can_fuse(x.device):
            return _fused_conv4_forward(self.body, self._body_params(params), x, groups)
        if outside_vmap and groups == 1 and self._can_fuse(x.device):
            images = x.reshape(x.shape[0], *self.body.input_shape)
            if _few_channels(images) and not images.requires_grad:
                return _fused_conv4_forward(
                    self.body, self._body_params(params), images, 1, twice=True
                )
        if groups != 1:
            raise RuntimeError("per-group statistics need the fused blocks")
        return functional_call(self._functional_body(), self._body_params(params), (x,))

    def _functional_body(self) -> nn.Module:
        """The body to run ``functional_call`` on in the current thread."""
        replicas = getattr(_thread_bodies, "replicas", None)
        if replicas is None:
            return self.body
        return replicas.get(id(self.body), self.body)

    def _head(self, params: Params, embedding: torch.Tensor) -> torch.Tensor:
        output = embedding @ params["head.weight"].transpose(-1, -2)
        output = output + params["head.bias"].unsqueeze(-2)
        if self.task == "regression":
            output = output.squeeze(-1)
        return output

    def _predict(
        self,
        params: Params,
        x: torch.Tensor,
        once: bool = False,
        *,
        outside_vmap: bool = False,
    ) -> torch.Tensor:
        return self._head(
            params, self._embed(params, x, once, outside_vmap=outside_vmap)
        )

    def _predict_once(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return self._predict(params, x, once=True)

    def _loss(
        self, output: torch.Tensor, target: torch.Tensor, reduction: str = "mean"
    ) -> torch.Tensor:
        if self.task == "regression":
            return F.mse_loss(output, target.to(output.dtype), reduction=reduction)
        return F.cross_entropy(
            output.reshape(-1, output.shape[-1]),
            target.reshape(-1),
            reduction=reduction,
        )

    def _inner_lr(self, name: str) -> torch.Tensor | float:
        if self.inner_lrs is None:
            return self.inner_lr
        return self.inner_lrs[_lr_key(name)]

    def embed(self, x: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        """The body's embedding of ``x`` with the given (adapted) parameters.

        Parameters
        ----------
        x : torch.Tensor of shape (n, \\*input_shape)
        params : dict or None, default=None
            Parameters as returned by :meth:`adapt`; ``None`` uses the
            meta-learned initialisation.

        Returns
        -------
        embedding : torch.Tensor of shape (n, embedding_dim)
        """
        if params is None:
            params = self.initial_parameters(1)
        return self._embed(params, x, once=not torch.is_grad_enabled())

    def predict(
        self,
        x: torch.Tensor,
        params: Params | None = None,
        n_classes: int | None = None,
    ) -> torch.Tensor:
        """Logits (classification) or values (regression) for ``x``.

        Parameters
        ----------
        x : torch.Tensor of shape (n, \\*input_shape)
        params : dict or None, default=None
            Parameters as returned by :meth:`adapt`; ``None`` uses the
            meta-learned initialisation with ``n_classes`` classes.
        n_classes : int or None, default=None
            Needed only when ``params`` is None, for classification.

        Returns
        -------
        output : torch.Tensor of shape (n, n_classes) or (n,)
        """
        if params is None:
            params = self.initial_parameters(n_classes)
        else:
            params = {**self.initial_parameters(1), **params}
        return self._predict(params, x, once=not torch.is_grad_enabled())

    # ------------------------------------------------------------------
    # Inner loop

    def _mode(self, create_graph: bool) -> str:
        """How inner gradients relate to the initialisation.

        ``"second"``: exact meta-gradient (graph of the inner gradients kept);
        ``"first"``: the gradients are constants but the update keeps its path
        to the initialisation (and to Meta-SGD's step sizes);
        ``"none"``: everything detached (no meta-gradient wanted).
        """
        if not (create_graph and torch.is_grad_enabled()):
            return "none"
        if self.algorithm == "reptile":
            return "none"
        return "first" if self.first_order else "second"

    def _step(self, params: Params, grads: Params) -> Params:
        new = dict(params)
        for name, grad in grads.items():
            new[name] = params[name] - self._inner_lr(name) * grad
        return new

    def _gradient_steps(
        self,
        params: Params,
        loss_fn: Callable[[Params], torch.Tensor],
        n_steps: int,
        mode: str,
    ) -> Params:
        """``n_steps`` gradient steps on ``loss_fn`` for the adapted entries of ``params``.

        ``loss_fn`` may be a sum of independent per-task losses over batched
        parameters: the gradient of the sum is then every task's own gradient.
        """
        names = [n for n in self._adapted_names if n in params]
        if mode == "none":
            params = {n: p.detach() for n, p in params.items()}
        with torch.enable_grad():
            for _ in range(n_steps):
                if mode == "none":
                    params = {
                        n: p.detach().requires_grad_(n in names)
                        for n, p in params.items()
                    }
                loss = loss_fn(params)
                grads = torch.autograd.grad(
                    loss, [params[n] for n in names], create_graph=mode == "second"
                )
                if mode == "none":
                    with torch.no_grad():
                        params = self._step(
                            params, dict(zip(names, grads, strict=True))
                        )
                else:
                    params = self._step(params, dict(zip(names, grads, strict=True)))
        if mode == "none":
            params = {n: p.detach() for n, p in params.items()}
        return params

    def _resolve_strategy(self, device: torch.device) -> str:
        strategy = self.strategy
        if strategy == "auto":
            if not _vmap_friendly(self.body):
                strategy = "loop"
            elif device.type == "cuda":
                strategy = "vmap"
            else:
                strategy = "shared"
        if strategy != "loop" and _has_running_statistics(self.body):
            if self.strategy != "auto":
                raise ValueError(
                    f"strategy={self.strategy!r} cannot run a body whose BatchNorm "
                    "layers track running statistics (they update buffers in "
                    "place); use TaskBatchNorm2d, track_running_stats=False, or "
                    "strategy='loop'"
                )
            strategy = "loop"
        return strategy

    def adapt(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        n_classes: int | None = None,
        n_steps: int | None = None,
        params: Params | None = None,
        *,
        create_graph: bool = False,
    ) -> Params:
        """Adapt to one task with gradient steps on its support set.

        Parameters
        ----------
        support_x : torch.Tensor of shape (n_support, \\*input_shape)
        support_y : torch.Tensor of shape (n_support,)
            Class ids ``0..n_classes-1`` (long) or regression targets.
        n_classes : int or None, default=None
            Classes of the task; ``None`` means ``support_y.max() + 1`` when
            starting from the initialisation, or the head of ``params``.
        n_steps : int or None, default=None
            Gradient steps; ``None`` means ``inner_steps``.
        params : dict or None, default=None
            Parameters to continue adapting from (as returned by an earlier
            call); ``None`` starts from the meta-learned initialisation.
        create_graph : bool, default=False
            Keep the result a differentiable function of the initialisation
            (for a meta-gradient). By default the result is detached.

        Returns
        -------
        params : dict of str to torch.Tensor
            Every parameter of the module by name (``body.*``, ``head.*``),
            the adapted ones replaced.
        """
        n_steps = self.inner_steps if n_steps is None else int(n_steps)
        if self.task == "classification":
            if params is not None:
                head_classes = params["head.weight"].shape[0]
                if n_classes is not None and int(n_classes) != head_classes:
                    raise ValueError(
                        f"params hold a head for {head_classes} classes; got "
                        f"n_classes={n_classes}"
                    )
                n_classes = head_classes
            elif n_classes is None:
                n_classes = int(support_y.max()) + 1
        start = self.initial_parameters(n_classes)
        if params is not None:
            start.update(params)
        mode = self._mode(create_graph)
        if self.inner_params == "head":
            # The body's graph is back-propagated once even in second order:
            # the inner gradients are taken with respect to the head only.
            with contextlib.nullcontext() if mode == "second" else torch.no_grad():
                embedding = self._embed(start, support_x, once=True)

            def loss_fn(p: Params) -> torch.Tensor:
                return self._loss(self._head(p, embedding), support_y)

        else:
            once = mode != "second"

            def loss_fn(p: Params) -> torch.Tensor:
                output = self._predict(p, support_x, once, outside_vmap=True)
                return self._loss(output, support_y)

        return self._gradient_steps(start, loss_fn, n_steps, mode)

    # ------------------------------------------------------------------
    # Meta-batch forward

    def forward(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        n_steps: int | None = None,
    ) -> torch.Tensor:
        """Adapt to every task of a meta-batch and predict its query set.

        Parameters
        ----------
        support_x : torch.Tensor of shape (n_tasks, n_support, \\*input_shape)
        support_y : torch.Tensor of shape (n_tasks, n_support)
            Class ids ``0..n_classes-1`` (the meta-batch's number of classes
            is ``support_y.max() + 1``) or regression targets.
        query_x : torch.Tensor of shape (n_tasks, n_query, \\*input_shape)
        n_steps : int or None, default=None
            Inner steps; ``None`` means ``inner_steps``.

        Returns
        -------
        output : torch.Tensor of shape (n_tasks, n_query, n_classes) or (n_tasks, n_query)
            Logits or regression values of the adapted networks. With
            ``algorithm="reptile"`` they carry no gradient; the outer update
            comes from :meth:`regularization`.
        """
        n_steps = self.inner_steps if n_steps is None else int(n_steps)
        n_classes = None
        if self.task == "classification":
            n_classes = int(support_y.max()) + 1
        init = self.initial_parameters(n_classes)
        mode = self._mode(create_graph=True)
        self._regularization = None
        strategy = self._resolve_strategy(support_x.device)
        if self.inner_params == "head":
            output, adapted = self._forward_head_only(
                init, support_x, support_y, query_x, n_steps, mode, strategy
            )
        elif strategy == "vmap":
            output, adapted = self._forward_vmap(
                init, support_x, support_y, query_x, n_steps, mode
            )
        else:
            output, adapted = self._forward_loop(
                init, support_x, support_y, query_x, n_steps, mode, strategy
            )
        if self.algorithm == "reptile" and torch.is_grad_enabled():
            self._regularization = self._reptile_surrogate(init, adapted)
        return output

    def meta_backward(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        n_steps: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Accumulate the meta-gradient of a meta-batch into the parameters' ``.grad``.

        The same gradient as ``(loss_fn(self(support_x, support_y, query_x),
        query_y) + self.regularization()).backward()``, computed with less
        memory and, on a CPU, faster: with the ``"auto"`` and ``"loop"``
        strategies on a CPU each task is adapted, predicted and
        back-propagated on its own, so only the graphs of the tasks in
        flight are alive (not the whole meta-batch's), and with more than one
        torch thread the tasks run side by side, one per thread. The
        gradients of the tasks are summed in task order, so the result does
        not depend on which thread finishes first. Otherwise (Reptile, a GPU,
        or the ``"shared"`` and ``"vmap"`` strategies) it is that forward
        and backward.

        Parameters
        ----------
        support_x, support_y, query_x : torch.Tensor
            As for :meth:`forward`.
        query_y : torch.Tensor of shape (n_tasks, n_query)
            Targets of the query sets.
        loss_fn : callable
            ``loss_fn(predictions, targets)`` on predictions shaped like
            ``forward``'s output: a mean over tasks of equal weight, such as
            the mean cross-entropy over all query samples of equal-sized
            query sets (:class:`~sklearn_meta.nn.losses.EpisodeLoss`).
        n_steps : int or None, default=None
            Inner steps; ``None`` means ``inner_steps``.

        Returns
        -------
        loss : torch.Tensor
            The loss of the meta-batch (0-dim, detached).
        output : torch.Tensor
            ``forward``'s output (detached).
        """
        n_steps = self.inner_steps if n_steps is None else int(n_steps)
        per_task = (
            self.algorithm == "maml"
            and self.strategy in ("auto", "loop")
            and support_x.device.type == "cpu"
            and torch.is_grad_enabled()
        )
        if not per_task:
            output = self(support_x, support_y, query_x, n_steps)
            loss = loss_fn(output, query_y) + self.regularization()
            loss.backward()
            return loss.detach(), output.detach()
        n_tasks = support_x.shape[0]
        n_classes = None
        if self.task == "classification":
            n_classes = int(support_y.max()) + 1
        mode = self._mode(create_graph=True)
        trainable = [p for p in self.parameters() if p.requires_grad]
        # Threads share the layers' buffers, so only bodies known to leave
        # them alone (no running statistics, only standard layers) go parallel.
        parallel = _vmap_friendly(self.body) and not _has_running_statistics(self.body)
        in_threads = parallel and task_workers(n_tasks) > 1
        replicas: dict[int, nn.Module] = {}
        replicas_lock = threading.Lock()

        def task_gradients(t: int):
            previous = getattr(_thread_bodies, "replicas", None)
            if in_threads:
                with replicas_lock:
                    replica = replicas.get(threading.get_ident())
                    if replica is None:
                        replica = _shallow_replica(self.body)
                        replicas[threading.get_ident()] = replica
                _thread_bodies.replicas = {id(self.body): replica}
            try:
                output = self._task_output(
                    self.initial_parameters(n_classes),
                    support_x[t],
                    support_y[t],
                    query_x[t],
                    n_steps,
                    mode,
                )
                loss = loss_fn(output.unsqueeze(0), query_y[t].unsqueeze(0))
                grads = torch.autograd.grad(
                    loss / n_tasks, trainable, allow_unused=True
                )
            finally:
                _thread_bodies.replicas = previous
            return loss.detach(), output.detach(), grads

        losses, outputs = [], []
        for loss, output, grads in map_tasks(task_gradients, n_tasks, parallel):
            losses.append(loss)
            outputs.append(output)
            for parameter, grad in zip(trainable, grads, strict=True):
                if grad is None:
                    continue
                if parameter.grad is None:
                    parameter.grad = grad
                else:
                    parameter.grad += grad
        self._regularization = None
        return torch.stack(losses).mean(), torch.stack(outputs)

    def _task_output(
        self,
        init: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        n_steps: int,
        mode: str,
    ) -> torch.Tensor:
        """One task's query predictions after adaptation, as a function of ``init``."""
        if self.inner_params == "head":
            # The body is differentiated once (by the outer backward) even in
            # second order: the inner gradients are the head's.
            with contextlib.nullcontext() if mode == "second" else torch.no_grad():
                support_embedding = self._embed(init, support_x, once=True)
            query_embedding = self._embed(init, query_x, once=True)
            head = {n: init[n] for n in _HEAD_NAMES}

            def head_loss(p: Params) -> torch.Tensor:
                return self._loss(self._head(p, support_embedding), support_y)

            head = self._gradient_steps(head, head_loss, n_steps, mode)
            return self._head(head, query_embedding)

        def support_loss(p: Params) -> torch.Tensor:
            output = self._predict(
                p, support_x, once=mode != "second", outside_vmap=True
            )
            return self._loss(output, support_y)

        params = self._gradient_steps(init, support_loss, n_steps, mode)
        if self.checkpoint_query:
            return checkpoint(self._predict_once, params, query_x, use_reentrant=False)
        return self._predict(params, query_x, once=True)

    def _reptile_surrogate(self, init: Params, adapted: Params) -> torch.Tensor:
        # sum(p * d) - sum(p * d).detach() is 0 in value and has gradient d
        # with respect to p: the Reptile direction d = init - mean adapted,
        # so the reported loss stays the query loss while an optimizer step
        # moves the initialisation towards the adapted weights.
        total = init["head.bias"].new_zeros(())
        for name in self._adapted_names:
            direction = (init[name] - adapted[name].mean(dim=0)).detach()
            total = total + (init[name] * direction).sum()
        return total - total.detach()

    def __getstate__(self) -> dict:
        # The last Reptile surrogate holds a graph, which neither pickle nor
        # deepcopy accepts; it belongs to one training step anyway.
        state = self.__dict__.copy()
        state["_regularization"] = None
        return state

    def regularization(self) -> torch.Tensor:
        """Term to add to the loss of the last ``forward`` (0-dim tensor).

        For Reptile it is zero in value but its gradient with respect to
        every adapted parameter of the initialisation is Reptile's direction
        ``init - adapted``, averaged over the tasks of the meta-batch (for
        the head's shared row: summed over the class rows it was replicated
        to, as a gradient would be). So ``loss + regularization()`` followed
        by ``backward()`` and an optimizer step is Reptile's outer update,
        with SGD at learning rate ``epsilon`` exactly Nichol et al.'s batched
        update. For MAML, and outside training (no gradient), it is 0.
        """
        if self._regularization is not None:
            return self._regularization
        return self.head.bias.new_zeros(())

    def _forward_loop(
        self,
        init: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        n_steps: int,
        mode: str,
        strategy: str,
    ) -> tuple[torch.Tensor, Params]:
        n_tasks = support_x.shape[0]
        batched: Params | None = None
        steps_left = n_steps
        if strategy == "shared" and n_steps > 0:
            # Only the first step: later steps have per-task weights, and a
            # vmap over them measured no faster than the loop on a CPU.
            batched = self._adapt_batched(init, support_x, support_y, 1, mode)
            steps_left = n_steps - 1
        outputs = []
        adapted_tasks = []
        for t in range(n_tasks):
            params = init
            if batched is not None:
                params = {**init, **{n: p[t] for n, p in batched.items()}}

            def loss_fn(p: Params, t: int = t) -> torch.Tensor:
                output = self._predict(
                    p, support_x[t], once=mode != "second", outside_vmap=True
                )
                return self._loss(output, support_y[t])

            params = self._gradient_steps(params, loss_fn, steps_left, mode)
            # The query pass is differentiated once (by the outer backward).
            if self.algorithm == "reptile":
                with torch.no_grad():
                    outputs.append(self._predict(params, query_x[t], once=True))
            elif self.checkpoint_query and torch.is_grad_enabled():
                outputs.append(
                    checkpoint(
                        self._predict_once, params, query_x[t], use_reentrant=False
                    )
                )
            else:
                outputs.append(self._predict(params, query_x[t], once=True))
            adapted_tasks.append({n: params[n] for n in self._adapted_names})
        adapted = {
            n: torch.stack([a[n] for a in adapted_tasks]) for n in self._adapted_names
        }
        return torch.stack(outputs), adapted

    def _split_parameters(self, init: Params, mode: str) -> tuple[Params, Params]:
        """The adapted and the fixed entries of ``init`` (detached in mode "none")."""
        adapted = {n: init[n] for n in self._adapted_names}
        fixed = {n: p for n, p in init.items() if n not in adapted}
        if mode == "none":
            adapted = {n: p.detach() for n, p in adapted.items()}
            fixed = {n: p.detach() for n, p in fixed.items()}
        return adapted, fixed

    def _adapt_batched(
        self,
        init: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        n_steps: int,
        mode: str,
    ) -> Params:
        """Adapted entries of every task after ``n_steps`` (>= 1), batched over tasks.

        Runs under ``vmap`` over tasks. At the first step the parameters are
        shared (unbatched), so the forward pass is one batched call over every
        support set; BatchNorm statistics (elementary form, exact in second
        order) stay per task.
        """
        names = self._adapted_names
        start, fixed = self._split_parameters(init, mode)

        def support_loss(adapted, sx, sy):
            return self._loss(self._predict({**fixed, **adapted}, sx), sy)

        def task(adapted, sx, sy):
            for _ in range(n_steps):
                grads = torch.func.grad(support_loss)(adapted, sx, sy)
                if mode != "second":
                    grads = {n: g.detach() for n, g in grads.items()}
                adapted = {n: adapted[n] - self._inner_lr(n) * grads[n] for n in names}
            return adapted

        run = torch.func.vmap(task, in_dims=(None, 0, 0))
        with _elementary_batch_norm(self.body):
            if mode == "none":
                # torch.func.grad differentiates under no_grad too; the
                # results then carry no graph, as wanted here.
                with torch.no_grad():
                    return run(start, support_x, support_y)
            return run(start, support_x, support_y)

    def _forward_vmap(
        self,
        init: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        n_steps: int,
        mode: str,
    ) -> tuple[torch.Tensor, Params]:
        n_tasks = support_x.shape[0]
        if n_steps > 0:
            adapted = self._adapt_batched(init, support_x, support_y, n_steps, mode)
        else:
            start, _ = self._split_parameters(init, mode)
            adapted = {n: p.expand(n_tasks, *p.shape) for n, p in start.items()}
        _, fixed = self._split_parameters(init, mode)

        def query(adapted, qx):
            return self._predict({**fixed, **adapted}, qx)

        run = torch.func.vmap(query)
        with _elementary_batch_norm(self.body):
            if mode == "none" or self.algorithm == "reptile":
                with torch.no_grad():
                    return run(adapted, query_x), adapted
            return run(adapted, query_x), adapted

    def _embed_tasks(
        self, params: Params, x: torch.Tensor, strategy: str
    ) -> torch.Tensor:
        """Body embeddings of ``x`` (n_tasks, n, \\*input) with per-task statistics."""
        n_tasks, n = x.shape[:2]
        flat = x.reshape(n_tasks * n, *x.shape[2:])
        if self._can_fuse(x.device):
            # ANIL's body is back-propagated once, so the fused blocks apply.
            if x.device.type == "cpu":
                # Task-sized batches keep the temporaries in cache: one call
                # over 32 tasks measured 1.35x slower on a CPU.
                return torch.stack(
                    [self._embed(params, x[t], True) for t in range(n_tasks)]
                )
            # One call for all tasks, with BatchNorm statistics per task.
            return self._embed(params, flat, True, n_tasks).reshape(n_tasks, n, -1)
        if not _mixes_samples(self.body):
            return self._embed(params, flat).reshape(n_tasks, n, -1)
        if strategy == "loop":
            return torch.stack([self._embed(params, x[t]) for t in range(n_tasks)])
        body_params = self._body_params(params)

        def embed_one(sample_x):
            return functional_call(self.body, body_params, (sample_x,))

        with _elementary_batch_norm(self.body):
            return torch.func.vmap(embed_one)(x)

    def _forward_head_only(
        self,
        init: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        n_steps: int,
        mode: str,
        strategy: str,
    ) -> tuple[torch.Tensor, Params]:
        """ANIL: the body runs once for all tasks, the heads adapt as a batch."""
        n_tasks, n_support = support_y.shape[:2]
        reptile = self.algorithm == "reptile"
        # Only second order differentiates through the inner gradients, so
        # only it needs the graph of the support embeddings.
        with contextlib.nullcontext() if mode == "second" else torch.no_grad():
            support_embedding = self._embed_tasks(init, support_x, strategy)
        with torch.no_grad() if reptile else contextlib.nullcontext():
            query_embedding = self._embed_tasks(init, query_x, strategy)
        head = {n: init[n].expand(n_tasks, *init[n].shape) for n in _HEAD_NAMES}

        def loss_fn(p: Params) -> torch.Tensor:
            # A sum of per-task mean losses: its gradient with respect to the
            # batched heads is each task's own gradient.
            output = self._head(p, support_embedding)
            return self._loss(output, support_y, reduction="sum") / n_support

        head = self._gradient_steps(head, loss_fn, n_steps, mode)
        output = self._head(head, query_embedding)
        return output, head
