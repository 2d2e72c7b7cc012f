"""The sklearn-meta command line."""

import json

import pytest

from sklearn_meta.__main__ import main
from sklearn_meta.datasets import omniglot_path


@pytest.mark.parametrize("estimator", ["metric", "maml", "leo"])
def test_demo_runs_and_prints_figures(estimator, capsys):
    """A tiny demo run prints one JSON line with accuracy next to raw pixels."""
    main(
        [
            "demo",
            "--estimator",
            estimator,
            "--epochs",
            "1",
            "--train-episodes",
            "8",
            "--episodes",
            "20",
            "--shots",
            "1",
            "--json",
            "--device",
            "cpu",
        ]
    )
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["estimator"] == estimator
    assert 0.0 <= figures["5way_1shot"] <= 1.0
    assert 0.3 < figures["5way_1shot_pixels"] < 0.7


def test_demo_on_omniglot_holds_out_alphabets(capsys):
    """--data reads Omniglot and tests on alphabets never trained on."""
    path = omniglot_path()
    if not path.exists():
        pytest.skip(f"Omniglot not found at {path}")
    main(
        [
            "demo",
            "--data",
            str(path),
            "--epochs",
            "1",
            "--train-episodes",
            "4",
            "--episodes",
            "10",
            "--shots",
            "1",
            "--json",
            "--device",
            "cpu",
        ]
    )
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "Early_Aramaic" in figures["data"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--estimator", "nope"], "invalid choice"),
        (["demo", "--shots", "0"], "positive integer"),
        (["demo", "--epochs", "two"], "positive integer"),
        (["demo", "--data", "/no/such/folder"], "does not exist"),
        (
            ["demo", "--ways", "500", "--epochs", "1", "--train-episodes", "1"],
            "held-out classes",
        ),
        (["demo", "--device", "tpu", "--epochs", "1"], "device"),
        ([], "required"),
    ],
)
def test_bad_options_exit_with_a_message(argv, message, capsys):
    """Bad options end with status 2 and a message naming the problem."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
