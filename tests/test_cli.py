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


def test_demo_plot_saves_the_printed_figures(tmp_path, monkeypatch, capsys):
    """--plot saves accuracy against shots (the printed numbers) and the loss."""
    from matplotlib.figure import Figure

    saved = []
    save = Figure.savefig

    def record(figure, *args, **kwargs):
        saved.append(figure)
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    path = tmp_path / "demo.png"
    main(
        ["demo", "--epochs", "1", "--train-episodes", "8", "--episodes", "20",
         "--shots", "2", "1", "--json", "--device", "cpu", "--plot", str(path)]
    )  # fmt: skip
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    shot_ax, training_ax = saved[0].axes[:2]
    learned, pixels = shot_ax.get_lines()
    assert learned.get_xdata().tolist() == [1, 2]
    assert learned.get_ydata() == pytest.approx(
        [figures["5way_1shot"], figures["5way_2shot"]], abs=1e-4
    )
    assert pixels.get_ydata()[1] == pytest.approx(
        figures["5way_2shot_pixels"], abs=1e-4
    )
    assert training_ax.get_lines()[0].get_xdata()[-1] == 8  # episodes trained on
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
        (["demo", "--plot", "figure.xyz"], "file name must end in one of"),
        ([], "required"),
    ],
)
def test_bad_options_exit_with_a_message(argv, message, capsys):
    """Bad options end with status 2 and a message naming the problem."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
