"""Omniglot few-shot accuracy of MetaMetricClassifier within a training budget.

Meta-trains on five alphabets (161 characters, with 90/180/270-degree
rotations as extra classes: 644 classes) and tests on three others
(Early_Aramaic, Sanskrit, Tagalog: 81 characters), 5-way and 20-way, 1- and
5-shot, 1000 episodes each, and Lake et al.'s 20-way 1-shot within-alphabet
episodes (one alphabet's characters, support drawn by one person and query
by another; Tagalog's 17 characters are too few), next to raw-pixel nearest
centroids on the same episodes. Prints one JSON line.

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
    within_alphabet,
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
    X_train, y_train, X_test, y_test, alphabet_test, drawer_test = omniglot_split(
        test_sources=True
    )
    budget = TimeBudget(args.budget)
    # Every parameter that shapes the numbers is set here, so that a change
    # of the library's defaults does not move them.
    clf = MetaMetricClassifier(
        metric=args.metric,
        metric_rank=0,
        finetune_steps=0,
        finetune_lr=1e-3,
        backbone=args.backbone,
        embedding_dim=64,
        input_shape=None,
        n_way=args.train_way,
        k_shot=1,
        n_query=args.train_query,
        meta_batch_size=1,
        meta_lr=args.meta_lr,
        meta_lr_schedule="constant",
        max_epochs=10_000,  # the time budget stops training
        episodes_per_epoch=500,
        validation_fraction=0.0,
        callbacks=[budget],
        augment=random_affine(args.augment),
        device=args.device,
        distributed=False,
        inference_dtype="float32",
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
    within = within_alphabet(alphabet_test, drawer_test, args.episodes, args.seed)
    figures["within_alphabet_20way_1shot"] = rounded(
        evaluate_few_shot(clf, X_test, y_test, **within)
    )
    figures["within_alphabet_20way_1shot_pixels"] = rounded(
        evaluate_nearest_centroid(X_test, y_test, **within)
    )
    figures["total_seconds"] = seconds_since(start)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
