"""Within-alphabet evaluation: episodes by group, support and query by different sources."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from sklearn.base import BaseEstimator
from test_datasets import OMNIGLOT, needs_omniglot

from sklearn_meta.datasets import load_omniglot
from sklearn_meta.model_selection import (
    evaluate_few_shot,
    evaluate_nearest_centroid,
    make_few_shot_scorer,
)
from sklearn_meta.tasks import EpisodeSampler, make_sampler


class EpisodeRecorder(BaseEstimator):
    """A fitted stand-in meta-learner that keeps the episodes it is scored on."""

    def fit(self, X, y):
        return self

    def partial_fit(self, X, y):
        return self

    def reset_adaptation(self):
        return self

    def __sklearn_is_fitted__(self):
        return True

    def _few_shot_scores(self, X, episodes):
        self.episodes = episodes
        return np.zeros(len(episodes))


def _grid(n_groups=2, n_classes=6, n_sources=8, per_cell=2):
    """Every class of every group has ``per_cell`` samples by each source."""
    cells = n_groups * n_classes * n_sources
    y = np.repeat(np.arange(n_groups * n_classes), n_sources * per_cell)
    groups = y // n_classes
    sources = np.tile(np.repeat(np.arange(n_sources), per_cell), n_groups * n_classes)
    X = np.random.default_rng(0).normal(size=(cells * per_cell, 4))
    return X, y, groups, sources


def _check_source_disjoint(episodes, y, sources, n_way, k_shot, n_query):
    for e in range(len(episodes)):
        support = episodes.support_index[e].numpy().reshape(n_way, k_shot)
        query = episodes.query_index[e].numpy().reshape(n_way, n_query)
        assert not set(sources[support.ravel()]) & set(sources[query.ravel()])
        # Every class has one sample by each of the episode's sources.
        for rows, width in ((support, k_shot), (query, n_query)):
            assert all(len(set(sources[row])) == width for row in rows)
            assert all((sources[row] == sources[rows[0]]).all() for row in rows)
            assert all(len(set(y[row])) == 1 for row in rows)
        assert_array_equal(y[support[:, 0]], y[query[:, 0]])


def test_sources_separate_support_and_query_in_every_episode():
    """With sources no episode has a source in both its support and its query."""
    X, y, groups, sources = _grid()
    recorder = EpisodeRecorder()
    evaluate_few_shot(
        recorder,
        X,
        y,
        n_way=4,
        k_shot=2,
        n_query=3,
        n_episodes=60,
        groups=groups,
        sources=sources,
        random_state=0,
    )
    episodes = recorder.episodes
    _check_source_disjoint(episodes, y, sources, 4, 2, 3)
    for e in range(len(episodes)):
        drawn = np.concatenate([episodes.support_index[e], episodes.query_index[e]])
        assert len(np.unique(groups[drawn])) == 1
    # Without groups the classes come from the whole pool.
    sampler = EpisodeSampler(y, 5, 1, 6, seed=0, sources=sources)
    _check_source_disjoint(sampler.sample(60), y, sources, 5, 1, 6)


def test_sources_with_sparse_coverage_draw_classes_sharing_sources():
    """Classes drawn together share the sources of their episode."""
    X, y, _, sources = _grid(n_groups=1, n_classes=8, n_sources=4, per_cell=1)
    # Classes 0-3 lack source 0, classes 4-7 lack source 3.
    keep = ~(((y < 4) & (sources == 0)) | ((y >= 4) & (sources == 3)))
    y, sources = y[keep], sources[keep]
    episodes = EpisodeSampler(y, 3, 1, 2, seed=0, sources=sources).sample(40)
    _check_source_disjoint(episodes, y, sources, 3, 1, 2)


@needs_omniglot
def test_lake_within_alphabet_protocol_on_omniglot():
    """20-way 1-shot within an alphabet: one support drawer, another query drawer."""
    test = load_omniglot(OMNIGLOT, alphabets=["Early_Aramaic", "Sanskrit", "Tagalog"])
    with pytest.warns(UserWarning, match=r"'Tagalog' \(17 classes\)"):
        sampler = make_sampler(
            test.target, test.alphabet, 20, 1, 1, seed=0, sources=test.drawer
        )
    episodes = sampler.sample(100)
    for e in range(len(episodes)):
        support = episodes.support_index[e].numpy()
        query = episodes.query_index[e].numpy()
        assert len(set(test.drawer[support])) == 1
        assert len(set(test.drawer[query])) == 1
        assert test.drawer[support[0]] != test.drawer[query[0]]
        assert len(set(test.alphabet[np.r_[support, query]])) == 1
        assert_array_equal(test.target[support], test.target[query])
        assert len(set(test.target[support])) == 20


def test_groups_with_too_few_classes_are_named_in_a_warning():
    """A group with fewer than n_way classes is dropped with a warning, not silently."""
    X, y, groups, _ = _grid(n_groups=3, n_classes=6, n_sources=2, per_cell=2)
    names = np.array(["Greek", "Tagalog", "Latin"])[groups]
    small = (names != "Tagalog") | (y % 6 < 3)
    with pytest.warns(
        UserWarning, match=r"1 of the 3 groups .*'Tagalog' \(3 classes\)"
    ):
        result = evaluate_nearest_centroid(
            X[small], y[small], n_way=5, n_query=2, groups=names[small], n_episodes=20
        )
    assert len(result.scores) == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_nearest_centroid(
            X[small], y[small], n_way=3, n_query=2, groups=names[small], n_episodes=5
        )


def test_no_group_with_enough_sourced_classes_is_an_error():
    """If no group has n_way classes by enough sources, a ValueError says what to lower."""
    X, y, groups, sources = _grid(n_groups=2, n_classes=4, n_sources=3, per_cell=2)
    sources = np.where(y % 4 == 0, 0, sources)  # class 0 of each group: one source
    with pytest.raises(ValueError, match="no group .* different sources; lower"):
        evaluate_nearest_centroid(
            X, y, n_way=4, k_shot=1, n_query=2, groups=groups, sources=sources
        )


@pytest.mark.parametrize(
    ("sources", "match"),
    [
        (np.zeros(5), "one entry per sample"),
        (np.zeros((192, 2)), "one entry per sample"),
        (np.array([0, "a"] * 96, dtype=object), "values that sort"),
        (np.arange(192) % 3, "3 distinct values.*lower k_shot or n_query"),
    ],
)
def test_bad_sources_raise_and_change_nothing(sources, match):
    """Bad sources raise a ValueError saying what to change; the seed generator is untouched."""
    X, y, groups, _ = _grid()
    rng = np.random.RandomState(0)
    before = rng.get_state()[1].copy()
    with pytest.raises(ValueError, match=match):
        evaluate_few_shot(
            EpisodeRecorder(),
            X,
            y,
            k_shot=2,
            n_query=2,
            groups=groups,
            sources=sources,
            random_state=rng,
        )
    assert_array_equal(rng.get_state()[1], before)


def test_sources_are_for_classification_only():
    """Regression tasks with sources, or a continuous y in the baseline, are rejected."""
    X, _, groups, sources = _grid()
    y = np.linspace(0, 1, len(X))
    with pytest.raises(ValueError, match="sources apply to classification"):
        evaluate_few_shot(EpisodeRecorder(), X, y, groups=groups, sources=sources)
    with pytest.raises(ValueError, match="classification baseline"):
        evaluate_nearest_centroid(X, y, groups=groups, n_episodes=5)


def test_scorer_forwards_groups_and_sources():
    """The few-shot scorer draws the episodes evaluate_few_shot draws."""
    X, y, groups, sources = _grid()
    scorer_recorder, direct_recorder = EpisodeRecorder(), EpisodeRecorder()
    make_few_shot_scorer(n_way=3, n_query=2, n_episodes=10)(
        scorer_recorder, X, y, groups=groups, sources=sources
    )
    evaluate_few_shot(
        direct_recorder,
        X,
        y,
        n_way=3,
        n_query=2,
        n_episodes=10,
        groups=groups,
        sources=sources,
        random_state=0,
    )
    assert_array_equal(
        scorer_recorder.episodes.query_index, direct_recorder.episodes.query_index
    )


def test_no_sources_draws_the_episodes_it_always_drew():
    """sources=None keeps the random stream: these indices are pinned."""
    y = np.repeat(np.arange(6), 4)
    episodes = make_sampler(y, None, 3, 1, 2, seed=0).sample(2)
    assert episodes.support_index.tolist() == [[8, 14, 18], [19, 20, 11]]
    assert episodes.query_index.tolist() == [
        [9, 10, 15, 12, 16, 19],
        [16, 17, 22, 21, 10, 8],
    ]
    episodes = make_sampler(y, np.repeat([0, 1], 12), 2, 1, 2, seed=0).sample(2)
    assert episodes.support_index.tolist() == [[3, 7], [14, 18]]
    assert episodes.query_index.tolist() == [[1, 0, 5, 6], [15, 12, 16, 19]]
