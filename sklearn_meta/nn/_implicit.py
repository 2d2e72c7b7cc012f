"""iMAML's meta-gradient: the implicit function theorem, solved by conjugate gradient.

Kept apart from :mod:`sklearn_meta.nn.maml`, which uses it as one option of
its per-task function, so the algorithm file holds what MAML computes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.autograd.function import once_differentiable

__all__ = ["ImplicitAdaptation"]


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


class ImplicitAdaptation(torch.autograd.Function):
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
