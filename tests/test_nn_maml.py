"""Tests of the functional MAML core against a plain-autograd reference."""

import contextlib
import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from numpy.testing import assert_allclose
from torch import nn
from torch.func import functional_call

from sklearn_meta.nn.backbones import MLP, Conv4
from sklearn_meta.nn.maml import MAML

STRATEGIES = ("loop", "shared", "vmap")

# name -> MAML keyword arguments (besides the body) and inner steps
VARIANTS = {
    "maml-1": ({}, 1),
    "maml-3": ({}, 3),
    "first-order-1": ({"first_order": True}, 1),
    "first-order-3": ({"first_order": True}, 3),
    "anil-1": ({"inner_params": "head"}, 1),
    "anil-3": ({"inner_params": "head"}, 3),
    "anil-first-order-3": ({"inner_params": "head", "first_order": True}, 3),
    "meta-sgd-1": ({"learn_inner_lr": True}, 1),
    "meta-sgd-3": ({"learn_inner_lr": True}, 3),
}


def make_body(kind):
    if kind == "mlp":
        return MLP(6, (10,), 5), (6,)
    return Conv4((1, 14, 14), hidden_channels=8, n_blocks=2), (1, 14, 14)


def make_model(kind="mlp", seed=0, **kwargs):
    torch.manual_seed(seed)
    body, shape = make_body(kind)
    kwargs.setdefault("inner_lr", 0.3)
    model = MAML(body, **kwargs).double()
    with torch.no_grad():
        # A non-zero head makes the first inner step depend on the body.
        model.head.weight.normal_()
        model.head.bias.normal_()
        if model.inner_lrs is not None:
            for lr in model.inner_lrs.values():
                lr.uniform_(0.1, 0.5)
    return model, shape


def make_batch(
    shape, n_tasks=2, n_way=3, k_shot=2, n_query=3, seed=1, regression=False
):
    generator = torch.Generator().manual_seed(seed)

    def draw(n):
        return torch.randn(n_tasks, n, *shape, generator=generator, dtype=torch.float64)

    support_x, query_x = draw(n_way * k_shot), draw(n_way * n_query)
    if regression:
        support_y = torch.randn(n_tasks, n_way * k_shot, generator=generator)
        query_y = torch.randn(n_tasks, n_way * n_query, generator=generator)
        return support_x, support_y.double(), query_x, query_y.double()
    support_y = torch.arange(n_way).repeat(k_shot).repeat(n_tasks, 1)
    query_y = torch.arange(n_way).repeat(n_query).repeat(n_tasks, 1)
    return support_x, support_y, query_x, query_y


def task_loss(output, target, regression):
    if regression:
        return F.mse_loss(output, target)
    return F.cross_entropy(output, target)


def reference_meta_gradient(model, support_x, support_y, query_x, query_y, n_steps):
    """learn2learn's algorithm: per task, inner steps with torch.autograd.grad
    (create_graph=True unless first order) on a copy of the parameters, then
    the task's query loss back-propagated and accumulated."""
    regression = model.task == "regression"
    n_tasks = support_x.shape[0]
    n_classes = 1 if regression else int(support_y.max()) + 1
    body_names = [name for name, _ in model.body.named_parameters()]
    model.zero_grad()

    def predict(params, x):
        body = {name: params[f"body.{name}"] for name in body_names}
        output = functional_call(model.body, body, (x,))
        output = output @ params["head.weight"].T + params["head.bias"]
        return output.squeeze(-1) if regression else output

    for t in range(n_tasks):
        params = {f"body.{n}": p for n, p in model.body.named_parameters()}
        params["head.weight"] = model.head.weight.expand(n_classes, -1)
        params["head.bias"] = model.head.bias.expand(n_classes)
        for _ in range(n_steps):
            loss = task_loss(predict(params, support_x[t]), support_y[t], regression)
            names = model.adapted_names
            grads = torch.autograd.grad(
                loss, [params[n] for n in names], create_graph=not model.first_order
            )
            params = dict(params)
            for name, grad in zip(names, grads, strict=True):
                if model.learn_inner_lr:
                    lr = model.inner_lrs[name.replace(".", "-")]
                else:
                    lr = model.inner_lr
                params[name] = params[name] - lr * grad
        query_loss = task_loss(predict(params, query_x[t]), query_y[t], regression)
        (query_loss / n_tasks).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def our_meta_gradient(model, support_x, support_y, query_x, query_y, n_steps):
    model.zero_grad()
    output = model(support_x, support_y, query_x, n_steps)
    if model.task == "regression":
        loss = F.mse_loss(output, query_y)
    else:
        loss = F.cross_entropy(
            output.reshape(-1, output.shape[-1]), query_y.reshape(-1)
        )
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def max_error(expected, actual):
    assert expected.keys() == actual.keys()
    return max((expected[n] - actual[n]).abs().max().item() for n in expected)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("kind", ["mlp", "conv4"])
