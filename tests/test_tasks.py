"""Tasks, episode samplers and episode planning."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sklearn_meta import TaskCollection
from sklearn_meta.tasks import (
    EpisodeSampler,
    GroupTaskSampler,
    group_plan,
    make_sampler,
    plan_episodes,
    training_and_validation_samplers,
)


@settings(max_examples=40, deadline=None)
@given(
    n_classes=st.integers(2, 12),
    n_per_class=st.integers(2, 8),
    n_way=st.integers(2, 6),
    k_shot=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_episodes_have_distinct_classes_disjoint_sets_and_remapped_labels(
    n_classes, n_per_class, n_way, k_shot, seed
):
    """Every episode: n_way distinct classes, disjoint support/query, labels 0..n_way-1."""
    if n_per_class <= k_shot or n_classes < n_way:
        return
    n_query = n_per_class - k_shot
    labels = np.random.default_rng(seed).permutation(
        np.repeat(np.arange(n_classes), n_per_class)
    )
    episodes = EpisodeSampler(labels, n_way, k_shot, n_query, seed=seed).sample(5)
    for e in range(5):
        support = episodes.support_index[e].numpy()
        query = episodes.query_index[e].numpy()
        assert not set(support) & set(query)
        assert len(set(support)) == len(support) and len(set(query)) == len(query)
        classes = labels[support].reshape(n_way, k_shot)
        assert len(np.unique(classes[:, 0])) == n_way
        assert (classes == classes[:, :1]).all()
        # The remapped label of every sample names its real class consistently.
        mapping = dict(
            zip(episodes.support_target[e].tolist(), labels[support], strict=True)
        )
        assert sorted(mapping) == list(range(n_way))
        assert [mapping[t] for t in episodes.query_target[e].tolist()] == labels[
            query
        ].tolist()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_sampler_is_deterministic_for_a_seed(seed):
    """The same seed draws the same episodes, whatever the global RNG does."""
    labels = np.repeat(np.arange(10), 5)
    first = EpisodeSampler(labels, 3, 1, 2, seed=seed).sample(4)
    torch.rand(100)
    second = EpisodeSampler(labels, 3, 1, 2, seed=seed).sample(4)
    assert torch.equal(first.support_index, second.support_index)
    assert torch.equal(first.query_index, second.query_index)


def test_sampler_skips_classes_too_small_and_covers_the_rest():
    """Classes with fewer than k_shot + n_query samples are never drawn."""
    labels = np.array([0] * 5 + [1] * 5 + [2] * 2 + [3] * 5)
    episodes = EpisodeSampler(labels, 2, 1, 3, seed=0).sample(200)
    drawn = np.unique(labels[episodes.support_index.numpy()])
    assert drawn.tolist() == [0, 1, 3]


def test_sampler_with_too_few_classes_raises():
    """Asking for more ways than usable classes is a clear error."""
    with pytest.raises(ValueError, match="lower n_way"):
        EpisodeSampler(np.repeat(np.arange(3), 3), 4, 1, 2, seed=0)


def test_plan_episodes_shrinks_with_a_warning_and_fails_when_impossible():
    """Small data shrinks n_way and n_query; no possible episode is an error."""
    with pytest.warns(UserWarning, match="n_way=3 and n_query=4"):
        assert plan_episodes([5, 6, 9], 5, 1, 15) == (3, 4)
    assert plan_episodes([20] * 10, 5, 1, 15) == (5, 15)
    # The same plan serves evaluation: its warning must not speak of training.
    with pytest.warns(UserWarning, match="the data to evaluate allows") as record:
        plan_episodes([5, 6, 9], 5, 1, 15, where=" to evaluate")
    assert "training" not in str(record[0].message)
    with pytest.raises(ValueError, match="lower k_shot"):
        plan_episodes([1, 1, 5], 5, 1, 15)


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    n_features=st.integers(1, 4),
)
def test_task_collection_round_trips(sizes, n_features):
    """Tasks -> X, y, groups -> tasks gives back the same tasks."""
    rng = np.random.default_rng(0)
    tasks = [(rng.normal(size=(n, n_features)), rng.integers(0, 3, n)) for n in sizes]
    X, y, groups = TaskCollection(tasks).to_arrays()
    again = TaskCollection.from_arrays(X, y, groups)
    assert len(again) == len(tasks)
    for (X1, y1), (X2, y2) in zip(tasks, again, strict=True):
        np.testing.assert_array_equal(X1, X2)
        np.testing.assert_array_equal(y1, y2)


@pytest.mark.parametrize(
    "tasks, match",
    [
        ([], "at least one"),
        ([np.zeros((3, 2))], "must be an \\(X, y\\) pair"),
        ([(np.zeros(3), [0, 1, 0])], "must be 2-D"),
        ([(np.zeros((3, 2)), [0, 1])], "one target per sample"),
        ([(np.zeros((3, 2)), [0, 1, 0]), (np.zeros((3, 4)), [0, 1, 0])], "same shape"),
    ],
)
def test_task_collection_bad_input(tasks, match):
    """Malformed tasks raise a ValueError that says what is wrong."""
    with pytest.raises(ValueError, match=match):
        TaskCollection(tasks)


def test_from_arrays_length_mismatch():
    """X, y and groups of different lengths are rejected."""
    with pytest.raises(ValueError, match="same length"):
        TaskCollection.from_arrays(np.zeros((4, 2)), [0, 1, 0, 1], [0, 0, 1])


def test_group_sampler_regression_and_classification():
    """Group tasks stay inside one group; regression targets are the raw values."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(6), 10)
    y = rng.normal(size=60).astype(np.float32)
    episodes = GroupTaskSampler(y, groups, 5, 3, 4, regression=True, seed=0).sample(8)
    for e in range(8):
        members = np.concatenate([episodes.support_index[e], episodes.query_index[e]])
        assert len(np.unique(groups[members])) == 1
        assert len(set(members)) == 7
        np.testing.assert_allclose(
            episodes.support_target[e], y[episodes.support_index[e]]
        )
    groups = np.repeat(np.arange(6), 12)
    labels = np.tile(np.repeat(np.arange(3), 4), 6) + 10 * groups
    episodes = GroupTaskSampler(
        labels, groups, 3, 1, 2, regression=False, seed=0
    ).sample(8)
    assert episodes.query_target.max() == 2
    for e in range(8):
        assert len(np.unique(groups[episodes.query_index[e]])) == 1


