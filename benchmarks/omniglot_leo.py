"""LEO on a frozen meta-learned embedding, against prototypes on the same features.

Omniglot, the protocol of the other Omniglot benchmarks: a
MetaMetricClassifier (stride-2 Conv4, 20-way training episodes, random
affine augmentation) is meta-trained on five alphabets (161 characters, with 90/180/270-degree
rotations as extra classes: 644 classes) within a time budget and frozen;
LEOTransformer is then meta-trained on its embeddings of the training
classes, one model for 1-shot and one for 5-shot episodes (as in the paper).
Both are tested 5-way 1- and 5-shot on three other alphabets
(Early_Aramaic, Sanskrit, Tagalog: 81 characters), 1000 episodes with 95%
intervals, on the same episodes as raw-pixel nearest centroids.

Glyphs (600 training and 100 test classes of ``make_glyph_tasks``, flat
pixel rows with ``input_shape``): ``make_pipeline(MetaMetricClassifier,
LEOTransformer)``, the paper's two-stage setup in one pipeline, and LEO
directly on the pixels, 5-way 1-shot.

Prints one JSON line (accuracies in percent).

    python benchmarks/omniglot_leo.py            # about 15 minutes
    python benchmarks/omniglot_leo.py --quick    # about 2 minutes
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
from sklearn.pipeline import make_pipeline  # noqa: E402

from sklearn_meta import LEOTransformer, MetaMetricClassifier  # noqa: E402
from sklearn_meta.datasets import make_glyph_tasks  # noqa: E402
from sklearn_meta.model_selection import (  # noqa: E402
    evaluate_few_shot,
    evaluate_nearest_centroid,
)

GLYPH_SHAPE = (1, 28, 28)


def embedding(seconds: float, args, **params) -> MetaMetricClassifier:
    """The prototypical network whose embedding LEO runs on."""
    return MetaMetricClassifier(
        backbone="conv4_strided",
        n_way=20,
        n_query=5,
        meta_lr=2e-3,
        meta_lr_schedule="constant",
        max_epochs=100_000,  # the time budget stops training
        episodes_per_epoch=500,
        callbacks=[TimeBudget(seconds)],
        device=args.device,
        random_state=args.seed,
        **params,
    )


def leo(seconds: float, args, **params) -> LEOTransformer:
    """LEO with its defaults, meta-trained for ``seconds``."""
    return LEOTransformer(
        max_epochs=100_000,  # the time budget stops training
        episodes_per_epoch=500,
        callbacks=[TimeBudget(seconds)],
        device=args.device,
        random_state=args.seed,
        **params,
    )


def training_episodes(estimator) -> int:
    batches = sum(len(epoch["batches"]) for epoch in estimator.history_)
    return int(batches * estimator.meta_batch_size)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--embedding-budget", type=float, default=270.0, help="seconds, Omniglot"
    )
    parser.add_argument(
        "--leo-budget", type=float, default=75.0, help="seconds per LEO model"
    )
    parser.add_argument(
        "--glyph-budget",
        type=float,
        default=135.0,
        help="seconds for the glyph embedding (its LEO and pixel LEO: --leo-budget)",
    )
    parser.add_argument(
        "--augment",
        default="10,0.1,2",
        help="RandomAffine of the Omniglot embedding's training images, or none",
    )
    parser.add_argument("--episodes", type=int, default=1000, help="test episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--quick", action="store_true", help="short budgets, 200 test episodes"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.embedding_budget, args.leo_budget, args.glyph_budget = 20.0, 5.0, 10.0
        args.episodes = 200
    start = time.perf_counter()
    figures: dict = {
        "benchmark": "omniglot_leo",
        "torch_threads": torch.get_num_threads(),
        "params": {k: v for k, v in vars(args).items() if k != "quick"},
        "quick": args.quick,
    }

    def episodes(k_shot):
        return dict(
            n_way=5,
            k_shot=k_shot,
            n_query=15,
            n_episodes=args.episodes,
            random_state=args.seed,
        )

    # -- Omniglot: LEO and prototypes on the same frozen embedding ------------
    X_train, y_train, X_test, y_test = omniglot_split()
    prototypes = embedding(
        args.embedding_budget, args, augment=random_affine(args.augment)
    ).fit(X_train, y_train)
    features_train = prototypes.transform(X_train)
    features_test = prototypes.transform(X_test)
    omniglot: dict = {
        "n_train_classes": int(len(set(y_train.tolist()))),
        "n_test_classes": int(len(set(y_test.tolist()))),
        "embedding_train_episodes": training_episodes(prototypes),
    }
    for k_shot in (1, 5):
        model = leo(args.leo_budget, args, k_shot=k_shot).fit(features_train, y_train)
        omniglot[f"leo_{k_shot}shot_train_episodes"] = training_episodes(model)
        omniglot[f"5way_{k_shot}shot"] = {
            "leo": rounded(
                evaluate_few_shot(model, features_test, y_test, **episodes(k_shot))
            ),
            "prototypes": rounded(
                evaluate_few_shot(prototypes, X_test, y_test, **episodes(k_shot))
            ),
            "pixels": rounded(
                evaluate_nearest_centroid(X_test, y_test, **episodes(k_shot))
            ),
        }
    figures["device"] = str(prototypes.net_.device)
    figures["omniglot"] = omniglot

    # -- Glyphs: the two-stage pipeline, and LEO on the pixels ----------------
    X, y = make_glyph_tasks(n_classes=700, n_per_class=20, random_state=args.seed)
    X = X.reshape(len(X), -1)
    train = y < 600
    pipe = make_pipeline(
        embedding(args.glyph_budget, args, input_shape=GLYPH_SHAPE),
        leo(args.leo_budget, args),
    ).fit(X[train], y[train])
    on_pixels = leo(args.leo_budget, args, input_shape=GLYPH_SHAPE).fit(
        X[train], y[train]
    )
    figures["glyphs"] = {
        "n_train_classes": 600,
        "n_test_classes": 100,
        "5way_1shot": {
            "pipeline_leo": rounded(
                evaluate_few_shot(pipe, X[~train], y[~train], **episodes(1))
            ),
            "prototypes": rounded(
                evaluate_few_shot(pipe[0], X[~train], y[~train], **episodes(1))
            ),
            "leo_on_pixels": rounded(
                evaluate_few_shot(on_pixels, X[~train], y[~train], **episodes(1))
            ),
            "pixels": rounded(
                evaluate_nearest_centroid(X[~train], y[~train], **episodes(1))
            ),
        },
    }
    figures["total_seconds"] = seconds_since(start)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