def test_meta_gradient_matches_reference(kind, variant):
    """Every strategy's meta-gradient equals the per-task autograd reference."""
    kwargs, n_steps = VARIANTS[variant]
    model, shape = make_model(kind, **kwargs)
    batch = make_batch(shape)
    expected = reference_meta_gradient(model, *batch, n_steps)
    assert max(g.abs().max().item() for g in expected.values()) > 1e-3
    if kwargs.get("inner_params") == "head":
        # ANIL adapts the head only, but the body still gets an outer gradient.
        # (Some gradients are zero by construction: biases before BatchNorm,
        # and the replicated head's bias in first order.)
        body = [g for name, g in expected.items() if name.startswith("body.")]
        assert max(g.abs().max().item() for g in body) > 1e-3
    for strategy in STRATEGIES:
        model.strategy = strategy
        actual = our_meta_gradient(model, *batch, n_steps)
        assert max_error(expected, actual) < 1e-5, strategy


def episode_loss(output, target):
    if output.dim() == target.dim():
        return F.mse_loss(output, target)
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


@contextlib.contextmanager
def torch_threads(n):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def meta_backward_gradient(model, batch, n_steps):
    model.zero_grad()
    loss, output = model.meta_backward(*batch, episode_loss, n_steps)
    assert not loss.requires_grad and not output.requires_grad
    expected_loss = episode_loss(output, batch[3])
    assert_allclose(loss.item(), expected_loss.item(), rtol=1e-12)
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("kind", ["mlp", "conv4"])
def test_meta_backward_matches_reference(kind, variant, threads):
    """Task-by-task backward, on one thread or tasks side by side on two,
    gives the reference meta-gradient and leaves the thread count alone."""
    kwargs, n_steps = VARIANTS[variant]
    model, shape = make_model(kind, **kwargs)
    batch = make_batch(shape, n_tasks=3)
    expected = reference_meta_gradient(model, *batch, n_steps)
    with torch_threads(threads):
        actual = meta_backward_gradient(model, batch, n_steps)
        assert torch.get_num_threads() == threads
    assert max_error(expected, actual) < 1e-5


def test_meta_backward_is_deterministic_across_threads():
    """Tasks finish in any order on two threads; the sum is taken in task order."""
    model, shape = make_model("conv4", learn_inner_lr=True)
    batch = make_batch(shape, n_tasks=5)
    with torch_threads(2):
        runs = [meta_backward_gradient(model, batch, 2) for _ in range(3)]
    for run in runs[1:]:
        assert max_error(runs[0], run) == 0.0


def test_meta_backward_accumulates_like_backward():
    """Like backward(), meta_backward adds to gradients already there."""
    model, shape = make_model("mlp")
    batch = make_batch(shape)
    once = meta_backward_gradient(model, batch, 1)
    model.meta_backward(*batch, episode_loss, 1)
    for name, param in model.named_parameters():
        assert_allclose(param.grad, 2 * once[name], rtol=1e-12)


@pytest.mark.parametrize("strategy", ["shared", "vmap"])
def test_meta_backward_falls_back_to_forward(strategy):
    """Strategies that batch tasks, and Reptile, back-propagate the meta-batch."""
    model, shape = make_model("conv4", strategy=strategy)
    batch = make_batch(shape)
    expected = our_meta_gradient(model, *batch, 2)
    assert max_error(expected, meta_backward_gradient(model, batch, 2)) < 1e-12
    reptile, _ = make_model("conv4", algorithm="reptile")
    reptile.zero_grad()
    output = reptile(*batch[:3], 2)
    (episode_loss(output, batch[3]) + reptile.regularization()).backward()
    expected = {n: p.grad.clone() for n, p in reptile.named_parameters()}
    assert max_error(expected, meta_backward_gradient(reptile, batch, 2)) < 1e-12


