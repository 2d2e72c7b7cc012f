"""What MAML computes: one per-task function, and its family as its options.

:meth:`MAML.task_output` is the algorithm for one task: inner steps on the
support set from the initial parameters (:meth:`MAML.adapt_task`), then the
adapted network's query predictions. Meta-training, evaluation and
adaptation (:meth:`MAML.adapt`) all go through it; first order, ANIL,
Meta-SGD, Reptile and iMAML are its options. How the tasks of a meta-batch
run is the business of the ``executor`` it is handed
(:mod:`sklearn_meta.nn.executors`), which this module does not import. The
inner gradients are :func:`torch.func.grad` with the body's buffers as
explicit inputs, so the function also runs under :func:`torch.func.vmap`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._implicit import ImplicitAdaptation
from .functional import functional_forward

__all__ = ["MAML"]

Params = dict[str, torch.Tensor]

_HEAD_NAMES = ("head.weight", "head.bias")
_ALGORITHMS = ("maml", "reptile", "imaml")


def _check_option(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        options = ", ".join(repr(option) for option in allowed)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")


def _lr_key(name: str) -> str:
    # ParameterDict keys may not contain dots; module names never contain "-".
    return name.replace(".", "-")


class _InOrder:
    """The default executor: the tasks one after the other, in this thread."""

    def forward(self, function, *batched):
        results = [function(*(x[t] for x in batched)) for t in range(len(batched[0]))]
        return tuple(torch.stack(parts) for parts in zip(*results, strict=True))

    def backward(self, function, parameters, *batched):
        losses, *outputs = self.forward(function, *batched)
        grads = torch.autograd.grad(losses.mean(), parameters, allow_unused=True)
        return grads, losses.detach(), *(o.detach() for o in outputs)


class MAML(nn.Module):
    """Model-agnostic meta-learning on a backbone and a linear head.

    The module's parameters are the meta-learned initialisation. ``forward``
    adapts to every task of a meta-batch with ``inner_steps`` gradient steps
    on its support set and returns the predictions of the adapted networks
    on the query sets; back-propagating a loss on them (plus the penalty of
    :meth:`forward_with_penalty`) gives the meta-gradient.

    Parameters
    ----------
    body : torch.nn.Module
        Backbone mapping ``(n, *sample_shape)`` to ``(n, embedding_dim)``.
        In training mode its BatchNorm layers normalise each task's sets by
        their own statistics; running statistics are updated on per-task
        copies that are dropped. In eval mode the stored ones are used.
    embedding_dim : int or None, default=None
        Width of the body's output; ``None`` reads ``body.out_features``.
    inner_lr : float, default=0.1
        Step size of the inner loop; with ``learn_inner_lr`` the initial
        value of every learned step size.
    inner_steps : int, default=1
        Inner gradient steps per task when no ``n_steps`` is given.
    first_order : bool, default=False
        Treat the inner gradients as constants (first-order MAML).
    inner_params : {"all", "head"}, default="all"
        Parameters adapted in the inner loop; ``"head"`` is ANIL.
    learn_inner_lr : bool, default=False
        Meta-SGD: one learned step size per adapted weight.
    algorithm : {"maml", "reptile", "imaml"}, default="maml"
        ``"reptile"``: Reptile's direction ``init - adapted`` replaces the
        meta-gradient (through the penalty of :meth:`forward_with_penalty`).
        ``"imaml"``: implicit MAML.
    imaml_lambda : float, default=1.0
        iMAML: the inner loss adds ``imaml_lambda / 2`` times the squared
        distance to the initial parameters.
    cg_steps : int, default=5
        iMAML: conjugate-gradient steps of the implicit meta-gradient.
    task : {"classification", "regression"}, default="classification"
        Logits and cross-entropy, or one value per sample and squared error.
    executor : object or None, default=None
        Maps the per-task function over a meta-batch, such as
        :class:`~sklearn_meta.nn.TaskThreads`; ``None``: one task after another.

    Attributes
    ----------
    head : torch.nn.Linear
        ``Linear(embedding_dim, 1)``. For classification its row and bias
        are replicated for every class at the start of adaptation
        (UnicornMAML's permutation-invariant initialisation), so a task can
        have any number of classes in any order.
    inner_lrs : torch.nn.ParameterDict or None
        Meta-SGD step sizes, shaped like each adapted parameter, keyed by
        the parameter name with dots replaced by ``-``.

    References
    ----------
    .. [1] C. Finn, P. Abbeel and S. Levine, "Model-Agnostic Meta-Learning
       for Fast Adaptation of Deep Networks", ICML 2017.
    .. [2] A. Raghu et al., "Rapid Learning or Feature Reuse?", ICLR 2020.
    .. [3] Z. Li et al., "Meta-SGD", 2017.
    .. [4] A. Nichol et al., "On First-Order Meta-Learning Algorithms", 2018.
    .. [5] A. Rajeswaran et al., "Meta-Learning with Implicit Gradients",
       NeurIPS 2019.
    .. [6] H.-J. Ye and W.-L. Chao, "How to Train Your MAML to Excel in
       Few-Shot Classification", ICLR 2022.

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
        imaml_lambda: float = 1.0,
        cg_steps: int = 5,
        task: str = "classification",
        executor: object | None = None,
    ) -> None:
        super().__init__()
        _check_option("inner_params", inner_params, ("all", "head"))
        _check_option("algorithm", algorithm, _ALGORITHMS)
        _check_option("task", task, ("classification", "regression"))
        # Reptile and iMAML do not differentiate through the inner steps, so
        # no learned step sizes; ANIL would leave Reptile's body unmoved (the
        # shared head row's direction sums to zero) and iMAML's body without
        # the mixed derivatives its implicit solve leaves out.
        refusals = {
            "inner_steps must be >= 0": int(inner_steps) < 0,
            f"learn_inner_lr=True needs algorithm='maml', not {algorithm!r}; set "
            "learn_inner_lr=False": algorithm != "maml" and learn_inner_lr,
            f"algorithm={algorithm!r} needs inner_params='all'; ANIL "
            "(inner_params='head') is algorithm='maml'": (
                algorithm != "maml" and inner_params == "head"
            ),
            "first_order=True does not apply to algorithm='imaml' (its "
            "meta-gradient is implicit); set first_order=False": (
                algorithm == "imaml" and first_order
            ),
            "imaml_lambda must be > 0": float(imaml_lambda) <= 0,
            "cg_steps must be >= 1": int(cg_steps) < 1,
        }
        for message, refused in refusals.items():
            if refused:
                raise ValueError(message)
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
        self.imaml_lambda = float(imaml_lambda)
        self.cg_steps = int(cg_steps)
        self.task = task
        self.executor = executor
        body_names = [f"body.{n}" for n, _ in body.named_parameters()]
        self._adapted_names = list(_HEAD_NAMES)
        if inner_params == "all":
            self._adapted_names = body_names + self._adapted_names
        self.inner_lrs = None
        if self.learn_inner_lr:
            own = dict(self.named_parameters())
            self.inner_lrs = nn.ParameterDict(
                {
                    _lr_key(n): nn.Parameter(torch.full_like(own[n].detach(), inner_lr))
                    for n in self._adapted_names
                }
            )

    # -- parameters and the functional network ----------------------------------

    @property
    def adapted_names(self) -> list[str]:
        """Names of the parameters the inner loop adapts."""
        return list(self._adapted_names)

    def initial_parameters(self, n_classes: int | None = None) -> Params:
        """The meta-learned initialisation by name (``body.*``, ``head.*``).

        For classification the head's row and bias are replicated as views
        for ``n_classes`` classes, so gradients flow back to the shared row.

        Parameters
        ----------
        n_classes : int or None, default=None
            Classes of the head: a positive int for classification, ignored
            for regression.

        Returns
        -------
        params : dict of str to torch.Tensor
            The module's own parameters (not copies); ``head.weight`` is
            ``(n_classes, embedding_dim)``, or ``(1, embedding_dim)`` for
            regression.
        """
        params = {f"body.{n}": p for n, p in self.body.named_parameters()}
        weight, bias = self.head.weight, self.head.bias
        if self.task == "classification":
            if n_classes is None or int(n_classes) < 1:
                raise ValueError(f"n_classes must be a positive int; got {n_classes!r}")
            weight = weight.expand(int(n_classes), self.embedding_dim)
            bias = bias.expand(int(n_classes))
        params["head.weight"], params["head.bias"] = weight, bias
        return params

    def task_buffers(self) -> Params:
        """The body's buffers for one task: copies in training mode, so the
        running statistics a BatchNorm updates stay with that task."""
        buffers = dict(self.body.named_buffers())
        if self.body.training:
            buffers = {n: b.clone() for n, b in buffers.items()}
        return buffers

    def _embed(self, params: Params, buffers: Params, x: torch.Tensor) -> torch.Tensor:
        """The body's embedding, through its fused kernels where it has some."""
        body = {n[len("body.") :]: p for n, p in params.items() if n[:5] == "body."}
        if hasattr(self.body, "fused_forward"):
            embedding = self.body.fused_forward(body, x)
            if embedding is not None:
                return embedding
        return functional_forward(self.body, body, buffers, x)

    def _head(self, params: Params, embedding: torch.Tensor) -> torch.Tensor:
        output = embedding @ params["head.weight"].T + params["head.bias"]
        return output.squeeze(-1) if self.task == "regression" else output

    def _loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task == "regression":
            return F.mse_loss(output, target.to(output.dtype))
        return F.cross_entropy(output, target)

    def _inner_lr(self, name: str) -> torch.Tensor | float:
        if self.inner_lrs is None:
            return self.inner_lr
        return self.inner_lrs[_lr_key(name)]

    # -- the per-task function ------------------------------------------------

    def _mode(self) -> str:
        """How the adapted parameters relate to the initialisation: ``"none"``
        (detached), ``"first"``, ``"second"`` or ``"implicit"``."""
        if not torch.is_grad_enabled() or self.algorithm == "reptile":
            return "none"
        if self.algorithm == "imaml":
            return "implicit"
        return "first" if self.first_order else "second"

    def adapt_task(
        self,
        start: Params,
        buffers: Params,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        n_steps: int,
        mode: str,
    ) -> Params:
        """One task's parameters after inner steps on its support set.

        Parameters
        ----------
        start : dict of str to torch.Tensor
            Every parameter by name, as from :meth:`initial_parameters` or an
            earlier adaptation; its adapted entries are where the steps start.
        buffers : dict of str to torch.Tensor
            The body's buffers for this task (:meth:`task_buffers`).
        support_x : torch.Tensor of shape (n_support, \\*sample_shape)
            The task's support samples.
        support_y : torch.Tensor of shape (n_support,)
            Class ids ``0 .. n_classes - 1``, or regression targets.
        n_steps : int
            Inner gradient steps.
        mode : {"none", "first", "second", "implicit"}
            How the result is differentiable with respect to ``start``: not
            at all (detached), with the inner gradients taken as constants
            (first order), through every step (second order), or by iMAML's
            implicit gradient. :meth:`task_output` picks it from
            ``algorithm``, ``first_order`` and whether gradients are enabled.

        Returns
        -------
        params : dict of str to torch.Tensor
            ``start`` with its adapted entries replaced.
        """
        names = [n for n in self._adapted_names if n in start]
        fixed = {n: p for n, p in start.items() if n not in names}
        if self.inner_params == "head":
            # The body is not adapted: its support embedding is computed once,
            # and only second order differentiates through it twice.
            with torch.set_grad_enabled(torch.is_grad_enabled() and mode == "second"):
                embedding = self._embed(start, buffers, support_x)

            def support_loss(adapted: Params, buffers: Params) -> torch.Tensor:
                return self._loss(self._head(adapted, embedding), support_y)

        else:

            def support_loss(adapted: Params, buffers: Params) -> torch.Tensor:
                params = {**fixed, **adapted}
                return self._loss(
                    self._head(params, self._embed(params, buffers, support_x)),
                    support_y,
                )

        if self.algorithm == "imaml":
            # Regularised towards the initialisation, also when ``start`` is
            # an earlier adaptation being continued.
            n_classes = start["head.weight"].shape[0]
            initial = self.initial_parameters(n_classes)
            anchor = {n: initial[n].detach() for n in names}
            plain_loss = support_loss

            def support_loss(adapted: Params, buffers: Params) -> torch.Tensor:
                distance = sum(((adapted[n] - anchor[n]) ** 2).sum() for n in names)
                return plain_loss(adapted, buffers) + self.imaml_lambda / 2 * distance

        adapted = {n: start[n] for n in names}
        if mode in ("none", "implicit"):
            adapted = {n: p.detach() for n, p in adapted.items()}
        for _ in range(n_steps):
            # Buffers are an explicit input: a grad transform may not update
            # tensors captured from outside (BatchNorm's running statistics).
            grads = torch.func.grad(support_loss)(adapted, buffers)
            adapted = {
                n: adapted[n]
                - self._inner_lr(n)
                * (grads[n] if mode == "second" else grads[n].detach())
                for n in names
            }
            if mode in ("none", "implicit"):
                adapted = {n: p.detach() for n, p in adapted.items()}
        if mode == "implicit" and names:
            values = ImplicitAdaptation.apply(
                lambda point: plain_loss(point, self.task_buffers()),
                adapted,
                self.imaml_lambda,
                self.cg_steps,
                *(start[n] for n in names),
            )
            adapted = dict(zip(names, values, strict=True))
        return {**fixed, **adapted}

    def task_output(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        n_steps: int,
        n_classes: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One task: adapt on its support set, then predict its query set.

        Parameters
        ----------
        support_x : torch.Tensor of shape (n_support, \\*sample_shape)
            The task's support samples.
        support_y : torch.Tensor of shape (n_support,)
            Class ids ``0 .. n_classes - 1``, or regression targets.
        query_x : torch.Tensor of shape (n_query, \\*sample_shape)
            The task's query samples.
        n_steps : int
            Inner gradient steps.
        n_classes : int or None
            Classes of the head; ignored for regression.

        Returns
        -------
        output : torch.Tensor of shape (n_query, n_classes) or (n_query,)
            Query logits or regression values; their gradient is the
            meta-gradient (none for Reptile).
        penalty : torch.Tensor of shape ()
            Zero in value; for Reptile in training its gradient is
            ``init - adapted``.
        """
        init = self.initial_parameters(n_classes)
        buffers = self.task_buffers()
        mode = self._mode()
        params = self.adapt_task(init, buffers, support_x, support_y, n_steps, mode)
        penalty = init["head.bias"].new_zeros(())
        if self.algorithm == "reptile" and torch.is_grad_enabled():
            # sum(p * d) - its value: 0, with gradient d = init - adapted.
            for name in self._adapted_names:
                direction = (init[name] - params[name]).detach()
                penalty = penalty + (init[name] * direction).sum()
            penalty = penalty - penalty.detach()
            params = {n: p.detach() for n, p in params.items()}
        output = self._head(params, self._embed(params, buffers, query_x))
        return output, penalty

    # -- meta-batches -----------------------------------------------------------

    def _meta_batch(self, support_y, n_steps):
        n_steps = self.inner_steps if n_steps is None else int(n_steps)
        n_classes = None
        if self.task == "classification":
            n_classes = int(support_y.max()) + 1
        return n_steps, n_classes, self.executor or _InOrder()

    def forward_with_penalty(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        n_steps: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Adapt to every task of a meta-batch and predict its query sets.

        Parameters
        ----------
        support_x : torch.Tensor of shape (n_tasks, n_support, \\*sample_shape)
            Support samples of every task.
        support_y : torch.Tensor of shape (n_tasks, n_support)
            Class ids ``0 .. n_classes - 1``, with ``n_classes`` the
            meta-batch's ``support_y.max() + 1``, or regression targets.
        query_x : torch.Tensor of shape (n_tasks, n_query, \\*sample_shape)
            Query samples of every task.
        n_steps : int or None, default=None
            Inner gradient steps; ``None`` means ``inner_steps``.

        Returns
        -------
        output : torch.Tensor of shape (n_tasks, n_query[, n_classes])
            Query logits or regression values of the adapted networks.
        penalty : torch.Tensor of shape ()
            The tasks' mean penalty (see :meth:`task_output`), to add to the
            training loss.
        """
        n_steps, n_classes, executor = self._meta_batch(support_y, n_steps)

        def task(support_x, support_y, query_x):
            return self.task_output(support_x, support_y, query_x, n_steps, n_classes)

        output, penalty = executor.forward(task, support_x, support_y, query_x)
        return output, penalty.mean()

    def forward(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        n_steps: int | None = None,
    ) -> torch.Tensor:
        """The query predictions of :meth:`forward_with_penalty`.

        Parameters
        ----------
        support_x : torch.Tensor of shape (n_tasks, n_support, \\*sample_shape)
            Support samples of every task.
        support_y : torch.Tensor of shape (n_tasks, n_support)
            Class ids ``0 .. n_classes - 1``, or regression targets.
        query_x : torch.Tensor of shape (n_tasks, n_query, \\*sample_shape)
            Query samples of every task.
        n_steps : int or None, default=None
            Inner gradient steps; ``None`` means ``inner_steps``.

        Returns
        -------
        output : torch.Tensor of shape (n_tasks, n_query[, n_classes])
            Query logits or regression values of the adapted networks.
        """
        return self.forward_with_penalty(support_x, support_y, query_x, n_steps)[0]

    def meta_backward(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        query_x: torch.Tensor,
        query_y: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        n_steps: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the meta-gradient of a meta-batch to the parameters' ``.grad``.

        The gradient of ``loss_fn(output, query_y) + penalty`` for the
        results of :meth:`forward_with_penalty` (same arguments), with
        ``loss_fn`` a mean over tasks of equal weight on predictions shaped
        like ``forward``'s. The executor may back-propagate each task on its
        own (the memory of the tasks in flight); gradients are summed in
        task order.

        Parameters
        ----------
        support_x : torch.Tensor of shape (n_tasks, n_support, \\*sample_shape)
            Support samples of every task.
        support_y : torch.Tensor of shape (n_tasks, n_support)
            Class ids ``0 .. n_classes - 1``, or regression targets.
        query_x : torch.Tensor of shape (n_tasks, n_query, \\*sample_shape)
            Query samples of every task.
        query_y : torch.Tensor of shape (n_tasks, n_query)
            Query class ids or regression targets.
        loss_fn : callable
            ``loss_fn(output, query_y)`` returns a 0-dim loss; it is called
            on one task at a time, as a meta-batch of one.
        n_steps : int or None, default=None
            Inner gradient steps; ``None`` means ``inner_steps``.

        Returns
        -------
        loss : torch.Tensor of shape ()
            The tasks' mean loss, penalty included, detached.
        output : torch.Tensor of shape (n_tasks, n_query[, n_classes])
            Query predictions, detached.
        """
        n_steps, n_classes, executor = self._meta_batch(support_y, n_steps)

        def task(support_x, support_y, query_x, query_y):
            output, penalty = self.task_output(
                support_x, support_y, query_x, n_steps, n_classes
            )
            loss = loss_fn(output.unsqueeze(0), query_y.unsqueeze(0)) + penalty
            return loss, output

        trainable = [p for p in self.parameters() if p.requires_grad]
        grads, losses, output = executor.backward(
            task, trainable, support_x, support_y, query_x, query_y
        )
        for parameter, grad in zip(trainable, grads, strict=True):
            if grad is not None:
                old = parameter.grad
                parameter.grad = grad if old is None else old.add_(grad)
        return losses.mean(), output

    # -- one task, for adaptation and inference ---------------------------------

    def adapt(
        self,
        support_x: torch.Tensor,
        support_y: torch.Tensor,
        n_classes: int | None = None,
        n_steps: int | None = None,
        params: Params | None = None,
    ) -> Params:
        """Every parameter by name after inner steps on one task's support set.

        Parameters
        ----------
        support_x : torch.Tensor of shape (n_support, \\*sample_shape)
            The task's support samples.
        support_y : torch.Tensor of shape (n_support,)
            Class ids ``0 .. n_classes - 1``, or regression targets.
        n_classes : int or None, default=None
            Classes of the head; ``None``: the head of ``params``, or
            ``support_y.max() + 1``. Ignored for regression.
        n_steps : int or None, default=None
            Inner gradient steps; ``None`` means ``inner_steps``.
        params : dict of str to torch.Tensor or None, default=None
            An earlier result of this method, to continue adapting from;
            ``None``: start from the initialisation.

        Returns
        -------
        params : dict of str to torch.Tensor
            Every parameter by name; the adapted ones carry no graph.
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
        start = {**self.initial_parameters(n_classes), **(params or {})}
        with torch.no_grad():
            return self.adapt_task(
                start, self.task_buffers(), support_x, support_y, n_steps, "none"
            )

    def embed(self, x: torch.Tensor, params: Params | None = None) -> torch.Tensor:
        """The body's embedding of ``x`` with given parameters.

        Parameters
        ----------
        x : torch.Tensor of shape (n, \\*sample_shape)
            Samples.
        params : dict of str to torch.Tensor or None, default=None
            As returned by :meth:`adapt`; ``None``: the initialisation.

        Returns
        -------
        embedding : torch.Tensor of shape (n, embedding_dim)
            The body's output.
        """
        return self._embed(params or self.initial_parameters(1), self.task_buffers(), x)

    def predict(
        self,
        x: torch.Tensor,
        params: Params | None = None,
        n_classes: int | None = None,
    ) -> torch.Tensor:
        """Logits or regression values for ``x`` with given parameters.

        Parameters
        ----------
        x : torch.Tensor of shape (n, \\*sample_shape)
            Samples.
        params : dict of str to torch.Tensor or None, default=None
            As returned by :meth:`adapt`; ``None``: the initialisation.
        n_classes : int or None, default=None
            Classes of the initialisation's head, used when ``params`` is
            ``None`` in classification.

        Returns
        -------
        output : torch.Tensor of shape (n, n_classes) or (n,)
            Logits, or regression values.
        """
        if params is None:
            params = self.initial_parameters(n_classes)
        return self._head(params, self.embed(x, params))
