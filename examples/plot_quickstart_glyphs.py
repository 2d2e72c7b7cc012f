"""
Quick start: few-shot classification of new handwritten glyphs
===============================================================

Meta-train a prototypical network on 600 classes of synthetic handwritten
glyphs, then classify glyphs of 100 *new* classes from a few labelled
examples each, and compare with nearest centroids on raw pixels. The
figures come from :mod:`sklearn_meta.plotting`:
:class:`~sklearn_meta.plotting.MetaTrainingDisplay`,
:class:`~sklearn_meta.plotting.ShotCurveDisplay` and
:class:`~sklearn_meta.plotting.EmbeddingDisplay`.
"""

# %%
# The data: 700 procedurally drawn characters, 20 drawings each. Nothing to
# download; the generator imitates Omniglot's pen strokes.
import matplotlib.pyplot as plt
import numpy as np

from sklearn_meta import MetaMetricClassifier
from sklearn_meta.datasets import make_glyph_tasks
from sklearn_meta.plotting import (
    EmbeddingDisplay,
    MetaTrainingDisplay,
    ShotCurveDisplay,
)

X, y = make_glyph_tasks(n_classes=700, n_per_class=20, random_state=0)
train = y < 600
X_train, y_train, X_new, y_new = X[train], y[train], X[~train], y[~train]

fig, axes = plt.subplots(3, 8, figsize=(8, 3))
for row, label in enumerate(np.unique(y_new)[:3]):
    for col, image in enumerate(X_new[y_new == label][:8]):
        axes[row, col].imshow(image[0], cmap="gray_r")
        axes[row, col].axis("off")
fig.suptitle("Three new classes, eight drawings each")

# %%
# Meta-train with the defaults. Each training episode is a 40-way task: one
# support drawing per class defines its prototype, two queries per class are
# classified by distance. Training with more ways than the test uses helps
# (Snell et al.). ``validation_fraction`` holds out a tenth of the training
# classes and records the few-shot accuracy on them after every epoch.
clf = MetaMetricClassifier(validation_fraction=0.1, random_state=0)
clf.fit(X_train, y_train)

# %%
# How meta-training went: the loss of every meta-batch, and the 5-way
# accuracy on the held-out validation classes after each epoch.
MetaTrainingDisplay.from_estimator(clf)

# %%
# Adapt to one new task: five new classes, one labelled drawing each.
# ``partial_fit`` only computes prototypes; ``predict`` picks the nearest.
task_classes = np.unique(y_new)[:5]
support = np.concatenate([np.flatnonzero(y_new == c)[:1] for c in task_classes])
query = np.flatnonzero(np.isin(y_new, task_classes))
query = np.setdiff1d(query, support)
clf.partial_fit(X_new[support], y_new[support])
print("accuracy on this task:", np.mean(clf.predict(X_new[query]) == y_new[query]))
clf.reset_adaptation()

# %%
# Many tasks: mean accuracy over 300 episodes at each number of shots (ten
# queries per class, so that 10-shot episodes fit in 20 drawings), with
# its 95% confidence band, next to nearest centroids on raw pixels on the
# same episodes. The baseline is what a meta-learner has to beat.
# sphinx_gallery_thumbnail_number = 3
display = ShotCurveDisplay.from_estimator(
    clf, X_new, y_new, shots=[1, 2, 5, 10], n_query=10, n_episodes=300, random_state=0
)
for k_shot, mean, ci95, pixels in zip(
    display.shots, display.scores, display.ci95, display.baseline_scores, strict=True
):
    print(f"5-way {k_shot}-shot: {mean:.1%} +/- {ci95:.1%}, raw pixels {pixels:.1%}")

# %%
# What the embedding learned: ``transform`` of the drawings of six new
# classes, projected on their first two principal components. Drawings of a
# class gather together although the network never saw these classes; the
# stars are the one drawing per class a 1-shot task would get.
new_six = np.isin(y_new, np.unique(y_new)[:6])
EmbeddingDisplay.from_estimator(
    clf, X_new[new_six], y_new[new_six], k_shot=1, adapt=False, random_state=0
)
plt.show()
