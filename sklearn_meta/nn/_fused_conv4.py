"""A fused first block for a max-pool Conv4 on images of at most three channels.

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
# The first block of a Conv4 on grey (or colour) images, fused
#
# Its full-resolution tensors are the largest of a MAML task's graph. One
# autograd node (3x3 convolution, batch-statistics BatchNorm, ReLU, 2x2
# max-pool) computes the same numbers with far fewer full-resolution passes
# and keeps far less:
#
# - the convolution is a matrix product over 3x3 patches (oneDNN's weight
#   gradient was several times slower there), so BatchNorm's statistics
#   follow from the patches' covariance;
# - the pool is taken on the convolution output: BatchNorm is a per-channel
#   affine map and ReLU is monotone, so they commute with the max (a channel
#   with a negative scale pools the minimum instead) and then run on a
#   quarter of the elements; ties go to the same element as in max_pool2d;
#   the pool runs in channels-last layout (the native NCHW max-pool was
#   much slower);
# - the backward pass is written out: BatchNorm's input gradient is an affine
#   map of z plus the pooled gradient routed to the winners;
# - the second derivative (MAML's support passes) recomputes the block in
#   differentiable operations when the outer backward reaches it, instead of
#   keeping the native layers' tensors through the whole inner loop.
#
# The later blocks work on a quarter of the pixels and fewer; fused too
# (an earlier version), they bought little time and no memory.

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


class _GreyBlock(torch.autograd.Function):
    """``max_pool2d(relu(batch_norm(conv2d(x, padding=1))), 2)``, fused, on
    an input of very few channels (grey images) that needs no gradient: the
    first block of a Conv4. Output in channels-last layout.

    Its full-resolution tensors were the largest of a task's graph, so none
    is made for all images at once. The convolution is a product of 3x3
    patches (9 columns) with the weights, so BatchNorm's mean and variance
    follow from the patches' mean and covariance; then z - mean is made,
    pooled and dropped a chunk of images at a time, in backward again
    (oneDNN's weight gradient was also slower than this product there).

    Twice differentiable, also inside :func:`torch.func.grad` (hence the
    ``setup_context`` form): MAML's support passes, whose gradient the outer
    backward differentiates again, keep only this block's small inputs and
    pooled output through the inner loop instead of the native layers'
    full-resolution tensors. The first output is the block's; the others
    are what its backward needs.
    """

    @staticmethod
    def forward(x, weight, bias, gamma, beta, eps):
        out, (centred_patches, _, _, invstd, scale) = _grey_block_forward(
            x, weight, gamma, beta, eps
        )
        return out, centred_patches, invstd, scale

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, gamma, beta, ctx.eps = inputs
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(x, weight, bias, gamma, beta, *output)

    @staticmethod
    def backward(ctx, grad_out, *_):
        x, weight, bias, gamma, beta, *saved = ctx.saved_tensors
        grad_weight, grad_bias, grad_gamma, grad_beta = _GreyBlockGradient.apply(
            grad_out, x, weight, bias, gamma, beta, ctx.eps, *saved
        )
        needs = ctx.needs_input_grad
        return (
            None,
            grad_weight if needs[1] else None,
            grad_bias if needs[2] and bias is not None else None,
            grad_gamma,
            grad_beta,
            None,
        )


class _GreyBlockGradient(torch.autograd.Function):
    """:class:`_GreyBlock`'s parameter gradients as a function of
    ``grad_out`` and the parameters: fused in forward; in backward (the
    second derivative) the block is recomputed in differentiable operations
    (:func:`_recomputed_grey_block`) and differentiated twice."""

    @staticmethod
    def forward(grad_out, x, weight, bias, gamma, beta, eps, out, *saved):
        centred_patches, invstd, scale = saved
        z_shape = (x.shape[0], weight.shape[0], *x.shape[2:])
        grad_weight, grad_bias, grad_gamma, grad_beta = _grey_block_gradients(
            grad_out,
            (centred_patches, weight, _rows(out), invstd, scale),
            z_shape,
            bias is not None,
        )
        if grad_bias is None:
            # A Function's outputs are tensors; the caller drops this one.
            grad_bias = gamma.new_zeros(())
        return grad_weight, grad_bias, grad_gamma, grad_beta

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_out, x, weight, bias, gamma, beta, ctx.eps, *_ = inputs
        ctx.save_for_backward(grad_out, x, weight, bias, gamma, beta)

    @staticmethod
    @once_differentiable
    def backward(ctx, *cotangents):
        grad_out, x, weight, bias, gamma, beta = ctx.saved_tensors
        with torch.enable_grad():
            inputs = [grad_out, weight, bias, gamma, beta]
            inputs = [
                None if t is None else t.detach().requires_grad_() for t in inputs
            ]
            grad_out, *parameters = inputs
            out = _recomputed_grey_block(x, *parameters, ctx.eps)
            used = [i for i, p in enumerate(parameters) if p is not None]
            grads = torch.autograd.grad(
                out, [parameters[i] for i in used], grad_out, create_graph=True
            )
            # beta enters the gradients only through ReLU's mask: no derivative.
            second = torch.autograd.grad(
                grads,
                [grad_out, *(parameters[i] for i in used)],
                [cotangents[i] for i in used],
                allow_unused=True,
            )
        grad_parameters = [None] * 4
        for i, grad in zip(used, second[1:], strict=True):
            grad_parameters[i] = grad
        return second[0], None, *grad_parameters, None, None, None, None, None


def _recomputed_grey_block(x, weight, bias, gamma, beta, eps):
    """:class:`_GreyBlock`'s output in differentiable operations: the
    convolution as a product of patches (as in the fused block), BatchNorm
    and ReLU on the pool's winners only, picked with ``gather``."""
    n, _, h, w = x.shape
    rows = _patches(x) @ weight.reshape(weight.shape[0], -1).T
    z = _from_rows(rows if bias is None else rows + bias, n, h, w)
    mean = z.mean(dim=(0, 2, 3), keepdim=True)
    centred = z - mean
    var = (centred * centred).mean(dim=(0, 2, 3), keepdim=True)
    scale = gamma.view(1, -1, 1, 1) * torch.rsqrt(var + eps)
    with torch.no_grad():
        _, index = F.max_pool2d(centred * scale, 2, return_indices=True)
    picked = centred.flatten(2).gather(2, index.flatten(2)).view(index.shape)
    return F.relu(picked * scale + beta.view(1, -1, 1, 1))


def _grey_block_forward(x, weight, gamma, beta, eps):
    """:class:`_GreyBlock`'s output and the tensors its backward needs.

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
    """Gradients of :class:`_GreyBlock`'s weight, bias (None without
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


# Full-resolution elements per chunk of _GreyBlock (2 MiB in float32):
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


def fused_forward(
    body: nn.Module, params: dict, x: torch.Tensor
) -> torch.Tensor | None:
    """``body(x)`` with the parameters ``params`` (by name), its first block
    fused (:class:`_GreyBlock`); None where ``x`` is not grey images without
    gradient. Twice differentiable, also inside :func:`torch.func.grad`."""
    x = x.reshape(x.shape[0], *body.input_shape)
    if not _few_channels(x) or x.requires_grad:
        return None
    for index, block in enumerate(body.blocks):
        prefix = f"blocks.{index}"
        weight = params[f"{prefix}.0.weight"]
        bias = params.get(f"{prefix}.0.bias") if block[0].bias is not None else None
        gamma, beta = params[f"{prefix}.1.weight"], params[f"{prefix}.1.bias"]
        eps = block[1].eps
        if index == 0:
            x = _GreyBlock.apply(x, weight, bias, gamma, beta, eps)[0]
        else:
            z = F.conv2d(x, weight, bias, padding=1)
            z = F.batch_norm(z, None, None, gamma, beta, training=True, eps=eps)
            x = F.max_pool2d(F.relu(z), 2)
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
