"""Tests of the pure PyTorch LEO core, ``sklearn_meta.nn.leo``."""

import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F

from sklearn_meta.nn.leo import LEO, LEOState


def make_tasks(generator, n_tasks, n_way=5, k_shot=1, n_query=5, n_features=16):
    """Few-shot tasks whose classes differ in 4 of 16 features, the rest noise.

    Class centres are drawn per task on the first 4 features (spread 1, noise
    0.5); the other 12 features are noise of scale 1.5 shared by all classes.
    Nearest neighbour on the raw features is near 33% 5-way 1-shot, on the
    4 informative ones near 79%: a meta-learner has something to learn.
    """
    scale = torch.full((n_features,), 1.5)
    scale[:4] = 0.5
    centres = torch.zeros(n_tasks, n_way, 1, n_features)
    centres[..., :4] = torch.randn(n_tasks, n_way, 1, 4, generator=generator)
    support_x = centres + scale * torch.randn(
        n_tasks, n_way, k_shot, n_features, generator=generator
    )
    query_x = centres + scale * torch.randn(
        n_tasks, n_way, n_query, n_features, generator=generator
    )
    support_y = torch.arange(n_way).repeat_interleave(k_shot).expand(n_tasks, -1)
    query_y = torch.arange(n_way).repeat_interleave(n_query).expand(n_tasks, -1)
    return (
        support_x.reshape(n_tasks, n_way * k_shot, n_features),
        support_y.contiguous(),
        query_x.reshape(n_tasks, n_way * n_query, n_features),
        query_y.contiguous(),
    )


def reference_meta_loss(model, support_x, support_y, query_x, query_y, noise):
    """Per-task LEO with plain autograd, in the paper's order of operations.

    Written independently of the batched core: explicit loops over tasks and
    pairs, boolean masks per class. The decoded classifier has a bias per
    class, its last column. ``noise`` (a float) replaces every
    Gaussian noise draw; ``None`` means evaluation (means only). Dropout is
    assumed off. Returns the mean query loss plus the weighted penalties.
    """
    latent_dim, n_features = model.latent_dim, model.in_features
    n_classes = int(support_y.max()) + 1
    weight_logvar_offset = math.log(2.0 / (n_classes + n_features))
    query_losses, kls, encoder_penalties = [], [], []
    for x, y, qx, qy in zip(support_x, support_y, query_x, query_y, strict=True):
        codes = x @ model.encoder.weight.T
        relations = []
        for left in codes:
            partners = [
                model.relation_network(torch.cat([left, right])) for right in codes
            ]
            relations.append(torch.stack(partners).mean(dim=0))
        relations = torch.stack(relations)
        per_class = torch.stack(
            [relations[y == c].mean(dim=0) for c in range(n_classes)]
        )
        mean, logvar = per_class[:, :latent_dim], per_class[:, latent_dim:]
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        z_initial = z

        def decode(z):
            out = z @ model.decoder.weight.T
            w_mean, w_logvar = out[:, : n_features + 1], out[:, n_features + 1 :]
            if noise is None:
                return w_mean
            return w_mean + torch.exp(0.5 * (w_logvar + weight_logvar_offset)) * noise

        def logits(inputs, w):
            return inputs @ w[:, :-1].T + w[:, -1]

        for _ in range(model.inner_steps):
            loss = F.cross_entropy(logits(x, decode(z)), y)
            (grad,) = torch.autograd.grad(loss, z, create_graph=True)
            z = z - model.inner_lr * grad
        w = decode(z)
        for _ in range(model.finetune_steps):
            loss = F.cross_entropy(logits(x, w), y)
            (grad,) = torch.autograd.grad(loss, w, create_graph=True)
            w = w - model.finetune_lr * grad
        query_losses.append(F.cross_entropy(logits(qx, w), qy))
        kls.append(0.5 * (mean**2 + logvar.exp() - logvar - 1).mean())
        encoder_penalties.append(((z.detach() - z_initial) ** 2).mean())
    loss = torch.stack(query_losses).mean()
    if noise is None:
        return loss
    columns = model.decoder.weight.T
    norms = columns.norm(dim=1, keepdim=True)
    correlation = columns @ columns.T / (norms @ norms.T)
    orthogonality = (
        (correlation - torch.eye(latent_dim, dtype=columns.dtype)) ** 2
    ).mean()
    return (
        loss
        + model.kl_weight * torch.stack(kls).mean()
        + model.encoder_penalty_weight * torch.stack(encoder_penalties).mean()
        + model.orthogonality_weight * orthogonality
    )


