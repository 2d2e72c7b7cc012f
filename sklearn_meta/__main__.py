"""Command line: ``sklearn-meta demo`` (or ``python -m sklearn_meta demo``).

The demo meta-trains on the embedded synthetic glyphs (or an Omniglot folder
or zip) and prints few-shot accuracy on held-out classes next to the
raw-pixel nearest-centroid baseline; ``--plot FILE`` also saves them, with the
meta-training loss, as a figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

#: Omniglot alphabets held out for testing, as in the project's benchmarks.
TEST_ALPHABETS = ("Early_Aramaic", "Sanskrit", "Tagalog")

ESTIMATORS = ("metric", "maml", "leo")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sklearn-meta", description="Meta-learning as scikit-learn estimators."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="meta-train on glyphs (or Omniglot) and print few-shot accuracy",
        description=(
            "Meta-train on 600 classes of synthetic handwritten glyphs (or an "
            "Omniglot folder/zip with --data) and print 5-way few-shot accuracy "
            "on 100 held-out classes next to raw-pixel nearest centroids."
        ),
    )
    demo.add_argument(
        "--estimator",
        choices=ESTIMATORS,
        default="metric",
        help="metric: prototypical network; maml: MAML; leo: LEO on a "
        "prototypical embedding",
    )
    demo.add_argument(
        "--shots",
        type=_positive_int,
        nargs="+",
        default=[1, 5],
        help="k-shot values to test",
    )
    demo.add_argument(
        "--ways", type=_positive_int, default=5, help="classes per test episode"
    )
    demo.add_argument(
        "--episodes", type=_positive_int, default=600, help="test episodes"
    )
    demo.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="meta-training epochs (default: the estimator's max_epochs)",
    )
    demo.add_argument(
        "--train-episodes",
        type=_positive_int,
        default=None,
        help="episodes per epoch (default: the estimator's episodes_per_epoch)",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--data", default=None, help="Omniglot folder or zip instead of glyphs"
    )
    demo.add_argument("--device", default="auto")
    demo.add_argument("--json", action="store_true", help="print one JSON line")
    demo.add_argument(
        "--plot",
        metavar="FILE",
        default=None,
        help="save a figure of accuracy against shots (next to raw pixels) and "
        "of the meta-training loss to FILE (.png, .pdf, .svg; needs matplotlib)",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _load(data, seed):
    from .datasets import load_omniglot, make_glyph_tasks

    if data is None:
        X, y = make_glyph_tasks(n_classes=700, n_per_class=20, random_state=seed)
        train = y < 600
        return X[train], y[train], X[~train], y[~train], "synthetic glyphs"
    bunch = load_omniglot(data)
    alphabets = np.unique(bunch.alphabet)
    held_out = [a for a in alphabets if a in TEST_ALPHABETS] or list(
        alphabets[-max(1, len(alphabets) // 3) :]
    )
    test = np.isin(bunch.alphabet, held_out)
    if test.all() or not test.any():
        raise ValueError(
            f"--data {data!r} has alphabets {alphabets.tolist()}: need at least two "
            "to hold some out for testing"
        )
    return (
        bunch.data[~test],
        bunch.target[~test],
        bunch.data[test],
        bunch.target[test],
        f"Omniglot ({', '.join(held_out)} held out)",
    )


def _estimator(name, args, n_way):
    """The meta-learner the demo trains: the estimators' defaults."""
    from sklearn.pipeline import make_pipeline

    from . import LEOTransformer, MAMLFeatureExtractor, MetaMetricClassifier

    common = dict(
        device=args.device,
        random_state=args.seed,
        verbose=0 if args.quiet or args.json else 1,
    )
    if args.epochs is not None:
        common["max_epochs"] = args.epochs
    if args.train_episodes is not None:
        common["episodes_per_epoch"] = args.train_episodes
    if name == "maml":
        return MAMLFeatureExtractor(n_way=n_way, **common)
    metric = MetaMetricClassifier(**common)
    if name == "leo":
        # LEO on a meta-learned embedding: the paper's two-stage setup.
        return make_pipeline(metric, LEOTransformer(n_way=n_way, **common))
    return metric


