"""MetaTrainingDisplay: the training loss and validation score of a fit."""

from __future__ import annotations

import numpy as np

from ._common import _axes, _learner, _pyplot


class MetaTrainingDisplay:
    """Meta-training loss and validation few-shot score against episodes seen.

    Drawn from the estimator's skorch history (``history_``): the loss of
    every meta-batch, and, when the estimator held out validation classes
    (``validation_fraction > 0``), the few-shot validation score at the end
    of every epoch on a second y-axis.

    Parameters
    ----------
    episodes : array-like of shape (n_batches,)
        Training episodes seen at the end of each meta-batch.
    train_loss : array-like of shape (n_batches,)
        Mean query loss of each meta-batch.
    epoch_episodes : array-like of shape (n_epochs,) or None, default=None
        Training episodes seen at the end of each epoch.
    valid_scores : array-like of shape (n_epochs,) or None, default=None
        Validation few-shot score at the end of each epoch.
    valid_name : str, default="valid_acc"
        The history key of ``valid_scores``, for the axis label.

    Attributes
    ----------
    line_ : matplotlib Line2D
        The training loss.
    valid_line_ : matplotlib Line2D or None
        The validation score.
    ax_ : matplotlib Axes
        The axes of the loss.
    valid_ax_ : matplotlib Axes or None
        The twin axes of the validation score.
    figure_ : matplotlib Figure
        The figure of ``ax_``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from sklearn_meta.plotting import MetaTrainingDisplay
    >>> display = MetaTrainingDisplay(
    ...     episodes=[16, 32, 48], train_loss=[1.6, 1.2, 1.0],
    ...     epoch_episodes=[48], valid_scores=[0.55],
    ... ).plot()
    >>> display.valid_line_.get_ydata().tolist()
    [0.55]
    """

    def __init__(
        self,
        *,
        episodes,
        train_loss,
        epoch_episodes=None,
        valid_scores=None,
        valid_name="valid_acc",
    ):
        self.episodes = episodes
        self.train_loss = train_loss
        self.epoch_episodes = epoch_episodes
        self.valid_scores = valid_scores
        self.valid_name = valid_name

    def plot(self, ax=None):
        """Draw the loss curve, and the validation score on a twin y-axis.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            Axes to draw the loss on; a new figure when None.

        Returns
        -------
        display : MetaTrainingDisplay
            ``self``, with the artists, ``ax_``, ``valid_ax_`` and ``figure_``.
        """
        ax = _axes(ax, "MetaTrainingDisplay.plot")
        (self.line_,) = ax.plot(
            self.episodes, self.train_loss, color="C0", label="training loss"
        )
        ax.set_xlabel("training episodes")
        ax.set_ylabel("training loss (query cross-entropy or MSE)", color="C0")
        self.valid_ax_ = self.valid_line_ = None
        if self.valid_scores is not None:
            self.valid_ax_ = ax.twinx()
            (self.valid_line_,) = self.valid_ax_.plot(
                self.epoch_episodes,
                self.valid_scores,
                color="C1",
                marker="o",
                label=self.valid_name,
            )
            self.valid_ax_.set_ylabel(
                f"validation few-shot score ({self.valid_name})", color="C1"
            )
        self.ax_, self.figure_ = ax, ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, *, ax=None):
        """Read a fitted meta-learner's history and plot it.

        Parameters
        ----------
        estimator : fitted meta-learner or Pipeline
            A sklearn-meta estimator after ``fit``, or a ``Pipeline`` whose
            last step is one.
        ax : matplotlib Axes, default=None
            Axes to draw on; a new figure when None.

        Returns
        -------
        display : MetaTrainingDisplay
            The plotted display.
        """
        _pyplot("MetaTrainingDisplay.from_estimator")
        learner = _learner(estimator)[1]
        history = learner.history_
        sizes, losses, epoch_ends = [], [], []
        for epoch in history:
            for batch in epoch["batches"]:
                if "train_loss" in batch:
                    sizes.append(batch["train_batch_size"])
                    losses.append(batch["train_loss"])
            epoch_ends.append(len(sizes))
        episodes = np.cumsum(sizes)
        valid_name = next(
            (k for k in ("valid_acc", "valid_neg_mse") if k in history[-1]), None
        )
        valid_scores = None
        if valid_name is not None:
            valid_scores = np.array([epoch[valid_name] for epoch in history])
        display = cls(
            episodes=episodes,
            train_loss=np.asarray(losses, dtype=float),
            epoch_episodes=episodes[np.asarray(epoch_ends) - 1],
            valid_scores=valid_scores,
            valid_name=valid_name or "valid_acc",
        )
        return display.plot(ax=ax)
