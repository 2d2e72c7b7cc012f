"""Omniglot few-shot accuracy of MAMLFeatureExtractor within a training budget.

Same data protocol as ``omniglot_metric.py``: five training alphabets with
rotations as extra classes (644 classes), tested on Early_Aramaic, Sanskrit
and Tagalog (81 characters). Defaults: learn2learn's network (Conv4 with
stride-2 convolutions), inner_lr 0.4, one inner step, second order; 20-way
training tasks with 5 queries per class, adapted by one step at training and
at test; a meta-batch of 4, Adam 3e-3, random affine augmentation of the
training images, and the learning rate annealed by a cosine over the
wall-clock budget. The measurements behind each choice are in
docs/defaults.md. Scored 5-way and 20-way 1-shot, and 20-way 1-shot within
one alphabet with support and query by different drawers (Lake et al.'s
protocol), next to raw-pixel nearest centroids. Prints one JSON line.

    python benchmarks/omniglot_maml.py            # 600 s budget
    python benchmarks/omniglot_maml.py --quick    # 60 s budget, 200 episodes
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

from sklearn_meta import MAMLFeatureExtractor  # noqa: E402
from sklearn_meta.model_selection import evaluate_few_shot, evaluate_nearest_centroid  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds")
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes")
    parser.add_argument("--backbone", default="conv4_strided")
    parser.add_argument("--inner-lr", type=float, default=0.4)
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument(
        "--adapt-steps",
        type=int,
        nargs="+",
        default=[1],
        help="steps at test; further values are scored on 5-way 1-shot too",
    )
    parser.add_argument("--meta-batch", type=int, default=4)
    parser.add_argument(
        "--train-way", type=int, default=20, help="classes per training task"
    )
    parser.add_argument(
        "--train-query",
        type=int,
        default=5,
        help="query samples per class in training",
    )
    parser.add_argument("--meta-lr", type=float, default=3e-3)
    parser.add_argument("--first-order", action="store_true")
    parser.add_argument("--anil", action="store_true", help="adapt the head only")
    parser.add_argument(
        "--learn-inner-lr",
        action="store_true",
        help="Meta-SGD: a learned per-parameter inner learning rate",
    )
    parser.add_argument(
        "--augment",
        default="10,0.1,2",
        help="RandomAffine rotation,scale,translation of the training images, or none",
    )
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
    # Every parameter that shapes the numbers is set here, so that a change
    # of the library's defaults does not move them.
    maml = MAMLFeatureExtractor(
        inner_lr=args.inner_lr,
        inner_steps=args.inner_steps,
        adapt_steps=args.adapt_steps[0],
        first_order=args.first_order,
        inner_params="head" if args.anil else "all",
        learn_inner_lr=args.learn_inner_lr,
        algorithm="maml",
        task="classification",
        backbone=args.backbone,
        embedding_dim=64,
        input_shape=None,
        n_way=args.train_way,
        k_shot=1,
        n_query=args.train_query,
        meta_batch_size=args.meta_batch,
        meta_lr=args.meta_lr,
        meta_lr_schedule="constant",
        max_epochs=10_000,  # the time budget stops training
        episodes_per_epoch=args.meta_batch * 50,
        validation_fraction=0.0,
        callbacks=[TimeBudget(args.budget)],
        augment=random_affine(args.augment),
        device=args.device,
        distributed=False,
        inference_dtype="float32",
        random_state=args.seed,
    )
    fit_start = time.perf_counter()
    maml.fit(X_train, y_train)
    n_batches = sum(len(epoch["batches"]) for epoch in maml.history_)
    figures = {
        "benchmark": "omniglot_maml",
        "device": str(maml.net_.device),
        "torch_threads": torch.get_num_threads(),
        "train_seconds": seconds_since(fit_start),
        "meta_iterations": n_batches,
        "params": {k: v for k, v in vars(args).items() if k != "quick"},
    }
    for n_way in (5, 20):
        common = dict(
            n_way=n_way,
            k_shot=1,
            n_query=15,
            n_episodes=args.episodes,
            random_state=args.seed,
        )
        figures[f"{n_way}way_1shot"] = rounded(
            evaluate_few_shot(maml, X_test, y_test, **common)
        )
        figures[f"{n_way}way_1shot_pixels"] = rounded(
            evaluate_nearest_centroid(X_test, y_test, **common)
        )
    within = within_alphabet(alphabet_test, drawer_test, args.episodes, args.seed)
    figures["within_alphabet_20way_1shot"] = rounded(
        evaluate_few_shot(maml, X_test, y_test, **within)
    )
    figures["within_alphabet_20way_1shot_pixels"] = rounded(
        evaluate_nearest_centroid(X_test, y_test, **within)
    )
    for steps in args.adapt_steps[1:]:
        maml.set_params(adapt_steps=steps)
        figures[f"5way_1shot_adapt_steps_{steps}"] = rounded(
            evaluate_few_shot(
                maml,
                X_test,
                y_test,
                n_way=5,
                k_shot=1,
                n_query=15,
                n_episodes=args.episodes,
                random_state=args.seed,
            )
        )
    figures["total_seconds"] = seconds_since(start)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
