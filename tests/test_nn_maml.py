"""Tests of the MAML core against a plain-autograd reference, on every executor."""

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
from sklearn_meta.nn.executors import TaskThreads, TaskVmap
from sklearn_meta.nn.maml import MAML

EXECUTORS = {"in-order": None, "threads": TaskThreads(), "vmap": TaskVmap()}

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


def episode_loss(output, target):
    if output.dim() == target.dim():
        return F.mse_loss(output, target)
    return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def forward_gradient(model, batch, n_steps):
    """forward_with_penalty, then one backward over the meta-batch."""
    model.zero_grad()
    output, penalty = model.forward_with_penalty(*batch[:3], n_steps)
    (episode_loss(output, batch[3]) + penalty).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def meta_backward_gradient(model, batch, n_steps):
    model.zero_grad()
    loss, output = model.meta_backward(*batch, episode_loss, n_steps)
    assert not loss.requires_grad and not output.requires_grad
    assert_allclose(loss.item(), episode_loss(output, batch[3]).item(), rtol=1e-12)
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def max_error(expected, actual):
    assert expected.keys() == actual.keys()
    return max((expected[n] - actual[n]).abs().max().item() for n in expected)


@contextlib.contextmanager
def torch_threads(n):
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("executor", list(EXECUTORS))
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("kind", ["mlp", "conv4"])
def test_meta_gradient_matches_reference(kind, variant, executor):
    """forward + backward and meta_backward give the per-task autograd
    reference meta-gradient on every executor (threads: two torch threads,
    three tasks, so tasks run side by side and one waits)."""
    kwargs, n_steps = VARIANTS[variant]
    model, shape = make_model(kind, executor=EXECUTORS[executor], **kwargs)
    batch = make_batch(shape, n_tasks=3)
    expected = reference_meta_gradient(model, *batch, n_steps)
    assert max(g.abs().max().item() for g in expected.values()) > 1e-3
    if kwargs.get("inner_params") == "head":
        # ANIL adapts the head only, but the body still gets an outer gradient.
        body = [g for name, g in expected.items() if name.startswith("body.")]
        assert max(g.abs().max().item() for g in body) > 1e-3
    with torch_threads(2):
        assert max_error(expected, forward_gradient(model, batch, n_steps)) < 1e-5
        assert max_error(expected, meta_backward_gradient(model, batch, n_steps)) < 1e-5
        assert torch.get_num_threads() == 2


def test_meta_backward_is_deterministic_across_threads():
    """Tasks finish in any order on two threads; the sum is taken in task order."""
    model, shape = make_model("conv4", learn_inner_lr=True, executor=TaskThreads())
    batch = make_batch(shape, n_tasks=5)
    with torch_threads(2):
        runs = [meta_backward_gradient(model, batch, 2) for _ in range(3)]
    for run in runs[1:]:
        assert max_error(runs[0], run) == 0.0


@pytest.mark.parametrize("executor", list(EXECUTORS))
def test_meta_backward_accumulates_like_backward(executor):
    """Like backward(), meta_backward adds to gradients already there."""
    model, shape = make_model("mlp", executor=EXECUTORS[executor])
    batch = make_batch(shape)
    once = meta_backward_gradient(model, batch, 1)
    model.meta_backward(*batch, episode_loss, 1)
    for name, param in model.named_parameters():
        assert_allclose(param.grad, 2 * once[name], rtol=1e-12)


