"""MAML's sinusoid regression benchmark (Finn et al. 2017, section 5.1).

Network 1-40-40-1 (ReLU), meta-batch 25 tasks, K=10 support and 10 query
points, inner_lr 0.01, one inner step, Adam 1e-3, 4,000 outer steps. Reports
the mean squared error on new sinusoids after 0, 1 and 10 gradient steps from
K=5 and K=10 points, for MAML, Meta-SGD and a network pretrained on all
tasks (the paper's baseline), and with ``--imaml`` for iMAML too (Rajeswaran
et al. 2019: ``IMAML_SETTINGS`` inner steps on the support loss pulled
towards the initialisation, implicit meta-gradient), as one JSON line. A null MSE means that the
adaptation diverged: Meta-SGD's learned rates are tuned for one step, and ten
steps at those rates overshoot.

    python benchmarks/sinusoid.py            # 4,000 outer steps
    python benchmarks/sinusoid.py --quick    # 400
    python benchmarks/sinusoid.py --imaml    # with the iMAML row
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import seconds_since  # noqa: E402

from sklearn_meta import MAMLFeatureExtractor  # noqa: E402
from sklearn_meta.datasets import make_sinusoid_tasks  # noqa: E402
from sklearn_meta.model_selection import evaluate_few_shot  # noqa: E402
from sklearn_meta.nn.maml import MAML  # noqa: E402

#: iMAML takes several inner steps: its meta-gradient assumes the
#: regularised inner problem is nearly solved.
IMAML_SETTINGS = {
    "algorithm": "imaml",
    "inner_steps": 10,
    "inner_lr": 0.02,
    "imaml_lambda": 1.0,
    "cg_steps": 5,
}


class Body(nn.Sequential):
    """1-40-40 with ReLUs: with the estimator's linear head, MAML's 1-40-40-1."""

    out_features = 40

    def __init__(self):
        super().__init__(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU())


def evaluate(estimator, X, y, groups, k_shot, steps, seed):
    """Mean query MSE over the test tasks after ``steps`` steps from ``k_shot`` points."""
    estimator.set_params(adapt_steps=steps)
    result = evaluate_few_shot(
        estimator,
        X,
        y,
        groups=groups,
        k_shot=k_shot,
        n_query=10,
        n_episodes=len(np.unique(groups)),
        random_state=seed,
    )
    if not np.isfinite(result.mean):
        return None, None  # adaptation diverged (JSON has no NaN)
    return round(-result.mean, 3), round(result.ci95, 3)


def pretrained_baseline(X, y, n_steps, seed, like):
    """The same network trained by plain regression on the pooled tasks."""
    torch.manual_seed(seed)
    module = MAML(Body(), inner_lr=0.01, task="regression")
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    X_t = torch.as_tensor(X, dtype=torch.float32)
    y_t = torch.as_tensor(y, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(n_steps):
        batch = torch.randint(len(X_t), (250,), generator=generator)
        optimizer.zero_grad()
        loss = ((module.predict(X_t[batch]) - y_t[batch]) ** 2).mean()
        loss.backward()
        optimizer.step()
    # A one-step fit only builds the estimator around the pretrained weights.
    baseline = like.__class__(**like.get_params()).set_params(
        max_epochs=1, episodes_per_epoch=like.meta_batch_size
    )
    baseline.fit(X[:400], y[:400], groups=np.repeat(np.arange(20), 20))
    baseline.net_.module_.load_state_dict(module.state_dict())
    return baseline


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000, help="outer steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--imaml", action="store_true", help="add the iMAML row")
    parser.add_argument("--test-tasks", type=int, default=600, help="new sinusoids")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 400
    start = time.perf_counter()
    meta_batch = 25
    X, y, groups = make_sinusoid_tasks(
        n_tasks=20_000, n_points=20, random_state=args.seed
    )
    X_test, y_test, groups_test = make_sinusoid_tasks(
        n_tasks=args.test_tasks, n_points=30, random_state=args.seed + 1
    )
    figures = {
        "benchmark": "sinusoid",
        "outer_steps": args.steps,
        "torch_threads": torch.get_num_threads(),
    }
    common = dict(
        backbone=Body(),
        inner_lr=0.01,
        inner_steps=1,
        k_shot=10,
        n_query=10,
        meta_batch_size=meta_batch,
        episodes_per_epoch=meta_batch * 100,
        max_epochs=max(1, args.steps // 100),
        meta_lr=1e-3,
        random_state=args.seed,
        device="cpu",
    )
    models = {}
    variants = [("maml", {}), ("meta_sgd", {"learn_inner_lr": True})]
    if args.imaml:
        variants.append(("imaml", IMAML_SETTINGS))
    for name, extra in variants:
        fit_start = time.perf_counter()
        estimator = MAMLFeatureExtractor(**{**common, **extra})
        models[name] = estimator.fit(X, y, groups=groups)
        figures[f"{name}_train_seconds"] = seconds_since(fit_start)
    fit_start = time.perf_counter()
    models["pretrained"] = pretrained_baseline(
        X, y, args.steps, args.seed, models["maml"]
    )
    figures["pretrained_train_seconds"] = seconds_since(fit_start)
    for name, model in models.items():
        for k_shot in (5, 10):
            for steps in (0, 1, 10):
                mse, ci = evaluate(
                    model, X_test, y_test, groups_test, k_shot, steps, args.seed
                )
                figures[f"{name}_K{k_shot}_{steps}steps_mse"] = mse
                figures[f"{name}_K{k_shot}_{steps}steps_ci95"] = ci
    figures["total_seconds"] = seconds_since(start)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
