"""Omniglot few-shot accuracy of MetaMetricClassifier within a training budget.

Meta-trains on five alphabets (161 characters, with 90/180/270-degree
rotations as extra classes: 644 classes) and tests on three others
(Early_Aramaic, Sanskrit, Tagalog: 81 characters), 5-way and 20-way, 1- and
5-shot, 1000 episodes each, next to raw-pixel nearest centroids on the same
episodes. Prints one JSON line.

Defaults: max-pooling Conv4 (the prototypical-network paper's), 30-way
1-shot training episodes with 5 queries per class, Adam 3e-3 annealed by a
cosine over the wall-clock budget, and random affine augmentation of the
training images (rotation 10 degrees, scale 10%, shift 2 pixels). The
budget bounds meta-training; ``train_seconds`` also counts the end of
``fit`` (BatchNorm statistics and the prototypes of the 644 classes).

    python benchmarks/omniglot_metric.py            # 600 s budget
    python benchmarks/omniglot_metric.py --quick    # 60 s budget, 200 episodes
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    TimeBudget,
    omniglot_split,
    random_affine,
    rounded,
    seconds_since,
)

from sklearn_meta import MetaMetricClassifier  # noqa: E402
from sklearn_meta.model_selection import evaluate_few_shot, evaluate_nearest_centroid  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds")
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes")
    parser.add_argument("--train-way", type=int, default=30)
    parser.add_argument("--train-query", type=int, default=5)
    parser.add_argument("--backbone", default="conv4")
    parser.add_argument(
        "--augment",
        default="10,0.1,2",
        help="RandomAffine rotation,scale,translation of the training images, or none",
    )
    parser.add_argument("--metric", default="euclidean")
    parser.add_argument("--meta-lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--quick", action="store_true", help="60 s budget, 200 episodes"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.budget, args.episodes = min(args.budget, 60.0), 200
    start = time.perf_counter()
    X_train, y_train, X_test, y_test = omniglot_split()
    budget = TimeBudget(args.budget)
    clf = MetaMetricClassifier(
        metric=args.metric,
        backbone=args.backbone,
        n_way=args.train_way,
        n_query=args.train_query,
        meta_lr=args.meta_lr,
        max_epochs=10_000,  # the time budget stops training
        episodes_per_epoch=500,
        callbacks=[budget],
        augment=random_affine(args.augment),
        device=args.device,
        random_state=args.seed,
    )
    fit_start = time.perf_counter()
    clf.fit(X_train, y_train)
    figures = {
        "benchmark": "omniglot_metric",
        "device": str(clf.net_.device),
        "torch_threads": torch.get_num_threads(),
        "n_train_classes": int(len(clf.classes_)),
        "n_test_classes": int(len(set(y_test.tolist()))),
        "train_seconds": seconds_since(fit_start),
        "train_episodes": int(sum(len(h["batches"]) for h in clf.history_))
        * clf.meta_batch_size,
        "params": {k: v for k, v in vars(args).items() if k not in ("quick",)},
    }
    for n_way in (5, 20):
        for k_shot in (1, 5):
            common = dict(
                n_way=n_way,
                k_shot=k_shot,
                n_query=15,
                n_episodes=args.episodes,
                random_state=args.seed,
            )
            key = f"{n_way}way_{k_shot}shot"
            figures[key] = rounded(evaluate_few_shot(clf, X_test, y_test, **common))
            figures[key + "_pixels"] = rounded(
                evaluate_nearest_centroid(X_test, y_test, **common)
            )
    figures["total_seconds"] = seconds_since(start)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