class UserConvNet(nn.Module):
    """A user's own network with torch's BatchNorm2d (running statistics)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, stride=2),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.out_features = 4 * 6 * 6

    def forward(self, x):
        assert x.dim() == 4, "the body receives (n, C, H, W) samples"
        return self.layers(x)


@pytest.mark.parametrize("executor", ["in-order", "threads"])
def test_user_batch_norm_gets_per_task_statistics(executor):
    """A user's nn.BatchNorm2d fed (tasks, n, 1, 28, 28): each task is
    normalised by its own batch statistics (the reference meta-gradient,
    tasks side by side on two threads) and no running statistics change."""
    torch.manual_seed(0)
    model = MAML(UserConvNet(), inner_lr=0.3, executor=EXECUTORS[executor]).double()
    batch = make_batch((1, 28, 28), n_tasks=3)
    before = {n: b.clone() for n, b in model.body.named_buffers()}
    with torch_threads(2):
        actual = meta_backward_gradient(model, batch, 2)
    for name, buffer in model.body.named_buffers():
        assert torch.equal(buffer, before[name]), name
    expected = reference_meta_gradient(model, *batch, 2)
    assert max_error(expected, actual) < 1e-5
    # After fit, eval mode uses the running statistics: one sample's output
    # does not depend on the others.
    model.eval()
    x = batch[2][0]
    assert_allclose(model.embed(x[:1]).detach(), model.embed(x)[:1].detach())


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
    for executor in EXECUTORS.values():
        model.executor = executor
        assert max_error(expected, forward_gradient(model, batch, 2)) < 1e-5
        assert max_error(expected, meta_backward_gradient(model, batch, 2)) < 1e-5
    params = model.adapt(support_x[0], support_y[0])
    assert params["head.weight"].shape == (1, model.embedding_dim)
    assert model.predict(query_x[0], params).shape == (query_x.shape[1],)
    assert model.embed(query_x[0], params).shape == (query_x.shape[1], 5)


@pytest.mark.parametrize("inner_params", ["all", "head"])
@pytest.mark.parametrize("executor", list(EXECUTORS))
def test_batch_norm_statistics_stay_per_task(executor, inner_params):
    """A task's query predictions do not change when another task changes."""
    model, shape = make_model(
        "conv4", executor=EXECUTORS[executor], inner_params=inner_params
    )
    support_x, support_y, query_x, _ = make_batch(shape)
    before = model(support_x, support_y, query_x, 2)
    support_x[1] = 10 * support_x[1] + 3
    query_x[1] = 5 * query_x[1] - 1
    after = model(support_x, support_y, query_x, 2)
    assert_allclose(after[0].detach(), before[0].detach(), atol=1e-12)
    assert (after[1] - before[1]).abs().max() > 1e-3
    alone = model(support_x[:1], support_y[:1], query_x[:1], 2)
    assert_allclose(alone[0].detach(), before[0].detach(), atol=1e-12)


@pytest.mark.parametrize("algorithm", ["maml", "imaml"])
@pytest.mark.parametrize("executor", list(EXECUTORS))
def test_forward_under_no_grad(executor, algorithm):
    """Evaluation under torch.no_grad still adapts, with the same predictions,
    also with the tasks on worker threads (grad mode is per thread)."""
    if algorithm == "imaml" and executor == "vmap":
        pytest.skip("iMAML's implicit node does not run under vmap")
    model, shape = make_model(
        "conv4", executor=EXECUTORS[executor], algorithm=algorithm
    )
    support_x, support_y, query_x, _ = make_batch(shape)
    with_grad = model(support_x, support_y, query_x, 2)
    with torch_threads(2), torch.no_grad():
        without = model(support_x, support_y, query_x, 2)
    assert not without.requires_grad
    assert_allclose(without, with_grad.detach(), atol=1e-10)
    unadapted = model(support_x, support_y, query_x, 0)
    assert (unadapted - with_grad).abs().max() > 1e-3


def test_head_serves_any_number_of_classes():
    """Meta-trained on 3-way tasks, the model adapts to 2 or 5 classes."""
    model, shape = make_model("mlp")
    meta_backward_gradient(model, make_batch(shape, n_way=3), 1)
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
    expected = forward_gradient(model, (support_x, support_y, query_x, query_y), 2)
    permutation = torch.tensor([2, 0, 1])
    renamed = (support_x, permutation[support_y], query_x, permutation[query_y])
    assert max_error(expected, forward_gradient(model, renamed, 2)) < 1e-12