def batched_meta_loss(model, support_x, support_y, query_x, query_y):
    """Query loss, plus the penalty in training mode (as the training step adds it)."""
    if model.training:
        logits, penalty = model.forward_with_penalty(support_x, support_y, query_x)
    else:
        logits, penalty = model(support_x, support_y, query_x), 0.0
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), query_y.reshape(-1))
    return loss + penalty


def meta_gradient(model, loss):
    return torch.autograd.grad(loss, [p for p in model.parameters()])


@pytest.mark.parametrize(
    ("n_tasks", "n_way", "k_shot", "n_query"),
    [(1, 2, 1, 1), (3, 5, 1, 4), (2, 3, 4, 2), (4, 20, 2, 3)],
)
def test_forward_shapes(n_tasks, n_way, k_shot, n_query):
    """Forward gives (tasks, queries, classes) logits and a 0-dim penalty."""
    model = LEO(7, 8)
    generator = torch.Generator().manual_seed(0)
    support_x, support_y, query_x, _ = make_tasks(
        generator, n_tasks, n_way, k_shot, n_query, n_features=7
    )
    logits = model(support_x, support_y, query_x)
    assert logits.shape == (n_tasks, n_way * n_query, n_way)
    logits, penalty = model.forward_with_penalty(support_x, support_y, query_x)
    assert logits.shape == (n_tasks, n_way * n_query, n_way)
    assert penalty.shape == ()


def test_n_classes_from_labels_with_shuffled_and_missing_classes():
    """n_classes is max label + 1, shuffled labels work, absent classes get the prior."""
    torch.manual_seed(0)
    model = LEO(5, 4).eval()
    support_x = torch.randn(2, 6, 5)
    support_y = torch.tensor([[3, 0, 3, 1, 0, 1], [1, 1, 0, 0, 3, 3]])
    logits = model(support_x, support_y, torch.randn(2, 3, 5))
    assert logits.shape == (2, 3, 4)
    one_hot = F.one_hot(support_y, 4).to(support_x.dtype)
    mean, logvar = model._encode_support(support_x, one_hot, stochastic=False)
    assert torch.all(mean[:, 2] == 0) and torch.all(logvar[:, 2] == 0)


