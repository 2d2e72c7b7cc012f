"""Fused Conv4 blocks: the passes of a max-pool Conv4 that are differentiated once.

Two functions are the interface, used by :class:`~sklearn_meta.nn.backbones.Conv4`
only: :func:`can_fuse` and :func:`fused_forward`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

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
# The support passes run under torch.func.grad, which old-style autograd
# Functions cannot enter, so only the plain-autograd query passes use them.

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
    """The values of ``centred`` (rows) that win the 2x2 max-pool of
    ``scale * centred``, as rows, and their max-pool indices."""
    n, c, h, w = shape
    sign = None
    if bool((scale < 0).any()):
        # A negative scale turns the max of the output into a min of z.
        sign = torch.where(scale < 0, -1.0, 1.0).to(centred.dtype)
        centred = centred * sign
    pooled, index = F.max_pool2d(_from_rows(centred, n, h, w), 2, return_indices=True)
    picked = _rows(pooled.contiguous(memory_format=_CHANNELS_LAST))
    if sign is not None:
        picked = picked * sign
    return picked, index


class _ConvBlock(torch.autograd.Function):
    """``max_pool2d(relu(batch_norm(conv2d(x, padding=1))), 2)``, fused.

    Output in channels-last layout. Once differentiable.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, eps):
        n, _, h, w = x.shape
        c = weight.shape[0]
        saved_input = x.contiguous(memory_format=_CHANNELS_LAST)
        z = F.conv2d(saved_input, weight, bias, padding=1)
        z = z.contiguous(memory_format=_CHANNELS_LAST)
        rows = _rows(z)
        count = rows.shape[0]
        # Column sums as matrix products: much faster than sum(dim=0) here.
        ones = rows.new_ones(1, count)
        mean = ones @ rows / count
        # Everything after works on z - mean, as native BatchNorm does: an
        # affine map of z itself loses float32 digits to cancellation when
        # the mean is large against the spread.
        centred = rows - mean
        # z itself is not needed any more: its memory takes the squares.
        var = ones @ torch.mul(centred, centred, out=rows) / count
        del z, rows
        invstd = torch.rsqrt(var + eps)
        scale = gamma * invstd
        picked, _ = _pool(centred, scale, (n, c, h, w))
        out = torch.addcmul(beta, picked, scale).relu_()
        ctx.has_bias = bias is not None
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
            grad_out, out, picked, centred.shape[0], invstd, scale
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
        return (grad_x, grad_weight, grad_bias, *affine_grads, None)


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
    def forward(ctx, x, weight, bias, gamma, beta, eps):
        out, saved = _grey_block_forward(x, weight, gamma, beta, eps)
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
        )