def test_group_plan_errors_and_shrinking():
    """Groups too small for one task raise; smaller tasks shrink n_query."""
    groups = np.repeat(np.arange(3), 4)
    with pytest.raises(ValueError, match="lower k_shot"):
        group_plan(np.zeros(12), groups, 5, 4, 5, regression=True)
    with pytest.warns(UserWarning, match="n_query=2"):
        assert group_plan(np.zeros(12), groups, 5, 2, 5, regression=True) == (5, 2)
    # evaluate_few_shot(groups=...) plans with it too: no word of training.
    with pytest.warns(UserWarning, match="to evaluate allows n_query=2") as record:
        group_plan(np.zeros(12), groups, 5, 2, 5, regression=True, where=" to evaluate")
    assert "training" not in str(record[0].message)
    labels = np.tile([0, 0, 1, 1], 3)
    with pytest.warns(UserWarning, match="tasks to evaluate allow episodes") as record:
        group_plan(labels, groups, 5, 1, 5, regression=False, where=" to evaluate")
    assert "training" not in str(record[0].message)


def test_validation_split_holds_out_whole_classes_or_tasks():
    """Meta-validation gets round(fraction * n) classes (tasks), none shared with training."""
    targets = np.repeat(np.arange(10), 4)
    train, valid = training_and_validation_samplers(
        targets, None, 3, 1, 2, validation_fraction=0.3, regression=False, seed=0
    )
    train_classes, valid_classes = (
        np.unique(targets[train[0]]),
        np.unique(targets[valid[0]]),
    )
    assert len(valid_classes) == 3 and len(train_classes) == 7
    assert not np.isin(valid_classes, train_classes).any()
    episodes = valid[1].sample(5)
    assert int(episodes.support_index.max()) < len(valid[0])
    groups = np.repeat(np.arange(8), 5)
    train, valid = training_and_validation_samplers(
        np.arange(40) % 2,
        groups,
        2,
        1,
        1,
        validation_fraction=0.25,
        regression=False,
        seed=0,
    )
    assert len(np.unique(groups[valid[0]])) == 2
    assert not np.isin(groups[valid[0]], groups[train[0]]).any()
    _, none = training_and_validation_samplers(
        targets, None, 3, 1, 2, validation_fraction=0.0, regression=False, seed=0
    )
    assert none is None
    with pytest.raises(ValueError, match="holds out 0 of 10 classes"):
        training_and_validation_samplers(
            targets, None, 3, 1, 2, validation_fraction=0.01, regression=False, seed=0
        )


def test_make_sampler_shrinks_and_draws_within_groups():
    """make_sampler shrinks episodes to small data and keeps a task's samples together."""
    targets = np.repeat(np.arange(3), 3)
    with pytest.warns(UserWarning, match="n_way=3 and n_query=2"):
        sampler = make_sampler(targets, None, 5, 1, 4, seed=0)
    assert sampler.sample(2).query_index.shape == (2, 6)
    groups = np.repeat([0, 1], 6)
    episodes = make_sampler(np.arange(12) % 3, groups, 3, 1, 1, seed=0).sample(4)
    for support, query in zip(
        episodes.support_index, episodes.query_index, strict=True
    ):
        drawn = groups[np.concatenate([support.numpy(), query.numpy()])]
        assert len(np.unique(drawn)) == 1
