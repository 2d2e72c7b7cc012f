"""MetaMetricClassifier with default parameters on the synthetic glyphs.

600 training classes, 100 new ones, 20 drawings each; every parameter at its
default but the seed (``--seed``, which also draws the glyphs). Prints 5-way
1- and 5-shot accuracy next to raw-pixel nearest centroids on the same
episodes, and the seconds of ``fit``, as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import rounded, seconds_since  # noqa: E402

from sklearn_meta import MetaMetricClassifier  # noqa: E402
from sklearn_meta.datasets import make_glyph_tasks  # noqa: E402
from sklearn_meta.model_selection import evaluate_few_shot, evaluate_nearest_centroid  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    seed = parser.parse_args(argv).seed
    start = time.perf_counter()
    X, y = make_glyph_tasks(n_classes=700, n_per_class=20, random_state=seed)
    train = y < 600
    clf = MetaMetricClassifier(random_state=seed)
    fit_start = time.perf_counter()
    clf.fit(X[train], y[train])
    fit_seconds = seconds_since(fit_start)
    figures = {
        "benchmark": "glyphs_metric_defaults",
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "fit_seconds": fit_seconds,
    }
    for k_shot in (1, 5):
        common = dict(
            n_way=5, k_shot=k_shot, n_query=15, n_episodes=1000, random_state=0
        )
        figures[f"5way_{k_shot}shot"] = rounded(
            evaluate_few_shot(clf, X[~train], y[~train], **common)
        )
        figures[f"5way_{k_shot}shot_pixels"] = rounded(
            evaluate_nearest_centroid(X[~train], y[~train], **common)
        )
    figures["total_seconds"] = seconds_since(start)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