def test_meta_backward_with_running_statistics_stays_in_one_thread():
    """A BatchNorm that updates its buffers is never run from two threads."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5))
    model = MAML(body, embedding_dim=5, inner_lr=0.3).double()
    batch = make_batch((6,), n_tasks=4)
    with torch_threads(2):
        gradient = meta_backward_gradient(model, batch, 1)
    model.zero_grad()
    for t in range(4):
        output = model(*(x[t : t + 1] for x in batch[:3]), 1)
        (episode_loss(output, batch[3][t : t + 1]) / 4).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert max_error(expected, gradient) < 1e-12


@pytest.mark.parametrize("inner_params", ["all", "head"])
def test_regression_meta_gradient_and_shapes(inner_params):
    """Regression: (tasks, query) outputs and the reference meta-gradient."""
    model, shape = make_model(
        "mlp", task="regression", inner_params=inner_params, learn_inner_lr=True
    )
    with torch.no_grad():
        for lr in model.inner_lrs.values():
            lr.uniform_(0.01, 0.05)
    batch = make_batch(shape, regression=True)
    support_x, support_y, query_x, _ = batch
    assert model(support_x, support_y, query_x).shape == query_x.shape[:2]
    expected = reference_meta_gradient(model, *batch, 2)
    for strategy in STRATEGIES:
        model.strategy = strategy
        assert max_error(expected, our_meta_gradient(model, *batch, 2)) < 1e-5
    model.strategy = "auto"
    with torch_threads(2):
        assert max_error(expected, meta_backward_gradient(model, batch, 2)) < 1e-5
    params = model.adapt(support_x[0], support_y[0])
    assert params["head.weight"].shape == (1, model.embedding_dim)
    assert model.predict(query_x[0], params).shape == (query_x.shape[1],)
    assert model.embed(query_x[0], params).shape == (query_x.shape[1], 5)


@pytest.mark.parametrize("inner_params", ["all", "head"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batch_norm_statistics_stay_per_task(strategy, inner_params):
    """A task's query predictions do not change when another task changes."""
    model, shape = make_model("conv4", strategy=strategy, inner_params=inner_params)
    support_x, support_y, query_x, _ = make_batch(shape)
    before = model(support_x, support_y, query_x, 2)
    support_x[1] = 10 * support_x[1] + 3
    query_x[1] = 5 * query_x[1] - 1
    after = model(support_x, support_y, query_x, 2)
    assert_allclose(after[0].detach(), before[0].detach(), atol=1e-12)
    assert (after[1] - before[1]).abs().max() > 1e-3
    alone = model(support_x[:1], support_y[:1], query_x[:1], 2)
    assert_allclose(alone[0].detach(), before[0].detach(), atol=1e-12)


