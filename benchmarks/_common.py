"""Shared pieces of the benchmarks: the Omniglot split and a time budget."""

from __future__ import annotations

import math
import time

import numpy as np
from skorch.callbacks import Callback

from sklearn_meta.datasets import load_omniglot, omniglot_path
from sklearn_meta.nn.augment import RandomAffine

TRAIN_ALPHABETS = ("Balinese", "Greek", "Japanese_(katakana)", "Korean", "Latin")
TEST_ALPHABETS = ("Early_Aramaic", "Sanskrit", "Tagalog")


def omniglot_split(image_size: int = 28, *, test_sources: bool = False):
    """Training classes (with rotations as extra classes) and test classes.

    Returns ``X_train, y_train, X_test, y_test``: 644 training classes (161
    characters of five alphabets, each in four rotations) and the 81
    unrotated characters of three other alphabets. With ``test_sources``
    also the test samples' alphabet and drawer, for within-alphabet
    episodes whose support and query are by different drawers.
    """
    path = omniglot_path()
    train = load_omniglot(
        path, image_size=image_size, rotations=True, alphabets=list(TRAIN_ALPHABETS)
    )
    test = load_omniglot(path, image_size=image_size, alphabets=list(TEST_ALPHABETS))
    # Test labels follow the training ones: the same integer for two
    # different characters would read as a class seen in meta-training.
    test_target = test.target + train.target.max() + 1
    split = (train.data, train.target, test.data, test_target)
    if test_sources:
        return (*split, test.alphabet, test.drawer)
    return split


def within_alphabet(alphabet, drawer, n_episodes: int, seed: int) -> dict:
    """Arguments of Lake et al.'s 20-way 1-shot within-alphabet episodes.

    The 20 characters of an episode come from one alphabet; one drawer drew
    all its support drawings and another all its query drawings. Alphabets
    with fewer than 20 characters (Tagalog has 17) are never drawn, with a
    warning.
    """
    return dict(
        n_way=20,
        k_shot=1,
        n_query=1,
        n_episodes=n_episodes,
        groups=alphabet,
        sources=drawer,
        random_state=seed,
    )


class TimeBudget(Callback):
    """Stop meta-training after ``seconds``, annealing the LR over that time.

    The learning rate follows a cosine from its initial value to
    ``final_fraction`` of it as the wall-clock budget is spent, the schedule
    the prototypical-network paper's step decay approximates, and training
    stops (skorch treats ``KeyboardInterrupt`` as a request to stop and keeps
    the model) when the budget is over.
    """

    def __init__(self, seconds: float, final_fraction: float = 0.02):
        self.seconds = seconds
        self.final_fraction = final_fraction

    def on_train_begin(self, net, **kwargs):
        self.start_ = time.perf_counter()
        self.base_lrs_ = [group["lr"] for group in net.optimizer_.param_groups]
        self.steps_ = 0

    def on_batch_begin(self, net, training=False, **kwargs):
        if not training:
            return
        fraction = min(1.0, (time.perf_counter() - self.start_) / self.seconds)
        scale = self.final_fraction + (1 - self.final_fraction) * 0.5 * (
            1 + math.cos(math.pi * fraction)
        )
        for group, base in zip(
            net.optimizer_.param_groups, self.base_lrs_, strict=True
        ):
            group["lr"] = base * scale

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.steps_ += 1
            if time.perf_counter() - self.start_ > self.seconds:
                raise KeyboardInterrupt


def random_affine(spec: str):
    """A RandomAffine from ``"rotation,scale,translation"``, or None for ``"none"``."""
    if spec.lower() == "none":
        return None
    rotation, scale, translation = (float(value) for value in spec.split(","))
    return RandomAffine(rotation=rotation, scale=scale, translation=translation)


def rounded(result) -> dict:
    """A FewShotResult as percentages for the JSON line."""
    return {"mean": round(100 * result.mean, 2), "ci95": round(100 * result.ci95, 2)}


def seconds_since(start: float) -> float:
    return round(time.perf_counter() - start, 1)


__all__ = [
    "TimeBudget",
    "np",
    "omniglot_split",
    "random_affine",
    "rounded",
    "seconds_since",
    "within_alphabet",
]