@pytest.mark.parametrize("algorithm", ["maml", "imaml"])
def test_adapt_continues_from_params(algorithm):
    """Two calls of one step equal one call of two steps (partial_fit's
    contract), and equal the per-task function's adaptation under no_grad."""
    model, shape = make_model("conv4", algorithm=algorithm)
    support_x, support_y, query_x, _ = make_batch(shape)
    once = model.adapt(support_x[0], support_y[0], n_steps=2)
    twice = model.adapt(support_x[0], support_y[0], n_steps=1)
    twice = model.adapt(support_x[0], support_y[0], n_steps=1, params=twice)
    assert once.keys() == twice.keys()
    for name in once:
        assert not once[name].requires_grad
        assert_allclose(twice[name], once[name], atol=1e-12)
    with torch.no_grad():
        output = model(support_x[:1], support_y[:1], query_x[:1], 2)[0]
    assert_allclose(model.predict(query_x[0], once), output, atol=1e-12)
    with pytest.raises(ValueError, match="head for 3 classes"):
        model.adapt(support_x[0], support_y[0], n_classes=4, params=once)


@pytest.mark.parametrize("executor", list(EXECUTORS))
def test_reptile_direction(executor):
    """Reptile's gradient is init - adapted, averaged over tasks; the loss
    value stays the query loss."""
    model, shape = make_model(
        "conv4", algorithm="reptile", executor=EXECUTORS[executor]
    )
    support_x, support_y, query_x, query_y = make_batch(shape)
    output, penalty = model.forward_with_penalty(support_x, support_y, query_x, 2)
    assert not output.requires_grad and penalty.item() == 0
    gradient = meta_backward_gradient(
        model, (support_x, support_y, query_x, query_y), 2
    )
    assert max_error(gradient, forward_gradient(model, make_batch(shape), 2)) < 1e-12
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
        assert_allclose(gradient[name], direction.detach(), atol=1e-12)
    assert largest > 1e-4


def dense_imaml_meta_gradient(model, support_x, support_y, query_x, query_y, n_steps):
    """iMAML's meta-gradient with the linear system solved exactly: the inner
    problem by plain gradient descent, a dense Hessian of the support loss at
    its solution, torch.linalg.solve, then the chain rule to the shared head
    row (summed over the class rows it is replicated to)."""
    n_classes = int(support_y.max()) + 1
    init = {n: p.detach() for n, p in model.initial_parameters(n_classes).items()}
    names = list(init)
    shapes = [init[n].shape for n in names]
    sizes = [init[n].numel() for n in names]
    start = torch.cat([init[n].reshape(-1) for n in names])

    def unflatten(vector):
        parts = torch.split(vector, sizes)
        return {n: p.reshape(s) for n, p, s in zip(names, parts, shapes, strict=True)}

    def loss(vector, x, y):
        params = unflatten(vector)
        body = {n[5:]: p for n, p in params.items() if n.startswith("body.")}
        output = functional_call(model.body, body, (x,))
        output = output @ params["head.weight"].T + params["head.bias"]
        return F.cross_entropy(output, y)

    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for t in range(support_x.shape[0]):
        phi = start.clone()
        for _ in range(n_steps):
            phi = phi.requires_grad_()
            inner = loss(phi, support_x[t], support_y[t])
            inner = inner + model.imaml_lambda / 2 * ((phi - start) ** 2).sum()
            (gradient,) = torch.autograd.grad(inner, phi)
            phi = (phi - model.inner_lr * gradient).detach()
        hessian = torch.autograd.functional.hessian(
            lambda v, t=t: loss(v, support_x[t], support_y[t]), phi
        )
        query_gradient = torch.autograd.functional.jacobian(
            lambda v, t=t: loss(v, query_x[t], query_y[t]), phi
        )
        system = torch.eye(len(phi), dtype=phi.dtype) + hessian / model.imaml_lambda
        solution = unflatten(torch.linalg.solve(system, query_gradient))
        for name, value in solution.items():
            if name.startswith("head."):
                value = value.sum(dim=0).reshape(total[name].shape)
            total[name] += value / support_x.shape[0]
    return total