@pytest.mark.parametrize("k_shot", [1, 3])
def test_meta_gradient_matches_sequential_reference(k_shot):
    """The batched second-order meta-gradient equals a per-task autograd loop (eval)."""
    torch.manual_seed(0)
    model = LEO(6, 5, inner_lr=0.5, finetune_lr=0.1, inner_steps=3, finetune_steps=2)
    model = model.double().eval()
    generator = torch.Generator().manual_seed(1)
    tasks = [
        t.double() if t.is_floating_point() else t
        for t in make_tasks(
            generator, 3, n_way=3, k_shot=k_shot, n_query=2, n_features=6
        )
    ]
    batched = meta_gradient(model, batched_meta_loss(model, *tasks))
    reference = meta_gradient(model, reference_meta_loss(model, *tasks, noise=None))
    for got, expected in zip(batched, reference, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert max(g.abs().max() for g in batched) > 1e-3  # not trivially zero


def test_training_meta_gradient_with_penalties_matches_reference():
    """With fixed noise, training-mode loss + penalties match the reference's gradient."""
    torch.manual_seed(0)
    model = LEO(
        6,
        5,
        inner_lr=0.5,
        finetune_lr=0.1,
        inner_steps=2,
        finetune_steps=2,
        kl_weight=0.3,
        encoder_penalty_weight=0.2,
        orthogonality_weight=0.1,
        dropout=0.0,
        learn_inner_lr=True,
    ).double()
    model._noise_like = lambda tensor: torch.full_like(tensor, 0.3)
    generator = torch.Generator().manual_seed(2)
    tasks = [
        t.double() if t.is_floating_point() else t
        for t in make_tasks(generator, 2, n_way=3, k_shot=2, n_query=2, n_features=6)
    ]
    batched = meta_gradient(model, batched_meta_loss(model, *tasks))
    reference = meta_gradient(model, reference_meta_loss(model, *tasks, noise=0.3))
    for got, expected in zip(batched, reference, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_learned_inner_lr_gets_a_gradient():
    """With learn_inner_lr both step sizes are parameters that receive gradients."""
    torch.manual_seed(0)
    model = LEO(6, 5, learn_inner_lr=True)
    names = {name for name, _ in model.named_parameters()}
    assert {"inner_lr", "finetune_lr"} <= names
    assert "inner_lr" not in dict(LEO(6, 5).named_parameters())
    tasks = make_tasks(torch.Generator().manual_seed(0), 2, 3, 1, 2, n_features=6)
    batched_meta_loss(model, *tasks).backward()
    assert model.inner_lr.grad.abs().sum() > 0
    assert model.finetune_lr.grad.abs().sum() > 0


def test_adaptation_reduces_support_loss():
    """Latent steps then fine-tuning lower the support loss of a new task."""
    torch.manual_seed(0)
    model = LEO(16, 16, inner_lr=0.3, finetune_lr=0.01)
    support_x, support_y, _, _ = make_tasks(torch.Generator().manual_seed(3), 1)
    support_x, support_y = support_x[0], support_y[0]

    def support_loss(state):
        return F.cross_entropy(model.predict_logits(support_x, state), support_y)

    before = model.adapt(support_x, support_y, 5, inner_steps=0, finetune_steps=0)
    latent_only = model.adapt(support_x, support_y, 5, finetune_steps=0)
    adapted = model.adapt(support_x, support_y, 5)
    assert support_loss(latent_only) < 0.5 * support_loss(before)
    assert support_loss(adapted) < support_loss(latent_only)
    torch.testing.assert_close(before.latent_codes, before.initial_codes)
    assert not adapted.class_weights.requires_grad


def test_adapt_continues_from_state():
    """Passing a state continues adapting: codes go on moving, new classes are encoded."""
    torch.manual_seed(0)
    model = LEO(16, 16, inner_lr=0.3)
    support_x, support_y, _, _ = make_tasks(torch.Generator().manual_seed(4), 1)
    support_x, support_y = support_x[0], support_y[0]
    once = model.adapt(support_x, support_y, 5, inner_steps=2, finetune_steps=0)
    twice = model.adapt(
        support_x, support_y, 5, state=once, inner_steps=2, finetune_steps=0
    )
    in_one_go = model.adapt(support_x, support_y, 5, inner_steps=4, finetune_steps=0)
    torch.testing.assert_close(twice.latent_codes, in_one_go.latent_codes)
    torch.testing.assert_close(twice.initial_codes, once.initial_codes)
    assert torch.equal(twice.class_counts, 2 * once.class_counts)

    partial = model.adapt(support_x[:2], support_y[:2], 5, inner_steps=0)
    assert partial.class_counts.tolist() == [1, 1, 0, 0, 0]
    assert torch.all(partial.initial_codes[2:] == 0)
    full = model.adapt(support_x, support_y, 5, state=partial, inner_steps=0)
    assert torch.all(full.initial_codes[2:] != 0)
    with pytest.raises(ValueError, match="state classifies 5 classes"):
        model.adapt(support_x, support_y, 6, state=full)
    with pytest.raises(ValueError, match="support_y must lie in 0 .. 3"):
        model.adapt(support_x, support_y, 4)


def test_works_under_no_grad():
    """Under torch.no_grad the inner loops still adapt and the output has no graph."""
    torch.manual_seed(0)
    model = LEO(16, 8, learn_inner_lr=True).eval()
    support_x, support_y, query_x, _ = make_tasks(torch.Generator().manual_seed(5), 2)
    with torch.no_grad():
        logits = model(support_x, support_y, query_x)
        state = model.adapt(support_x[0], support_y[0], 5)
    assert not logits.requires_grad
    torch.testing.assert_close(logits, model(support_x, support_y, query_x))
    unadapted = copy.deepcopy(model)
    unadapted.inner_steps = unadapted.finetune_steps = 0
    with torch.no_grad():
        assert not torch.allclose(logits, unadapted(support_x, support_y, query_x))
    torch.testing.assert_close(
        state.class_weights, model.adapt(support_x[0], support_y[0], 5).class_weights
    )


def test_penalty_is_returned_with_the_logits_and_not_kept():
    """forward_with_penalty gives forward's logits and a weighted penalty; nothing is kept."""
    torch.manual_seed(0)
    model = LEO(16, 8)
    tasks = make_tasks(torch.Generator().manual_seed(6), 2)
    with torch.random.fork_rng():
        logits, penalty = model.forward_with_penalty(*tasks[:3])
    with torch.random.fork_rng():
        torch.testing.assert_close(model(*tasks[:3]), logits)
    assert penalty.shape == () and torch.isfinite(penalty) and penalty > 0
    assert penalty.requires_grad
    model.kl_weight = model.encoder_penalty_weight = model.orthogonality_weight = 0.0
    assert model.forward_with_penalty(*tasks[:3])[1].item() == 0.0
    # No graph-holding tensor stays on the module: a deep copy (sklearn's clone
    # of a fitted net) works right after a training pass.
    copy.deepcopy(model)


def test_training_forward_is_random_and_seeded():
    """Training draws noise from torch's global RNG: same seed, same logits."""
    model = LEO(16, 8)
    tasks = make_tasks(torch.Generator().manual_seed(7), 2)
    torch.manual_seed(1)
    first = model(*tasks[:3])
    second = model(*tasks[:3])
    torch.manual_seed(1)
    again = model(*tasks[:3])
    assert not torch.allclose(first, second)
    torch.testing.assert_close(first, again)


def test_encode_per_sample_codes_before_and_after_adaptation():
    """encode gives per-sample codes independent of the batch; with a state they move."""
    torch.manual_seed(0)
    model = LEO(16, 8, inner_lr=0.3)
    support_x, support_y, query_x, _ = make_tasks(torch.Generator().manual_seed(8), 1)
    codes = model.encode(query_x[0])
    assert codes.shape == (25, 8)
    torch.testing.assert_close(model.encode(query_x[0, :3]), codes[:3])
    state = model.adapt(support_x[0], support_y[0], 5)
    adapted = model.encode(query_x[0], state)
    assert adapted.shape == (25, 8) and not torch.allclose(adapted, codes)
    unmoved = model.adapt(support_x[0], support_y[0], 5, inner_steps=0)
    torch.testing.assert_close(model.encode(query_x[0], unmoved), codes)


def test_relation_chunks_match_one_pass():
    """Without a graph the all-pairs step runs in chunks with the same result."""
    torch.manual_seed(0)
    model = LEO(3, 4)
    codes = torch.randn(2, 300, 4)
    with torch.no_grad():
        chunked = model._relation_codes(codes)
        whole = model._relation_rows(codes, codes)
    torch.testing.assert_close(chunked, whole)


def test_pickle_after_training_forward():
    """A module that just ran a training forward pickles and deep-copies."""
    torch.manual_seed(0)
    model = LEO(16, 8, learn_inner_lr=True)
    model(*make_tasks(torch.Generator().manual_seed(9), 1)[:3])
    restored = pickle.loads(pickle.dumps(model))
    copy.deepcopy(model)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], value)


