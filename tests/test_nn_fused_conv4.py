"""Tests of Conv4's fused blocks (sklearn_meta/nn/_fused_conv4.py)."""

import pytest
import torch
from numpy.testing import assert_allclose
from test_nn_maml import make_batch, max_error, meta_backward_gradient

from sklearn_meta.nn import _fused_conv4
from sklearn_meta.nn.backbones import Conv4, calibrate_batch_norm
from sklearn_meta.nn.executors import TaskThreads
from sklearn_meta.nn.maml import MAML


def grey_conv4(**kwargs):
    torch.manual_seed(0)
    return Conv4((1, 9, 9), hidden_channels=4, n_blocks=2, **kwargs).double()


def value_and_gradients(forward, params, x):
    output = forward(params, x)
    weights = torch.randn(output.shape, generator=torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(
        (output * weights.double()).sum(), list(params.values())
    )
    return output.detach(), grads


@pytest.mark.parametrize("input_shape", [(1, 9, 9), (3, 10, 11)])
def test_fused_forward_matches_the_native_body(input_shape):
    """Value and gradients of the fused pass equal the body's own layers, on
    grey and colour images, with odd sizes (the pool drops a row and column),
    flat regions (ties) and a negative BatchNorm scale (the pool takes minima)."""
    torch.manual_seed(0)
    body = Conv4(input_shape, hidden_channels=4, n_blocks=2, out_features=7).double()
    with torch.no_grad():
        body.blocks[0][1].weight[1] = -0.5
    params = dict(body.named_parameters())
    x = torch.randn(6, *input_shape, dtype=torch.float64)
    x[:, :, :4, :4] = 0.5
    assert _fused_conv4.can_fuse(body, x)
    native = value_and_gradients(
        lambda p, x: torch.func.functional_call(body, p, (x,)), params, x
    )
    fused = value_and_gradients(body.fused_forward, params, x)
    assert_allclose(fused[0], native[0], atol=1e-12)
    for actual, expected in zip(fused[1], native[1], strict=True):
        assert_allclose(actual, expected, atol=1e-10)


@pytest.mark.parametrize("bias", [True, False])
def test_twice_differentiated_pass_matches_the_native_body(bias):
    """A fused pass inside torch.func.grad (a support pass of second-order
    MAML): its gradient, and the derivative of that gradient, equal the
    native layers', with and without convolution bias,
    a negative BatchNorm scale and ties in the pool."""
    torch.manual_seed(0)
    body = Conv4((2, 9, 9), hidden_channels=4, n_blocks=2, out_features=5).double()
    if not bias:
        body.blocks[0][0].bias = None
    with torch.no_grad():
        body.blocks[0][1].weight[1] = -0.5
    params = dict(body.named_parameters())
    x = torch.randn(6, 2, 9, 9, dtype=torch.float64)
    x[:, :, :4, :4] = 0.5
    target = torch.randn(6, 5, dtype=torch.float64)
    cotangents = {n: torch.randn_like(p) for n, p in params.items()}

    def second_derivative(forward):
        def loss(p):
            return ((forward(p, x) - target) ** 2).sum()

        grads = torch.func.grad(loss)(params)
        inner = sum((grads[n] * cotangents[n]).sum() for n in grads)
        return grads, torch.autograd.grad(inner, list(params.values()))

    native = second_derivative(lambda p, x: torch.func.functional_call(body, p, (x,)))
    fused = second_derivative(body.fused_forward)
    for name in params:
        assert_allclose(fused[0][name].detach(), native[0][name].detach(), atol=1e-10)
    for actual, expected in zip(fused[1], native[1], strict=True):
        assert_allclose(actual, expected, atol=1e-9)


def test_nothing_is_fused_beyond_three_channels():
    """With more than three input channels the fused block does not apply
    (None: the caller runs the native layers)."""
    torch.manual_seed(0)
    body = Conv4((4, 9, 9), hidden_channels=4, n_blocks=2).double()
    x = torch.randn(3, 4, 9, 9, dtype=torch.float64)
    assert body.fused_forward(dict(body.named_parameters()), x) is None


@pytest.mark.parametrize("images_per_chunk", [None, 1, 5, 12])
def test_grey_block_is_the_same_however_it_is_chunked(images_per_chunk, monkeypatch):
    """The grey first block cuts the images into chunks (one image, a few,
    all); value and gradients stay those of the native layers, with
    statistics over all the images."""
    if images_per_chunk is not None:
        # The first block's z is 4 channels of 9x9 per image.
        monkeypatch.setattr(_fused_conv4, "_CHUNK_ELEMENTS", images_per_chunk * 4 * 81)
    body = grey_conv4()
    with torch.no_grad():
        body.blocks[0][1].weight[1] = -0.5
    params = dict(body.named_parameters())
    x = torch.randn(12, 1, 9, 9, dtype=torch.float64)
    x[4:8] = 5 * x[4:8] + 2
    fused = _fused_conv4.fused_forward(body, params, x)
    native = body(x)
    assert_allclose(fused.detach(), native.detach(), atol=1e-12)
    weights = torch.randn_like(native)
    expected = torch.autograd.grad((native * weights).sum(), list(params.values()))
    actual = torch.autograd.grad((fused * weights).sum(), list(params.values()))
    for e, a in zip(expected, actual, strict=True):
        assert_allclose(a, e, atol=1e-10)


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("inner_params", ["all", "head"])
def test_meta_gradient_is_the_same_with_kernels_on_and_off(first_order, inner_params):
    """MAML's meta-gradient through the fused passes (support and query)
    equals the one through the native layers, where pooling is delicate."""
    torch.manual_seed(0)
    body = Conv4((2, 10, 10), hidden_channels=6, n_blocks=3)
    model = MAML(
        body,
        inner_lr=0.3,
        first_order=first_order,
        inner_params=inner_params,
        executor=TaskThreads(),
    ).double()
    with torch.no_grad():
        model.head.weight.normal_()
        for block in body.blocks:
            block[1].weight[::2] *= -1
    batch = make_batch((2, 10, 10))
    batch[0][:, :, :, :4, :4] = 0.5
    batch[2][:, :, 1, 5:, :] = -1.0
    used = []
    fused_forward = _fused_conv4.fused_forward

    def counting(*args):
        used.append(True)
        return fused_forward(*args)

    gradients = {}
    for fused in (True, False):
        body.fused = fused
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_fused_conv4, "fused_forward", counting)
            gradients[fused] = meta_backward_gradient(model, batch, 2)
        assert bool(used) == fused
        used.clear()
    assert max_error(gradients[False], gradients[True]) < 1e-10


def test_kernels_stay_out_where_they_do_not_reproduce_the_body():
    """Stride-2 convolutions, calibrated statistics in eval mode and a
    vectorised map are left to the native layers."""
    x = torch.randn(4, 1, 9, 9, dtype=torch.float64)
    assert not _fused_conv4.can_fuse(grey_conv4(downsample="stride"), x)
    body = grey_conv4()
    assert _fused_conv4.can_fuse(body, x)
    calibrate_batch_norm(body, x)
    body.eval()
    assert not _fused_conv4.can_fuse(body, x)
    body.train()
    assert _fused_conv4.can_fuse(body, x)
    body.fused = False
    assert body.fused_forward(dict(body.named_parameters()), x) is None