def _check_plot_file(path: str) -> None:
    """Fail before any training if ``path`` cannot be written as a figure."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError(
            "--plot needs matplotlib: pip install matplotlib (or "
            "pip install 'sklearn-meta[plot]')"
        ) from None
    formats = Figure().canvas.get_supported_filetypes()
    suffix = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix not in formats:
        raise ValueError(
            f"--plot {path!r}: the file name must end in one of "
            f"{', '.join('.' + f for f in sorted(formats))}"
        )


def _save_plot(path: str, estimator, shots, learned, pixels, n_way: int) -> None:
    """Accuracy against shots next to raw pixels, and the meta-training loss."""
    from matplotlib.figure import Figure

    from .plotting import MetaTrainingDisplay, ShotCurveDisplay

    order = np.argsort(shots)
    learned, pixels = [learned[i] for i in order], [pixels[i] for i in order]
    # A Figure without pyplot: no window and no GUI backend, wherever it runs.
    figure = Figure(figsize=(11, 4), layout="constrained")
    shot_ax, training_ax = figure.subplots(1, 2)
    ShotCurveDisplay(
        shots=np.asarray(shots)[order],
        scores=[r.mean for r in learned],
        ci95=[r.ci95 for r in learned],
        baseline_scores=[r.mean for r in pixels],
        baseline_ci95=[r.ci95 for r in pixels],
        n_way=n_way,
        estimator_name="meta-learned",
    ).plot(ax=shot_ax)
    MetaTrainingDisplay.from_estimator(estimator, ax=training_ax)
    figure.savefig(path)


def demo(args) -> dict:
    """Run the demo; returns the figures it prints."""
    from .model_selection import evaluate_few_shot, evaluate_nearest_centroid

    if args.plot is not None:
        _check_plot_file(args.plot)
    start = time.perf_counter()
    X_train, y_train, X_test, y_test, source = _load(args.data, args.seed)
    n_test_classes = len(np.unique(y_test))
    if args.ways > n_test_classes:
        raise ValueError(
            f"--ways {args.ways} exceeds the {n_test_classes} held-out classes; lower --ways"
        )
    say = (lambda *a: None) if args.json else print
    say(
        f"Meta-training {args.estimator} on {len(np.unique(y_train))} classes of "
        f"{source}; testing on {n_test_classes} new classes."
    )
    estimator = _estimator(args.estimator, args, args.ways).fit(X_train, y_train)
    train_seconds = time.perf_counter() - start
    figures = {
        "data": source,
        "estimator": args.estimator,
        "train_seconds": round(train_seconds, 1),
    }
    say(
        f"\n{args.ways}-way accuracy on new classes ({args.episodes} episodes, 95% CI):"
    )
    results = []
    for k_shot in args.shots:
        common = dict(
            n_way=args.ways,
            k_shot=k_shot,
            n_query=15,
            n_episodes=args.episodes,
            random_state=args.seed,
        )
        learned = evaluate_few_shot(estimator, X_test, y_test, **common)
        pixels = evaluate_nearest_centroid(X_test, y_test, **common)
        say(f"  {k_shot}-shot: meta-learned {learned}   raw pixels {pixels}")
        figures[f"{args.ways}way_{k_shot}shot"] = round(learned.mean, 4)
        figures[f"{args.ways}way_{k_shot}shot_ci95"] = round(learned.ci95, 4)
        figures[f"{args.ways}way_{k_shot}shot_pixels"] = round(pixels.mean, 4)
        results.append((learned, pixels))
    if args.plot is not None:
        _save_plot(
            args.plot,
            estimator,
            args.shots,
            [learned for learned, _ in results],
            [pixels for _, pixels in results],
            args.ways,
        )
        say(f"\nFigure saved to {args.plot}.")
    figures["total_seconds"] = round(time.perf_counter() - start, 1)
    say(f"\nDone in {figures['total_seconds']:.0f} s.")
    if args.json:
        print(json.dumps(figures))
    return figures


def main(argv=None) -> int:
    """Entry point of the ``sklearn-meta`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            demo(args)
    except (ValueError, OSError) as error:
        parser.exit(2, f"sklearn-meta {args.command}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