@pytest.mark.parametrize("inner_params", ["all", "head"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_forward_under_no_grad(strategy, inner_params):
    """Validation under torch.no_grad still adapts, with the same predictions."""
    model, shape = make_model("conv4", strategy=strategy, inner_params=inner_params)
    support_x, support_y, query_x, _ = make_batch(shape)
    with_grad = model(support_x, support_y, query_x, 2)
    with torch.no_grad():
        without = model(support_x, support_y, query_x, 2)
    assert not without.requires_grad
    assert_allclose(without, with_grad.detach(), atol=1e-10)
    unadapted = model(support_x, support_y, query_x, 0)
    assert (unadapted - with_grad).abs().max() > 1e-3
    assert model.regularization().item() == 0


def test_head_serves_any_number_of_classes():
    """Meta-trained on 3-way tasks, the model adapts to 2 or 5 classes."""
    model, shape = make_model("mlp")
    support_x, support_y, query_x, query_y = make_batch(shape, n_way=3)
    our_meta_gradient(model, support_x, support_y, query_x, query_y, 1)
    for n_classes in (2, 5):
        x, y, _, _ = make_batch(shape, n_tasks=1, n_way=n_classes, k_shot=3)
        with torch.no_grad():
            before = model.predict(x[0], n_classes=n_classes)
        assert before.shape == (x.shape[1], n_classes)
        # Replicated rows: before adaptation every class gets the same logit.
        assert_allclose(before - before[:, :1], 0, atol=1e-12)
        params = model.adapt(x[0], y[0], n_steps=5)
        with torch.no_grad():
            after = model.predict(x[0], params)
        assert after.shape == (x.shape[1], n_classes)
        assert F.cross_entropy(after, y[0]) < F.cross_entropy(before, y[0])


def test_meta_gradient_invariant_to_label_order():
    """Renaming the classes of an episode does not change the meta-gradient."""
    model, shape = make_model("mlp")
    support_x, support_y, query_x, query_y = make_batch(shape)
    expected = our_meta_gradient(model, support_x, support_y, query_x, query_y, 2)
    permutation = torch.tensor([2, 0, 1])
    renamed = (support_x, permutation[support_y], query_x, permutation[query_y])
    assert max_error(expected, our_meta_gradient(model, *renamed, 2)) < 1e-12


def test_adapt_continues_from_params():
    """Two calls of one step equal one call of two steps (partial_fit's contract)."""
    model, shape = make_model("conv4")
    support_x, support_y, _, _ = make_batch(shape)
    once = model.adapt(support_x[0], support_y[0], n_steps=2)
    twice = model.adapt(support_x[0], support_y[0], n_steps=1)
    twice = model.adapt(support_x[0], support_y[0], n_steps=1, params=twice)
    assert once.keys() == twice.keys()
    for name in once:
        assert not once[name].requires_grad
        assert_allclose(twice[name], once[name], atol=1e-12)
    with pytest.raises(ValueError, match="head for 3 classes"):
        model.adapt(support_x[0], support_y[0], n_classes=4, params=once)


def test_adapt_with_create_graph_is_differentiable():
    """adapt(create_graph=True) keeps the path to the initialisation."""
    model, shape = make_model("mlp")
    support_x, support_y, query_x, query_y = make_batch(shape, n_tasks=1)
    params = model.adapt(support_x[0], support_y[0], n_steps=2, create_graph=True)
    model.zero_grad()
    F.cross_entropy(model.predict(query_x[0], params), query_y[0]).backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    expected = reference_meta_gradient(model, support_x, support_y, query_x, query_y, 2)
    assert max_error(expected, ours) < 1e-10


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reptile_direction(strategy):
    """Reptile's gradient is init - adapted, averaged over tasks; the loss value
    stays the query loss."""
    model, shape = make_model("conv4", algorithm="reptile", strategy=strategy)
    support_x, support_y, query_x, query_y = make_batch(shape)
    model.zero_grad()
    output = model(support_x, support_y, query_x, 2)
    assert not output.requires_grad
    query_loss = F.cross_entropy(output.reshape(-1, 3), query_y.reshape(-1))
    loss = query_loss + model.regularization()
    assert loss.item() == query_loss.item()
    loss.backward()
    init = model.initial_parameters(3)
    adapted = [model.adapt(support_x[t], support_y[t], n_steps=2) for t in range(2)]
    largest = 0.0
    for name, param in model.named_parameters():
        direction = sum(init[name] - a[name] for a in adapted) / 2
        if name.startswith("head."):
            # The shared row was replicated per class: its gradient sums them,
            # and cross-entropy gradients of a linear head sum to zero over
            # the classes, so Reptile leaves the shared row where it is.
            direction = direction.sum(dim=0, keepdim=name == "head.weight")
            direction = direction.reshape(param.shape)
            assert_allclose(direction.detach(), 0, atol=1e-12)
        largest = max(largest, direction.abs().max().item())
        assert_allclose(param.grad, direction.detach(), atol=1e-12)
    assert largest > 1e-4


def test_learned_inner_lr_starts_at_inner_lr():
    """Meta-SGD step sizes start at inner_lr and receive a meta-gradient."""
    torch.manual_seed(0)
    model = MAML(MLP(6, (10,), 5), inner_lr=0.25, learn_inner_lr=True).double()
    assert set(model.inner_lrs) == {n.replace(".", "-") for n in model.adapted_names}
    for name, param in dict(model.named_parameters()).items():
        if name in model.adapted_names:
            lr = model.inner_lrs[name.replace(".", "-")]
            assert lr.shape == param.shape
            assert torch.all(lr == 0.25)
    # Two steps: the replicated head gives every class the same logit at the
    # start, so the first step's gradient for the body is zero.
    grads = our_meta_gradient(model, *make_batch((6,)), 2)
    assert grads["inner_lrs.body-layers-0-weight"].abs().max() > 0


def test_no_inner_steps_predicts_with_the_initialisation():
    """n_steps=0 gives the initialisation's (class-symmetric) predictions."""
    model, shape = make_model("conv4")
    support_x, support_y, query_x, _ = make_batch(shape)
    for strategy in STRATEGIES:
        model.strategy = strategy
        output = model(support_x, support_y, query_x, 0)
        expected = torch.stack([model.predict(x, n_classes=3) for x in query_x])
        assert_allclose(output.detach(), expected.detach(), atol=1e-12)


def test_options_are_validated():
    """Bad options fail with a ValueError that names them."""
    body = MLP(4, (8,), 3)
    for kwargs, match in [
        ({"inner_params": "body"}, "inner_params"),
        ({"algorithm": "fomaml"}, "algorithm"),
        ({"task": "ranking"}, "task"),
        ({"strategy": "threads"}, "strategy"),
        ({"inner_steps": -1}, "inner_steps"),
        ({"algorithm": "reptile", "learn_inner_lr": True}, "learn_inner_lr"),
        ({"algorithm": "reptile", "inner_params": "head"}, "inner_params"),
        ({"fused": "yes"}, "fused"),
    ]:
        with pytest.raises(ValueError, match=match):
            MAML(body, **kwargs)
    with pytest.raises(ValueError, match="embedding_dim"):
        MAML(nn.Flatten())
    with pytest.raises(ValueError, match="n_classes"):
        MAML(body).initial_parameters()


def test_running_statistics_body_needs_the_loop():
    """A body with a running-statistics BatchNorm runs only task by task."""
    body = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5))
    support_x, support_y, query_x, _ = make_batch((6,))
    model = MAML(body, embedding_dim=5, strategy="vmap").double()
    with pytest.raises(ValueError, match="running statistics"):
        model(support_x, support_y, query_x)
    model.strategy = "auto"
    assert model(support_x, support_y, query_x).shape == (2, 9, 3)