def _grey_block_forward(x, weight, gamma, beta, eps):
    """:class:`_GreyConvBlock`'s output and the tensors its backward needs.

    The convolution's bias does not enter: BatchNorm subtracts it again.
    """
    n, _, h, w = x.shape
    c = weight.shape[0]
    patches = _patches(x)
    count = patches.shape[0]
    centred_patches = patches - patches.new_ones(1, count) @ patches / count
    del patches
    covariance = centred_patches.T @ centred_patches
    flat_weight = weight.reshape(c, -1)
    # Each channel's variance is w' Cov w.
    var = ((flat_weight @ covariance) * flat_weight).sum(-1).unsqueeze(0) / count
    invstd = torch.rsqrt(var + eps)
    scale = gamma * invstd
    out = centred_patches.new_empty(n * (h // 2) * (w // 2), c)
    for chunk in _grey_chunks(centred_patches, flat_weight, (n, c, h, w)):
        picked, _ = _pool(chunk.centred, scale, chunk.z_shape)
        out[chunk.pooled_rows] = torch.addcmul(beta, picked, scale).relu_()
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
        picked[chunk.pooled_rows], _ = _pool(chunk.centred, scale, chunk.z_shape)
    grad, k0, k1, grad_gamma, grad_beta = _batch_norm_backward_terms(
        grad_out, out, picked, centred_patches.shape[0], invstd, scale
    )
    del picked
    grad_weight = torch.zeros_like(flat_weight)
    grad_bias = flat_weight.new_zeros(c) if has_bias else None
    for chunk in _grey_chunks(centred_patches, flat_weight, z_shape):
        _, index = _pool(chunk.centred, scale, chunk.z_shape)
        grad_z = _grad_z(
            grad[chunk.pooled_rows], scale, chunk.centred, k0, k1, index, chunk.z_shape
        )
        rows = _rows(grad_z)
        grad_weight += (chunk.patches.T @ rows).T
        if grad_bias is not None:
            grad_bias += (rows.new_ones(1, rows.shape[0]) @ rows).view(c)
    return grad_weight.reshape(weight.shape), grad_bias, grad_gamma, grad_beta


class _GreyChunk(NamedTuple):
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
    """Chunks of about ``_CHUNK_ELEMENTS`` with their z - mean, whole images."""
    n, c, h, w = z_shape
    images = max(1, _CHUNK_ELEMENTS // (c * h * w))
    pooled = (h // 2) * (w // 2)
    for first in range(0, n, images):
        stop = min(first + images, n)
        patches = centred_patches[first * h * w : stop * h * w]
        yield _GreyChunk(
            pooled_rows=slice(first * pooled, stop * pooled),
            patches=patches,
            centred=patches @ flat_weight.T,
            z_shape=(stop - first, c, h, w),
        )


def _batch_norm_backward_terms(grad_out, out, picked, count, invstd, scale):
    """The pooled gradient ``grad`` (zero where ReLU cut) as rows, the terms
    of BatchNorm's input gradient,
    dz = scale * (g - mean(g) - z_hat * mean(g z_hat)) = scale g + k0 + k1 (z - mean),
    where g is ``grad`` routed to the winners (zero elsewhere) and
    z_hat = (z - mean) * invstd."""
    grad_out = grad_out.contiguous(memory_format=_CHANNELS_LAST)
    grad = torch.where(out > 0, _rows(grad_out).view(out.shape), 0.0)
    ones = grad.new_ones(1, grad.shape[0])
    sum_grad = ones @ grad
    sum_grad_z = ones @ (grad * picked) * invstd
    k1 = -scale * invstd * sum_grad_z / count
    k0 = -scale * sum_grad / count
    # The last two are the gradients of BatchNorm's weight and bias.
    return grad, k0, k1, sum_grad_z.view(-1), sum_grad.view(-1)


def _grad_z(grad, scale, centred, k0, k1, index, z_shape):
    """The gradient of the convolution output z, channels-last."""
    n, c, h, w = z_shape
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
    _rows(grad_z).addcmul_(centred, k1).add_(k0)
    return grad_z


def _fusable_conv4(body: nn.Module) -> bool:
    """Whether ``body`` is a max-pool :class:`Conv4` the fused blocks reproduce."""
    from .backbones import Conv4, TaskBatchNorm2d

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


def fused_forward(body: nn.Module, params: dict, x: torch.Tensor) -> torch.Tensor:
    """``body(x)`` with the parameters ``params`` (by name), through fused
    once-differentiable blocks."""
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
        if _few_channels(x) and not x.requires_grad:
            x = _GreyConvBlock.apply(x, *block_params)
        else:
            x = _ConvBlock.apply(x, *block_params)
    features = x.flatten(1)
    if body.projection is not None:
        features = F.linear(
            features, params["projection.weight"], params.get("projection.bias")
        )
    return features


def can_fuse(body: nn.Module, x: torch.Tensor) -> bool:
    """Whether :func:`fused_forward` reproduces ``body`` on ``x`` (a CPU
    tensor, a max-pool Conv4 normalising with batch statistics)."""
    from .backbones import TaskBatchNorm2d

    return (
        x.device.type == "cpu"
        and _fusable_conv4(body)
        and all(
            layer.training or not bool(layer.calibrated)
            for layer in body.modules()
            if isinstance(layer, TaskBatchNorm2d)
        )
    )