def test_bad_arguments_raise():
    """Out-of-range construction arguments and badly shaped inputs raise ValueError."""
    with pytest.raises(ValueError, match="dropout"):
        LEO(4, dropout=1.0)
    with pytest.raises(ValueError, match="inner_steps"):
        LEO(4, inner_steps=-1)
    with pytest.raises(ValueError, match="in_features"):
        LEO(0)
    with pytest.raises(ValueError, match="expected support_x"):
        LEO(4)(torch.randn(5, 4), torch.zeros(5, dtype=torch.long), torch.randn(2, 4))


def test_meta_training_beats_chance_on_toy_tasks():
    """100 Adam steps lift 5-way 1-shot query accuracy far above chance and raw features."""
    torch.manual_seed(0)
    model = LEO(16, 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    evaluation = make_tasks(torch.Generator().manual_seed(2), 200)

    def accuracy():
        model.eval()
        with torch.no_grad():
            logits = model(*evaluation[:3])
        model.train()
        return (logits.argmax(-1) == evaluation[3]).float().mean().item()

    before = accuracy()
    generator = torch.Generator().manual_seed(1)
    for _ in range(100):
        support_x, support_y, query_x, query_y = make_tasks(generator, 8)
        logits, penalty = model.forward_with_penalty(support_x, support_y, query_x)
        loss = F.cross_entropy(logits.reshape(-1, 5), query_y.reshape(-1)) + penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = accuracy()
    # chance is 0.2; nearest neighbour on the raw features about 0.33
    assert before < 0.4
    assert after > 0.55, (before, after)


def test_state_is_a_plain_record():
    """LEOState exposes its classes and holds plain tensors."""
    state = LEOState(
        torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 5), torch.ones(3)
    )
    assert state.n_classes == 3