@pytest.mark.parametrize("inner_params", ["all", "head"])
@pytest.mark.parametrize("first_order", [False, True])
def test_fused_blocks_on_ties_negative_scales_and_odd_sizes(first_order, inner_params):
    """Fused Conv4 blocks match the reference where pooling is delicate: flat
    image regions (ties), negative BatchNorm scales (the pool takes minima) and
    odd sizes (the pool drops a row and a column)."""
    torch.manual_seed(0)
    body = Conv4((2, 10, 10), hidden_channels=6, n_blocks=3)
    model = MAML(
        body, inner_lr=0.3, first_order=first_order, inner_params=inner_params
    ).double()
    with torch.no_grad():
        model.head.weight.normal_()
        for block in body.blocks:
            block[1].weight[::2] *= -1
    support_x, support_y, query_x, query_y = make_batch((2, 10, 10))
    support_x[:, :, :, :4, :4] = 0.5
    query_x[:, :, 1, 5:, :] = -1.0
    expected = reference_meta_gradient(model, support_x, support_y, query_x, query_y, 2)
    for fused in (True, False):
        model.fused = fused
        actual = our_meta_gradient(model, support_x, support_y, query_x, query_y, 2)
        assert max_error(expected, actual) < 1e-5


class _DataDependentBody(nn.Module):
    """A user's layer that vmap cannot run (it reads a value with .item())."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 5)
        self.out_features = 5

    def forward(self, x):
        scale = 2.0 if x.sum().item() > 0 else 1.0
        return self.linear(x) * scale


def test_auto_strategy_runs_bodies_vmap_cannot():
    """strategy='auto' runs a user's own layers task by task."""
    torch.manual_seed(0)
    model = MAML(_DataDependentBody()).double()
    support_x, support_y, query_x, query_y = make_batch((6,))
    expected = reference_meta_gradient(model, support_x, support_y, query_x, query_y, 2)
    actual = our_meta_gradient(model, support_x, support_y, query_x, query_y, 2)
    assert max_error(expected, actual) < 1e-10
    model.strategy = "vmap"
    with pytest.raises(RuntimeError):
        model(support_x, support_y, query_x)


def test_pickle_and_deepcopy_after_a_reptile_step():
    """The module pickles after training steps (skorch pickles its module)."""
    model, shape = make_model("mlp", algorithm="reptile")
    support_x, support_y, query_x, _ = make_batch(shape)
    model(support_x, support_y, query_x)
    assert model.regularization().requires_grad
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        output = clone(support_x, support_y, query_x)
        assert_allclose(output, model(support_x, support_y, query_x), atol=1e-12)