@pytest.mark.parametrize("executor", ["in-order", "threads"])
def test_imaml_meta_gradient_equals_dense_solve(executor):
    """iMAML's conjugate-gradient meta-gradient on a small float64 MLP equals
    the exact solve of the same linear system (dense Hessian) to 1e-6."""
    torch.manual_seed(0)
    model = MAML(
        MLP(3, (4,), 3),
        inner_lr=0.1,
        algorithm="imaml",
        imaml_lambda=2.0,
        cg_steps=60,
        executor=EXECUTORS[executor],
    ).double()
    with torch.no_grad():
        model.head.weight.normal_()
    batch = make_batch((3,), n_tasks=2)
    expected = dense_imaml_meta_gradient(model, *batch, n_steps=20)
    assert max(g.abs().max().item() for g in expected.values()) > 1e-3
    with torch_threads(2):
        actual = meta_backward_gradient(model, batch, 20)
    assert max_error(expected, actual) < 1e-6
    # A few CG steps already approximate it; one step does worse.
    model.cg_steps = 1
    assert max_error(expected, meta_backward_gradient(model, batch, 20)) > 1e-6


def test_imaml_regression_and_memory_independent_of_steps():
    """iMAML learns regression too, and the graph kept for the outer backward
    does not grow with the inner steps."""
    model, shape = make_model(
        "mlp", algorithm="imaml", task="regression", inner_lr=0.05
    )
    batch = make_batch(shape, regression=True)
    nodes = {}
    for n_steps in (1, 8):
        output = model(*batch[:3], n_steps)
        seen, stack = set(), [output.grad_fn]
        while stack:
            node = stack.pop()
            if node is not None and node not in seen:
                seen.add(node)
                stack.extend(next_node for next_node, _ in node.next_functions)
        nodes[n_steps] = len(seen)
        gradient = torch.autograd.grad(F.mse_loss(output, batch[3]), model.head.weight)
        assert gradient[0].abs().max() > 1e-4
    assert nodes[8] == nodes[1]


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
    grads = forward_gradient(model, make_batch((6,)), 2)
    assert grads["inner_lrs.body-layers-0-weight"].abs().max() > 0


@pytest.mark.parametrize("executor", list(EXECUTORS))
def test_no_inner_steps_predicts_with_the_initialisation(executor):
    """n_steps=0 gives the initialisation's (class-symmetric) predictions."""
    model, shape = make_model("conv4", executor=EXECUTORS[executor])
    support_x, support_y, query_x, _ = make_batch(shape)
    output = model(support_x, support_y, query_x, 0)
    expected = torch.stack([model.predict(x, n_classes=3) for x in query_x])
    assert_allclose(output.detach(), expected.detach(), atol=1e-12)


def test_options_are_validated():
    """Bad options and combinations fail with a ValueError that names them."""
    body = MLP(4, (8,), 3)
    for kwargs, match in [
        ({"inner_params": "body"}, "inner_params"),
        ({"algorithm": "fomaml"}, "algorithm"),
        ({"task": "ranking"}, "task"),
        ({"inner_steps": -1}, "inner_steps"),
        ({"algorithm": "reptile", "learn_inner_lr": True}, "learn_inner_lr"),
        ({"algorithm": "reptile", "inner_params": "head"}, "inner_params"),
        ({"algorithm": "imaml", "learn_inner_lr": True}, "learn_inner_lr"),
        ({"algorithm": "imaml", "inner_params": "head"}, "inner_params"),
        ({"algorithm": "imaml", "first_order": True}, "first_order"),
        ({"algorithm": "imaml", "imaml_lambda": 0.0}, "imaml_lambda"),
        ({"algorithm": "imaml", "cg_steps": 0}, "cg_steps"),
    ]:
        with pytest.raises(ValueError, match=match):
            MAML(body, **kwargs)
    with pytest.raises(ValueError, match="embedding_dim"):
        MAML(nn.Flatten())
    with pytest.raises(ValueError, match="n_classes"):
        MAML(body).initial_parameters()


def test_pickle_and_deepcopy_after_training_steps():
    """The module pickles after training steps (skorch pickles its module)."""
    model, shape = make_model("mlp", algorithm="reptile", executor=TaskThreads())
    batch = make_batch(shape)
    meta_backward_gradient(model, batch, 1)
    output, penalty = model.forward_with_penalty(*batch[:3])
    assert penalty.requires_grad
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert_allclose(clone(*batch[:3]), output, atol=1e-12)
