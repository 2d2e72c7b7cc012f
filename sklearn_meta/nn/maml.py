"""What MAML computes: one per-task function, and its family as options of it.

:class:`MAML` holds the meta-learned initialisation (a backbone ``body`` and
a linear ``head``). Everything it computes goes through one per-task
function, :meth:`MAML.task_output`: inner steps on the task's support set
from the initial parameters (:meth:`MAML.adapt_task`), then the adapted
network's query predictions. Meta-training back-propagates a loss on those
predictions, evaluation takes them under :func:`torch.no_grad`, and
``partial_fit`` keeps the adapted parameters (:meth:`MAML.adapt`). The
family is options of that function:

- second-order MAML (default): the inner gradients keep their graph;
- ``first_order=True``: the inner gradients are constants;
- ``inner_params="head"`` (ANIL): only the head adapts; the body runs once
  per task and set;
- ``learn_inner_lr=True`` (Meta-SGD): a learned step size per weight;
- ``algorithm="reptile"``: no meta-gradient through the steps; the task's
  penalty carries Reptile's direction ``init - adapted``;
- ``algorithm="imaml"``: the inner problem is regularised towards the
  initial parameters and the adapted parameters are differentiated by the
  implicit function theorem (:class:`_ImplicitAdaptation`).

How the tasks of a meta-batch run (one after the other, side by side on
threads, vectorised) is not this module's business: ``forward`` and
:meth:`MAML.meta_backward` hand the per-task function to ``executor``, any
object with the two methods of :mod:`sklearn_meta.nn.executors`' executors.
The inner gradients are :func:`torch.func.grad`, with the body's buffers as
explicit inputs, so the function runs under :func:`torch.func.vmap` too.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call

__all__ = ["MAML"]

Params = dict[str, torch.Tensor]

_HEAD_NAMES = ("head.weight", "head.bias")
_ALGORITHMS = ("maml", "reptile", "imaml")

# functional_call swaps a module's tensors in place for the duration of the
# call, so two threads must not run it on the same module: a thread other
# than the main one runs it on its own shallow replica of the body.
_replicas = threading.local()


def _check_option(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        options = ", ".join(repr(option) for option in allowed)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")


def _lr_key(name: str) -> str:
    # ParameterDict keys may not contain dots; module names never contain "-".
    return name.replace(".", "-")


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def _conjugate_gradient(
    apply: Callable[[list[torch.Tensor]], list[torch.Tensor]],
    b: list[torch.Tensor],
    steps: int,
) -> list[torch.Tensor]:
    """An approximate solution of ``apply(x) = b`` after ``steps`` CG steps."""
    x = [torch.zeros_like(t) for t in b]
    residual = [t.clone() for t in b]
    direction = [t.clone() for t in b]
    norm = _dot(residual, residual)
    for _ in range(steps):
        if norm <= torch.finfo(norm.dtype).tiny:
            break
        image = apply(direction)
        alpha = norm / _dot(direction, image)
        x = [xi + alpha * d for xi, d in zip(x, direction, strict=True)]
        residual = [r - alpha * a for r, a in zip(residual, image, strict=True)]
        new_norm = _dot(residual, residual)
        direction = [
            r + new_norm / norm * d for r, d in zip(residual, direction, strict=True)
        ]
        norm = new_norm
    return x


class _ImplicitAdaptation(torch.autograd.Function):
    """iMAML's adapted parameters as a function of the initial ones.

    The value is the inner solution (found without a graph); the backward
    pass is the implicit function theorem: for the inner problem
    ``support_loss(phi) + lambda / 2 * |phi - theta|^2`` at its solution,
    ``d phi / d theta = (I + H / lambda)^-1`` with ``H`` the Hessian of the
    support loss at ``phi``, applied to the incoming gradient by conjugate
    gradient on Hessian-vector products. Only ``phi`` is kept, so memory
    does not grow with the inner steps.
    """

    @staticmethod
    def forward(ctx, support_loss, adapted, imaml_lambda, cg_steps, *initial):
        ctx.support_loss, ctx.adapted = support_loss, adapted
        ctx.imaml_lambda, ctx.cg_steps = imaml_lambda, cg_steps
        return tuple(value.clone() for value in adapted.values())

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        with torch.enable_grad():
            point = {n: p.detach().requires_grad_() for n, p in ctx.adapted.items()}
            inner = torch.autograd.grad(
                ctx.support_loss(point), list(point.values()), create_graph=True
            )

            def apply(vector: list[torch.Tensor]) -> list[torch.Tensor]:
                hessian_vector = torch.autograd.grad(
                    inner, list(point.values()), vector, retain_graph=True
                )
                return [
                    v + hv / ctx.imaml_lambda
                    for v, hv in zip(vector, hessian_vector, strict=True)
                ]

            solution = _conjugate_gradient(apply, list(grads), ctx.cg_steps)
        return (None, None, None, None, *solution)


def _shallow_replica(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s structure that shares its parameters and buffers."""
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo=shared)


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
        Any module: BatchNorm layers normalise each task's sets by their own
        statistics in training mode, and running statistics it tracks are
        updated on per-task copies that are dropped (nothing travels from one
        task to another); in eval mode the stored statistics are used.
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
        ``"reptile"``: the meta-gradient is replaced by Reptile's direction
        ``init - adapted`` averaged over tasks (the penalty of
        :meth:`forward_with_penalty`). ``"imaml"``: implicit MAML, see
        ``imaml_lambda`` and ``cg_steps``.
    imaml_lambda : float, default=1.0
        iMAML's regularisation strength: the inner loss is the support loss
        plus ``imaml_lambda / 2`` times the squared distance to the initial
        parameters.
    cg_steps : int, default=5
        iMAML: conjugate-gradient steps of the implicit meta-gradient.
    task : {"classification", "regression"}, default="classification"
        Classification returns logits and uses cross-entropy in the inner
        loop; regression returns one value per sample and the squared error.
    executor : object or None, default=None
        Runs the per-task function over a meta-batch
        (:mod:`sklearn_meta.nn.executors`); ``None`` runs the tasks one
        after the other.

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

    Notes
    -----
    With the replicated head every class has the same logit before the
    first inner step, so that step's gradient reaches the head only; the
    body adapts from the second step on.

    References
    ----------
    .. [1] C. Finn, P. Abbeel and S. Levine, "Model-Agnostic Meta-Learning
       for Fast Adaptation of Deep Networks", ICML 2017.
    .. [2] A. Raghu et al., "Rapid Learning or Feature Reuse?", ICLR 2020 (ANIL).
    .. [3] Z. Li et al., "Meta-SGD: Learning to Learn Quickly for Few-Shot
       Learning", 2017.
    .. [4] A. Nichol, J. Achiam and J. Schulman, "On First-Order
       Meta-Learning Algorithms", 2018 (Reptile).
    .. [5] A. Rajeswaran, C. Finn, S. Kakade and S. Levine, "Meta-Learning
       with Implicit Gradients", NeurIPS 2019 (iMAML).
    .. [6] H.-J. Ye and W.-L. Chao, "How to Train Your MAML to Excel in
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
        imaml_lambda: float = 1.0,
        cg_steps: int = 5,
        task: str = "classification",
        executor: object | None = None,
    ) -> None:
        super().__init__()
        _check_option("inner_params", inner_params, ("all", "head"))
        _check_option("algorithm", algorithm, _ALGORITHMS)
        _check_option("task", task, ("classification", "regression"))
        if int(inner_steps) < 0:
            raise ValueError(f"inner_steps must be >= 0; got {inner_steps!r}")
        if algorithm != "maml" and learn_inner_lr:
            raise ValueError(
                f"learn_inner_lr=True learns step sizes through the inner steps, "
                f"which algorithm={algorithm!r} does not differentiate; use "
                "algorithm='maml' or learn_inner_lr=False"
            )
        if algorithm != "maml" and inner_params == "head":
            # Reptile: the body would never move, and the shared head row's
            # direction is zero (cross-entropy gradients sum to zero over the
            # classes). iMAML: the body's meta-gradient would need the mixed
            # second derivatives the implicit solve leaves out.
            raise ValueError(
                f"algorithm={algorithm!r} needs inner_params='all'; use "
                "algorithm='maml' for ANIL"
            )
        if algorithm == "imaml" and first_order:
            raise ValueError(
                "first_order=True does not apply to algorithm='imaml', whose "
                "meta-gradient is implicit; use first_order=False"
            )
        if float(imaml_lambda) <= 0 or int(cg_steps) < 1:
            raise ValueError(
                f"imaml_lambda must be > 0 and cg_steps >= 1; got "
                f"{imaml_lambda!r} and {cg_steps!r}"
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
        """The meta-learned initialisation as a name -> tensor dictionary.

        Parameters
        ----------
        n_classes : int or None, default=None
            Classes of the task (classification only): the head's row and
            bias are replicated as views, so gradients flow back to the
            shared row. Ignored for regression.

        Returns
        -------
        params : dict of str to torch.Tensor
            ``body.*`` and ``head.*`` entries.
        """
        params = {f"body.{n}": p for n, p in self.body.named_parameters()}
        weight, bias = self.head.weight, self.head.bias
        if self.task == "classification":
            if n_classes is None or int(n_classes) < 1:
                raise ValueError(
                    f"n_classes must be a positive integer for classification; "
                    f"got {n_classes!r}"
                )
            weight = weight.expand(int(n_classes), self.embedding_dim)
            bias = bias.expand(int(n_classes))
        params["head.weight"], params["head.bias"] = weight, bias
        return params

    def _functional_body(self) -> nn.Module:
        if threading.current_thread() is threading.main_thread():
            return self.body
        replicas = _replicas.__dict__.setdefault("bodies", weakref.WeakKeyDictionary())
        replica = replicas.get(self.body)
        if replica is None:
            replica = replicas[self.body] = _shallow_replica(self.body)
        for mine, original in zip(replica.modules(), self.body.modules(), strict=True):
            mine.training = original.training
        return replica

    def task_buffers(self) -> Params:
        """The body's buffers for one task: copies in training mode, so the
        running statistics a BatchNorm updates stay with that task."""
        buffers = dict(self.body.named_buffers())
        if self.body.training:
            buffers = {n: b.clone() for n, b in buffers.items()}
        return buffers

    def _embed(
        self, params: Params, buffers: Params, x: torch.Tensor, once: bool = False
    ) -> torch.Tensor:
        """The body's embedding; ``once=True`` promises that it is
        differentiated at most once, which a body may use to run faster."""
        body = {n[len("body.") :]: p for n, p in params.items() if n[:5] == "body."}
        if once and hasattr(self.body, "forward_differentiated_once"):
            embedding = self.body.forward_differentiated_once(body, x)
            if embedding is not None:
                return embedding
        return functional_call(self._functional_body(), (body, buffers), (x,))

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
        """``n_steps`` inner steps on one task's support set from ``start``.

        Parameters
        ----------
        start : dict of str to torch.Tensor
            Every parameter by name (as :meth:`initial_parameters`).
        buffers : dict of str to torch.Tensor
            The body's buffers for this task (:meth:`task_buffers`).
        support_x : torch.Tensor of shape (n_support, \\*sample_shape)
        support_y : torch.Tensor of shape (n_support,)
        n_steps : int
            Inner steps.
        mode : {"none", "first", "second", "implicit"}
            ``"none"``: the result is detached from ``start``; ``"first"``
            and ``"second"``: first- or second-order path to ``start``;
            ``"implicit"``: iMAML's implicit path.

        Returns
        -------
        params : dict of str to torch.Tensor
            ``start`` with the adapted entries replaced.
        """
        names = [n for n in self._adapted_names if n in start]
        fixed = {n: p for n, p in start.items() if n not in names}
        if self.inner_params == "head":
            # The body is not adapted: its support embedding is computed once,
            # and only second order differentiates through it twice.
            with torch.set_grad_enabled(torch.is_grad_enabled() and mode == "second"):
                embedding = self._embed(start, buffers, support_x, once=True)

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
            values = _ImplicitAdaptation.apply(
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
        support_y : torch.Tensor of shape (n_support,)
        query_x : torch.Tensor of shape (n_query, \\*sample_shape)
        n_steps : int
            Inner steps.
        n_classes : int or None
            Classes of the task (None for regression).

        Returns
        -------
        output : torch.Tensor of shape (n_query, n_classes) or (n_query,)
            The adapted network's predictions; their gradient with respect
            to the module's parameters is the meta-gradient (none for
            Reptile).
        penalty : torch.Tensor
            0-dim; zero in value. For Reptile in training its gradient with
            respect to the adapted initial parameters is ``init - adapted``.
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
        output = self._head(params, self._embed(params, buffers, query_x, once=True))
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
        """Adapt to every task of a meta-batch and predict its query set.

        Parameters
        ----------
        support_x : torch.Tensor of shape (n_tasks, n_support, \\*sample_shape)
        support_y : torch.Tensor of shape (n_tasks, n_support)
            Class ids ``0..n_classes-1`` (the meta-batch's number of classes
            is ``support_y.max() + 1``) or regression targets.
        query_x : torch.Tensor of shape (n_tasks, n_query, \\*sample_shape)
        n_steps : int or None, default=None
            Inner steps; ``None`` means ``inner_steps``.

        Returns
        -------
        output : torch.Tensor of shape (n_tasks, n_query[, n_classes])
            Query predictions of the adapted networks.
        penalty : torch.Tensor
            0-dim term to add to the training loss: the mean of the tasks'
            penalties (:meth:`task_output`).
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
        """The query predictions of :meth:`forward_with_penalty`."""
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

        The gradient of ``loss_fn(output, query_y) + penalty`` for
        :meth:`forward_with_penalty`'s results, with ``loss_fn`` a mean over
        tasks of equal weight; the executor may back-propagate each task on
        its own (less memory, tasks side by side). Gradients are summed in
        task order.

        Parameters
        ----------
        support_x, support_y, query_x : torch.Tensor
            As for :meth:`forward_with_penalty`.
        query_y : torch.Tensor of shape (n_tasks, n_query)
            Targets of the query sets.
        loss_fn : callable
            ``loss_fn(predictions, targets)`` on predictions shaped like
            ``forward``'s output.
        n_steps : int or None, default=None
            Inner steps; ``None`` means ``inner_steps``.

        Returns
        -------
        loss : torch.Tensor
            The meta-batch's loss (0-dim, detached).
        output : torch.Tensor
            ``forward``'s output (detached).
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
            if grad is None:
                continue
            if parameter.grad is None:
                parameter.grad = grad
            else:
                parameter.grad += grad
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
        """Adapt to one task with inner steps on its support set (detached).

        Parameters
        ----------
        support_x : torch.Tensor of shape (n_support, \\*sample_shape)
        support_y : torch.Tensor of shape (n_support,)
            Class ids ``0..n_classes-1`` (long) or regression targets.
        n_classes : int or None, default=None
            Classes of the task; ``None`` means ``support_y.max() + 1`` when
            starting from the initialisation, or the head of ``params``.
        n_steps : int or None, default=None
            Inner steps; ``None`` means ``inner_steps``.
        params : dict or None, default=None
            Parameters to continue adapting from (an earlier result); ``None``
            starts from the meta-learned initialisation.

        Returns
        -------
        params : dict of str to torch.Tensor
            Every parameter by name, the adapted ones replaced.
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
        """The body's embedding of ``x`` (n, \\*sample_shape) with ``params``
        (as returned by :meth:`adapt`; ``None``: the initialisation)."""
        return self._embed(params or self.initial_parameters(1), self.task_buffers(), x)

    def predict(
        self,
        x: torch.Tensor,
        params: Params | None = None,
        n_classes: int | None = None,
    ) -> torch.Tensor:
        """Logits or regression values for ``x`` (n, \\*sample_shape), with
        ``params`` from :meth:`adapt`, or the initialisation for ``n_classes``."""
        if params is None:
            params = self.initial_parameters(n_classes)
        return self._head(params, self.embed(x, params))