@pytest.mark.parametrize("images_per_chunk", [None, 1, 3, 8])
def test_fused_blocks_keep_statistics_per_group(images_per_chunk, monkeypatch):
    """With groups, the fused Conv4 equals the body run on each group apart
    (the one-call ANIL body used off the CPU), however the grey first block
    cuts the images into chunks: parts of a group (1, 3: one chunk of an
    image fewer) or several groups (8: two groups, then one)."""
    from sklearn_meta.nn import maml as maml_module
    from sklearn_meta.nn.maml import _fused_conv4_forward

    if images_per_chunk is not None:
        # The first block's z is 4 channels of 9x9 per image.
        monkeypatch.setattr(maml_module, "_CHUNK_ELEMENTS", images_per_chunk * 4 * 81)

    torch.manual_seed(0)
    body = Conv4((1, 9, 9), hidden_channels=4, n_blocks=2).double()
    with torch.no_grad():
        body.blocks[0][1].weight[1] = -0.5
    params = dict(body.named_parameters())
    x = torch.randn(3, 4, 1, 9, 9, dtype=torch.float64)
    x[1] = 5 * x[1] + 2
    fused = _fused_conv4_forward(body, params, x.reshape(12, 1, 9, 9), groups=3)
    apart = torch.cat([body(x[g]) for g in range(3)])
    assert_allclose(fused.detach(), apart.detach(), atol=1e-12)
    weights = torch.randn_like(apart)
    expected = torch.autograd.grad((apart * weights).sum(), list(params.values()))
    actual = torch.autograd.grad((fused * weights).sum(), list(params.values()))
    for e, a in zip(expected, actual, strict=True):
        assert_allclose(a, e, atol=1e-10)


@pytest.mark.parametrize("conv_bias", [True, False])
def test_twice_differentiable_grey_block_matches_native(conv_bias):
    """The first Conv4 block of a second-order support pass (fused value and
    gradient, recomputed second derivative) equals native operations in all
    three, with a negative BatchNorm scale among the channels."""
    from sklearn_meta.nn.maml import _native_conv_block, _TwiceDifferentiableGreyBlock

    torch.manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, dtype=torch.float64).requires_grad_()

    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    weight, beta = leaf(5, 1, 3, 3), leaf(5)
    bias = leaf(5) if conv_bias else None
    gamma = torch.tensor([1.0, -0.5, 2.0, 0.7, -1.2], dtype=torch.float64)
    gamma.requires_grad_()
    params = [p for p in (weight, bias, gamma, beta) if p is not None]
    target = torch.randn(4, 5, 4, 4, dtype=torch.float64)

    def inner_gradient(block):
        out = block(x, weight, bias, gamma, beta, 1e-5)
        # Squared: the loss's gradient depends on the output, so the second
        # derivative also runs through the block's own backward.
        loss = ((out - target) ** 2).sum()
        return out, torch.autograd.grad(loss, params, create_graph=True)

    fused_out, fused_grads = inner_gradient(_TwiceDifferentiableGreyBlock.apply)
    native_out, native_grads = inner_gradient(_native_conv_block)
    assert_allclose(fused_out.detach(), native_out.detach(), atol=1e-12)
    for fused, native in zip(fused_grads, native_grads, strict=True):
        assert_allclose(fused.detach(), native.detach(), atol=1e-10)
    directions = [torch.randn_like(g) for g in native_grads]
    fused_second = torch.autograd.grad(fused_grads, params, directions)
    native_second = torch.autograd.grad(native_grads, params, directions)
    assert max(g.abs().max().item() for g in native_second) > 1e-3
    for fused, native in zip(fused_second, native_second, strict=True):
        assert_allclose(fused, native, atol=1e-9)


def test_second_order_support_step_keeps_less_memory_when_fused():
    """A second-order inner step on grey images keeps far fewer bytes for the
    outer backward with the fused first block than with native layers."""
    torch.manual_seed(0)
    model = MAML(Conv4((1, 28, 28), hidden_channels=16, n_blocks=2), inner_lr=0.3)
    support_x = torch.randn(5, 1, 28, 28)
    support_y = torch.arange(5)
    kept = {}
    for fused in (True, False):
        model.fused = fused
        storages = {}

        def pack(tensor, storages=storages):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            params = model.adapt(support_x, support_y, n_steps=1, create_graph=True)
        assert params["body.blocks.0.0.weight"].requires_grad
        kept[fused] = sum(storages.values())
    assert kept[True] < 0.5 * kept[False]
