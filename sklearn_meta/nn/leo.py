"""Latent Embedding Optimization (LEO), the pure PyTorch core.

LEO (Rusu et al., 2019) does not adapt a network's weights directly. A task's
support set is encoded into one low-dimensional latent code per class; a
decoder turns each code into that class's classifier weights; adaptation takes
gradient steps on the latent codes (cheap: few dimensions), then a few
fine-tuning steps on the decoded weights themselves. The classifier is linear
in the input features, so LEO sits on top of any features: tabular columns,
a pretrained embedding, or another meta-learner's output.

The layout follows the authors' implementation (github.com/deepmind/leo,
``model.py``): a linear encoder without bias, a three-layer relation network
over all pairs of the task's examples, averaged per class, and a linear
decoder without bias, every weight initialised Glorot-uniform.

All tasks of a meta-batch are adapted at once with plain batched tensor
operations: every tensor carries a leading task axis, and the per-task
support losses are summed before each inner gradient, which leaves each task's
gradient its own because no operation mixes tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Pairs of examples the relation network sees at once when no graph is kept
# (adapting on a large support set, batched evaluation): bounds the memory of
# the all-pairs step, quadratic in the support size, to tens of megabytes.
_PAIR_CHUNK = 2**16


@dataclass
class LEOState:
    """One task adapted by :meth:`LEO.adapt`; pass it back to continue adapting.

    Parameters
    ----------
    latent_codes : torch.Tensor of shape (n_classes, latent_dim)
        Class latent codes after the latent-space gradient steps.
    initial_codes : torch.Tensor of shape (n_classes, latent_dim)
        Class latent codes the encoder gave before any step: the meta-learned
        starting point of the task.
    class_weights : torch.Tensor of shape (n_classes, in_features + 1)
        Classifier weights after fine-tuning, each class's bias last: the
        logits of ``x`` are ``x @ class_weights[:, :-1].T + class_weights[:, -1]``.
    class_counts : torch.Tensor of shape (n_classes,)
        Support examples seen so far per class. A class with none keeps the
        prior code (zeros) until its first examples arrive.
    """

    latent_codes: torch.Tensor
    initial_codes: torch.Tensor
    class_weights: torch.Tensor
    class_counts: torch.Tensor

    @property
    def n_classes(self) -> int:
        """Number of classes the state classifies."""
        return int(self.class_weights.shape[0])


class LEO(nn.Module):
    """Latent Embedding Optimization for few-shot classification.

    Parameters
    ----------
    in_features : int
        Width ``D`` of one example's features.
    latent_dim : int, default=64
        Width of a class latent code (``num_latents`` in the paper's code).
    inner_lr : float, default=1.0
        Step size of the gradient steps on the latent codes.
    inner_steps : int, default=5
        Gradient steps on the latent codes.
    finetune_lr : float, default=0.001
        Step size of the fine-tuning steps on the decoded classifier weights.
    finetune_steps : int, default=5
        Fine-tuning steps on the decoded classifier weights.
    kl_weight : float, default=0.001
        Weight of KL(q(z | support) || N(0, I)) in the penalty of
        :meth:`forward_with_penalty`.
    encoder_penalty_weight : float, default=1e-9
        Weight of the encoder penalty, the mean squared distance between the
        encoder's codes and the adapted codes (held constant), which pulls the
        encoder towards codes that need little adaptation.
    orthogonality_weight : float, default=0.001
        Weight of the decoder's orthogonality penalty: the mean squared
        difference between the correlation matrix of the decoder's per-latent
        weight vectors and the identity.
    dropout : float, default=0.3
        Dropout rate on the inputs of the encoder and of the classifier, in
        training mode only.
    learn_inner_lr : bool, default=False
        Meta-learn the step sizes, as the paper's code does: one inner step
        size per latent dimension and one fine-tuning step size per feature,
        initialised to ``inner_lr`` and ``finetune_lr``. When False they are
        fixed buffers of the same shapes.

    Attributes
    ----------
    encoder : torch.nn.Linear
        Per-example encoder, ``D -> latent_dim``.
    relation_network : torch.nn.Sequential
        Three-layer MLP on a pair of encoded examples, ``2 latent_dim ->
        2 latent_dim``: the mean and log-variance of a latent Gaussian.
    decoder : torch.nn.Linear
        ``latent_dim -> 2 D``: the mean and log-variance of a class's weights.
    inner_lr : torch.Tensor of shape (latent_dim,)
        Latent step sizes (parameter or buffer, see ``learn_inner_lr``).
    finetune_lr : torch.Tensor of shape (in_features,)
        Fine-tuning step sizes (parameter or buffer).

    Notes
    -----
    The defaults are those of the paper's code (``config.py`` in
    github.com/deepmind/leo): ``latent_dim=64``, ``inner_lr=1.0``,
    ``inner_steps=5``, ``finetune_lr=0.001``, ``finetune_steps=5``,
    ``kl_weight=1e-3``, ``encoder_penalty_weight=1e-9``,
    ``orthogonality_weight=1e-3``, except ``dropout=0.3``, the rate the
    authors' tuned miniImageNet runs chose (0.3077 for 1-shot, 0.3003 for
    5-shot; the README of that repository) instead of ``config.py``'s 0.5.
    The paper has no Omniglot configuration. Its L2 penalty (``1e-8``) is left
    to the optimizer: TensorFlow's ``l2_regularizer(scale)`` adds
    ``scale * sum(w ** 2) / 2``, so ``torch.optim.Adam(weight_decay=scale)``
    gives the same gradient. The paper's code also clips gradients (each
    value to 0.1, then the norm to 0.1), which is the training loop's job.

    Where this core differs from the paper's code, and why:

    - The support loss is the mean cross-entropy over the support set. The
      paper's code differentiates the sum over examples and tiles each class
      code over its ``k_shot`` examples, which makes its latent gradient
      ``n_classes`` times the gradient of the mean: its ``inner_lr=1.0`` in
      5-way tasks is ``inner_lr=5.0`` here. The mean keeps a step size's
      meaning when the number of shots or classes changes, which matters
      when ``inner_lr`` is grid-searched.
    - One latent code and one weight sample per class, where the paper's
      code draws one per support example of the class and averages the
      logits; the means, and so evaluation, are identical.
    - The Gaussians are parameterised by mean and log-variance, and the KL
      term is the closed form averaged over classes and latent dimensions
      (the paper's code uses a one-sample estimate, also averaged). Like the
      paper's code, the weights' Gaussian starts near Glorot's variance
      ``2 / (n_classes + D)`` rather than 1: its log-variance is offset by
      ``log(2 / (n_classes + D))``.
    - A class with no example in a task's support set gets the prior's code
      (mean 0, log-variance 0), so ``n_classes`` may exceed the labels seen.
    - The decoder gives each class a bias beside its weights (the last
      column of the decoded classifier), which the paper's linear
      classifier lacks: on a metric-learned embedding, where squared
      euclidean prototypes carry a bias of their own (``-|m|^2``), it
      raised LEO's Omniglot accuracy (the LEO section of the README).

    References
    ----------
    .. [1] A. A. Rusu, D. Rao, J. Sygnowski, O. Vinyals, R. Pascanu,
       S. Osindero and R. Hadsell, "Meta-Learning with Latent Embedding
       Optimization", ICLR 2019. https://arxiv.org/abs/1807.05960

    Examples
    --------
    >>> import torch
    >>> from sklearn_meta.nn.leo import LEO
    >>> _ = torch.manual_seed(0)
    >>> model = LEO(in_features=8, latent_dim=4)
    >>> support_x = torch.randn(2, 6, 8)  # 2 tasks, 3-way 2-shot
    >>> support_y = torch.tensor([[0, 0, 1, 1, 2, 2], [2, 1, 0, 2, 1, 0]])
    >>> model(support_x, support_y, torch.randn(2, 5, 8)).shape
    torch.Size([2, 5, 3])
    >>> logits, penalty = model.forward_with_penalty(
    ...     support_x, support_y, torch.randn(2, 5, 8))
    >>> penalty.shape
    torch.Size([])
    >>> state = model.adapt(support_x[0], support_y[0], n_classes=3)
    >>> model.predict_logits(torch.randn(4, 8), state).shape
    torch.Size([4, 3])
    >>> model.encode(torch.randn(4, 8)).shape
    torch.Size([4, 4])
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int = 64,
        *,
        inner_lr: float = 1.0,
        inner_steps: int = 5,
        finetune_lr: float = 0.001,
        finetune_steps: int = 5,
        kl_weight: float = 0.001,
        encoder_penalty_weight: float = 1e-9,
        orthogonality_weight: float = 0.001,
        dropout: float = 0.3,
        learn_inner_lr: bool = False,
    ) -> None:
        super().__init__()
        if in_features < 1 or latent_dim < 1:
            raise ValueError(
                f"in_features and latent_dim must be positive, got "
                f"in_features={in_features}, latent_dim={latent_dim}"
            )
        if inner_steps < 0 or finetune_steps < 0:
            raise ValueError(
                f"inner_steps and finetune_steps must be >= 0, got "
                f"inner_steps={inner_steps}, finetune_steps={finetune_steps}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_features = int(in_features)
        self.latent_dim = int(latent_dim)
        self.inner_steps = int(inner_steps)
        self.finetune_steps = int(finetune_steps)
        self.kl_weight = float(kl_weight)
        self.encoder_penalty_weight = float(encoder_penalty_weight)
        self.orthogonality_weight = float(orthogonality_weight)
        self.dropout = float(dropout)
        self.learn_inner_lr = bool(learn_inner_lr)

        width = 2 * self.latent_dim
        self.encoder = nn.Linear(self.in_features, self.latent_dim, bias=False)
        self.relation_network = nn.Sequential(
            nn.Linear(width, width, bias=False),
            nn.ReLU(),
            nn.Linear(width, width, bias=False),
            nn.ReLU(),
            nn.Linear(width, width, bias=False),
        )
        # Each class's weights and its bias (the last column).
        self.decoder = nn.Linear(
            self.latent_dim, 2 * (self.in_features + 1), bias=False
        )
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)

        inner = torch.full((self.latent_dim,), float(inner_lr))
        finetune = torch.full((self.in_features + 1,), float(finetune_lr))
        if self.learn_inner_lr:
            self.inner_lr = nn.Parameter(inner)
            self.finetune_lr = nn.Parameter(finetune)
        else:
            self.register_buffer("inner_lr", inner)
            self.register_buffer("finetune_lr", finetune)
        # The values the step sizes start from, which learning then moves.
        self.initial_inner_lr = float(inner_lr)
        self.initial_finetune_lr = float(finetune_lr)

    def forward(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
    ) -> torch.Tensor:
        """Adapt every task of a meta-batch on its support set, classify its queries.

        Parameters
        ----------
        support_x : torch.Tensor of shape (B, S, D)
            Support features of ``B`` tasks.
        support_y : torch.Tensor of shape (B, S)
            Support labels in ``0 .. n_classes - 1``, any number of shots per
            class; ``n_classes = int(support_y.max()) + 1``.
        query_x : torch.Tensor of shape (B, Q, D)
            Query features.

        Returns
        -------
        logits : torch.Tensor of shape (B, Q, n_classes)
            Query logits of the adapted classifiers.

        Notes
        -----
        In training mode codes and weights are sampled and dropout is on; in
        eval mode the Gaussians' means are used. When gradients are enabled
        the inner loops are differentiated exactly (second order); under
        ``torch.no_grad()`` they still run, without a graph. Meta-training
        calls :meth:`forward_with_penalty`, which also returns the penalties.
        """
        return self.forward_with_penalty(support_x, support_y, query_x)[0]

    def forward_with_penalty(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` and the weighted penalties of that same pass.

        The training step adds the penalty to the query loss, so it carries
        the graph of this call; nothing is kept on the module.

        Parameters
        ----------
        support_x : torch.Tensor of shape (B, S, D)
            Support features of ``B`` tasks.
        support_y : torch.Tensor of shape (B, S)
            Support labels in ``0 .. n_classes - 1``.
        query_x : torch.Tensor of shape (B, Q, D)
            Query features.

        Returns
        -------
        logits : torch.Tensor of shape (B, Q, n_classes)
            As :meth:`forward`.
        penalty : torch.Tensor of shape ()
            ``kl_weight * KL + encoder_penalty_weight * encoder penalty +
            orthogonality_weight * orthogonality penalty``, each averaged over
            the meta-batch.
        """
        if support_x.dim() != 3 or query_x.dim() != 3 or support_y.dim() != 2:
            raise ValueError(
                f"expected support_x (B, S, D), support_y (B, S) and query_x "
                f"(B, Q, D), got shapes {tuple(support_x.shape)}, "
                f"{tuple(support_y.shape)} and {tuple(query_x.shape)}"
            )
        support_y = support_y.long()
        n_classes = int(support_y.max()) + 1
        stochastic = self.training
        create_graph = torch.is_grad_enabled()

        one_hot = F.one_hot(support_y, n_classes).to(support_x.dtype)
        latent_mean, latent_logvar = self._encode_support(
            support_x, one_hot, stochastic
        )
        initial_codes = self._sample(latent_mean, latent_logvar, stochastic)
        latent_codes, class_weights = self._adapt(
            support_x,
            support_y,
            initial_codes,
            n_classes,
            self.inner_steps,
            self.finetune_steps,
            stochastic=stochastic,
            create_graph=create_graph,
        )
        logits = self._logits(query_x, class_weights, stochastic)
        kl = _kl_to_standard_normal(latent_mean, latent_logvar).mean()
        # The adapted codes are a target here, as in the paper: the penalty
        # moves the encoder, not the inner loop.
        encoder = (latent_codes.detach() - initial_codes).square().mean()
        penalty = (
            self.kl_weight * kl
            + self.encoder_penalty_weight * encoder
            + self.orthogonality_weight * self.orthogonality_penalty()
        )
        return logits, penalty

    def orthogonality_penalty(self) -> torch.Tensor:
        """Mean squared difference between the decoder's correlation matrix and I.

        The correlations are between the weight vectors that the latent
        dimensions write into (one per latent dimension), so the penalty
        pushes different latent dimensions to decode into different
        directions of weight space.
        """
        columns = self.decoder.weight.T  # (latent_dim, 2 D), one row per latent
        norms = columns.norm(dim=1, keepdim=True).clamp_min(1e-12)
        correlation = (columns @ columns.T) / (norms @ norms.T)
        identity = torch.eye(
            correlation.shape[0], dtype=correlation.dtype, device=correlation.device
        )
        return (correlation - identity).square().mean()

    # ------------------------------------------------------------------ #
    # Test-time adaptation, one task at a time (partial_fit / predict)
    # ------------------------------------------------------------------ #
    def adapt(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        n_classes: int,
        state: LEOState | None = None,
        inner_steps: int | None = None,
        finetune_steps: int | None = None,
    ) -> LEOState:
        """Adapt to one task's support set, or continue adapting ``state``.

        Adaptation is deterministic whatever the module's mode (the
        Gaussians' means, no dropout), keeps no graph, and works under
        ``torch.no_grad()``.

        Parameters
        ----------
        support_x : torch.Tensor of shape (S, D)
            Support features.
        support_y : torch.Tensor of shape (S,)
            Support labels in ``0 .. n_classes - 1``; classes may be missing.
        n_classes : int
            Number of classes of the task.
        state : LEOState or None, default=None
            None starts a new task from the meta-learned state: the class
            codes come from the encoder on this support set. A state from an
            earlier call continues from its codes and weights: the latent
            steps start from its codes (classes seen for the first time take
            the encoder's code from this support set), with the fine-tuning
            correction it had (its weights minus its decoded codes) kept on
            top of the decoded weights, then fine-tuning continues.
        inner_steps, finetune_steps : int or None, default=None
            Override the module's step counts for this call.

        Returns
        -------
        state : LEOState
            The adapted task, on the device and in the dtype of the module.
        """
        inner_steps = self.inner_steps if inner_steps is None else int(inner_steps)
        finetune_steps = (
            self.finetune_steps if finetune_steps is None else int(finetune_steps)
        )
        n_classes = int(n_classes)
        support_y = support_y.long()
        if support_x.dim() != 2 or support_y.shape != support_x.shape[:1]:
            raise ValueError(
                f"expected support_x (S, D) and support_y (S,), got shapes "
                f"{tuple(support_x.shape)} and {tuple(support_y.shape)}"
            )
        if support_y.numel() and (
            int(support_y.min()) < 0 or int(support_y.max()) >= n_classes
        ):
            raise ValueError(
                f"support_y must lie in 0 .. {n_classes - 1} for n_classes="
                f"{n_classes}, got labels from {int(support_y.min())} to "
                f"{int(support_y.max())}"
            )
        if state is not None and state.n_classes != n_classes:
            raise ValueError(
                f"state classifies {state.n_classes} classes, got n_classes="
                f"{n_classes}; start a new task with state=None"
            )

        support_x = support_x.unsqueeze(0)
        support_y = support_y.unsqueeze(0)
        with torch.no_grad():
            one_hot = F.one_hot(support_y, n_classes).to(support_x.dtype)
            encoded, _ = self._encode_support(support_x, one_hot, stochastic=False)
            counts = one_hot.sum(dim=1)[0]
            if state is None:
                start = initial = encoded[0]
                weight_offset = None
                total_counts = counts
            else:
                first_seen = ((state.class_counts == 0) & (counts > 0)).unsqueeze(1)
                start = torch.where(first_seen, encoded[0], state.latent_codes)
                initial = torch.where(first_seen, encoded[0], state.initial_codes)
                decoded, _ = self._decode_parameters(state.latent_codes, n_classes)
                weight_offset = torch.where(
                    first_seen, 0.0, state.class_weights - decoded
                ).unsqueeze(0)
                total_counts = state.class_counts + counts
        latent_codes, class_weights = self._adapt(
            support_x,
            support_y,
            start.unsqueeze(0),
            n_classes,
            inner_steps,
            finetune_steps,
            stochastic=False,
            create_graph=False,
            weight_offset=weight_offset,
        )
        return LEOState(
            latent_codes=latent_codes[0],
            initial_codes=initial,
            class_weights=class_weights[0],
            class_counts=total_counts,
        )

    def predict_logits(self, x: torch.Tensor, state: LEOState) -> torch.Tensor:
        """Logits ``(n, n_classes)`` of the adapted classifier for ``x (n, D)``.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
            Features.
        state : LEOState
            The adapted task.

        Returns
        -------
        logits : torch.Tensor of shape (n, n_classes)
            ``x @ state.class_weights[:, :-1].T + state.class_weights[:, -1]``.
        """
        return _linear(x, state.class_weights)

    def encode(self, x: torch.Tensor, state: LEOState | None = None) -> torch.Tensor:
        """Per-sample latent codes ``(n, latent_dim)`` of ``x (n, D)``.

        Without ``state``: the mean of the latent Gaussian that the encoder
        and relation network give a class whose only example is the sample
        (the sample paired with itself). It lives in the same space as the
        class codes the decoder reads, depends on the sample alone (not on
        the others in the batch) and is deterministic. Adaptation does not
        change it: LEO adapts class codes, not the encoder.

        With ``state``: the same code moved by the adaptation of the class the
        adapted classifier assigns the sample to, softly,
        ``code + softmax(logits) @ (state.latent_codes - state.initial_codes)``,
        so that a sample moves with its class's code; meant for drawing the
        latent space before and after adaptation. The class codes themselves
        are ``state.initial_codes`` and ``state.latent_codes``.

        Parameters
        ----------
        x : torch.Tensor of shape (n, D)
            Features.
        state : LEOState or None, default=None
            An adapted task, to move the codes with their classes.

        Returns
        -------
        codes : torch.Tensor of shape (n, latent_dim)
            One latent code per sample.
        """
        codes = self.encoder(x)
        pairs = torch.cat([codes, codes], dim=-1)
        sample_codes = self.relation_network(pairs)[..., : self.latent_dim]
        if state is None:
            return sample_codes
        assignment = torch.softmax(self.predict_logits(x, state), dim=-1)
        return sample_codes + assignment @ (state.latent_codes - state.initial_codes)

    # ------------------------------------------------------------------ #
    # Building blocks, batched over a leading task axis
    # ------------------------------------------------------------------ #
    def _encode_support(
        self, support_x: torch.Tensor, one_hot: torch.Tensor, stochastic: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance ``(B, C, latent_dim)`` of each class's code."""
        inputs = F.dropout(support_x, self.dropout, training=stochastic)
        relations = self._relation_codes(self.encoder(inputs))  # (B, S, 2 L)
        # Average per class; a class without examples keeps zeros, that is
        # the prior N(0, I) in (mean, log-variance).
        counts = one_hot.sum(dim=1).clamp_min(1.0).unsqueeze(-1)
        per_class = one_hot.transpose(1, 2) @ relations / counts
        mean, logvar = per_class.chunk(2, dim=-1)
        return mean, logvar

    def _relation_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Relation network output per example, averaged over all its partners."""
        n_examples = codes.shape[-2]
        n_pairs = codes[..., 0].numel() * n_examples
        if torch.is_grad_enabled() or n_pairs <= _PAIR_CHUNK:
            return self._relation_rows(codes, codes)
        rows = max(1, _PAIR_CHUNK * n_examples // n_pairs)
        return torch.cat(
            [
                self._relation_rows(codes[..., start : start + rows, :], codes)
                for start in range(0, n_examples, rows)
            ],
            dim=-2,
        )

    def _relation_rows(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        n_left, n_right, width = left.shape[-2], right.shape[-2], left.shape[-1]
        pairs = torch.cat(
            [
                left.unsqueeze(-2).expand(*left.shape[:-1], n_right, width),
                right.unsqueeze(-3).expand(*right.shape[:-2], n_left, n_right, width),
            ],
            dim=-1,
        )
        return self.relation_network(pairs).mean(dim=-2)

    def _decode_parameters(
        self, latent_codes: torch.Tensor, n_classes: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance ``(..., C, D)`` of the class weights."""
        mean, logvar = self.decoder(latent_codes).chunk(2, dim=-1)
        # Start the weights' spread near Glorot's rather than at 1, as the
        # paper's code does, so early samples do not drown the means.
        glorot_logvar = math.log(2.0 / (n_classes + self.in_features))
        return mean, logvar + glorot_logvar

    def _decode(
        self,
        latent_codes: torch.Tensor,
        n_classes: int,
        stochastic: bool,
        weight_offset: torch.Tensor | None,
    ) -> torch.Tensor:
        mean, logvar = self._decode_parameters(latent_codes, n_classes)
        weights = self._sample(mean, logvar, stochastic)
        if weight_offset is not None:
            weights = weights + weight_offset
        return weights

    def _sample(
        self, mean: torch.Tensor, logvar: torch.Tensor, stochastic: bool
    ) -> torch.Tensor:
        """Reparameterised sample in training, the mean otherwise."""
        if not stochastic:
            return mean
        return mean + torch.exp(0.5 * logvar) * self._noise_like(mean)

    def _noise_like(self, tensor: torch.Tensor) -> torch.Tensor:
        # One place for the sampling noise, so a test can fix it.
        return torch.randn_like(tensor)

    def _logits(
        self, x: torch.Tensor, class_weights: torch.Tensor, stochastic: bool
    ) -> torch.Tensor:
        inputs = F.dropout(x, self.dropout, training=stochastic)
        return _linear(inputs, class_weights)

    def _support_loss(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        class_weights: torch.Tensor,
        stochastic: bool,
    ) -> torch.Tensor:
        """Sum over tasks of each task's mean support cross-entropy."""
        logits = self._logits(support_x, class_weights, stochastic)
        losses = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            support_y.reshape(-1),
            reduction="none",
        )
        # Summing per-task means keeps each task's gradient its own mean-loss
        # gradient, whatever the number of tasks.
        return losses.view(support_y.shape).mean(dim=-1).sum()

    def _adapt(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        latent_codes: torch.Tensor,
        n_classes: int,
        inner_steps: int,
        finetune_steps: int,
        *,
        stochastic: bool,
        create_graph: bool,
        weight_offset: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent steps, then fine-tuning steps; returns codes and weights.

        With ``create_graph`` the steps stay differentiable (second order);
        without, every step is detached, so nothing grows across steps and
        the results carry no graph.
        """

        def fresh_leaf(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.detach().requires_grad_(True)

        # Validation runs under no_grad, yet adaptation needs gradients.
        with torch.enable_grad():
            codes = latent_codes
            if not (create_graph and codes.requires_grad):
                codes = fresh_leaf(codes)
            weights = self._decode(codes, n_classes, stochastic, weight_offset)
            for _ in range(inner_steps):
                loss = self._support_loss(support_x, support_y, weights, stochastic)
                (grad,) = torch.autograd.grad(loss, codes, create_graph=create_graph)
                codes = codes - self.inner_lr * grad
                if not create_graph:
                    codes = fresh_leaf(codes)
                weights = self._decode(codes, n_classes, stochastic, weight_offset)
            if not create_graph:
                weights = fresh_leaf(weights)
            for _ in range(finetune_steps):
                loss = self._support_loss(support_x, support_y, weights, stochastic)
                (grad,) = torch.autograd.grad(loss, weights, create_graph=create_graph)
                weights = weights - self.finetune_lr * grad
                if not create_graph:
                    weights = fresh_leaf(weights)
        if not create_graph:
            codes, weights = codes.detach(), weights.detach()
        return codes, weights


def _linear(x: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """Logits of ``x (..., n, D)`` for weights ``(..., C, D + 1)``, bias last."""
    weights, bias = class_weights[..., :-1], class_weights[..., -1]
    return x @ weights.transpose(-1, -2) + bias.unsqueeze(-2)


def _kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean, exp(logvar)) || N(0, 1))."""
    return 0.5 * (mean.square() + logvar.exp() - logvar - 1.0)
