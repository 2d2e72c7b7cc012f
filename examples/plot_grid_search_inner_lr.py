"""
Grid-searching MAML's inner learning rate and steps
===================================================

``inner_lr`` and ``inner_steps`` decide how far MAML moves from its learned
initialisation on a new task. Because :class:`~sklearn_meta.MAMLFeatureExtractor`
scores itself few-shot (adapt on each episode's support set, judge on its
query set), ``GridSearchCV`` tunes them with no scorer; ``ClassKFold`` keeps
the test classes of each fold out of its training set. The glyphs travel
through the search as flat pixel rows with ``input_shape``.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import GridSearchCV

from sklearn_meta import MAMLFeatureExtractor
from sklearn_meta.datasets import make_glyph_tasks
from sklearn_meta.model_selection import ClassKFold

X, y = make_glyph_tasks(n_classes=120, n_per_class=20, random_state=0)
X = X.reshape(len(X), -1)  # flat rows, as a Pipeline would carry them

maml = MAMLFeatureExtractor(
    backbone="conv4_strided",
    input_shape=(1, 28, 28),
    embedding_dim=32,
    meta_batch_size=8,
    max_epochs=1,
    episodes_per_epoch=160,
    random_state=0,
)
grid = {"inner_lr": [0.05, 0.2, 0.8], "inner_steps": [1, 2]}
search = GridSearchCV(maml, grid, cv=ClassKFold(3, shuffle=True, random_state=0))
search.fit(X, y)
print("best:", search.best_params_, f"5-way 1-shot {search.best_score_:.1%}")

# %%
# The few-shot accuracy of every candidate, averaged over the folds.
scores = search.cv_results_["mean_test_score"].reshape(
    len(grid["inner_lr"]), len(grid["inner_steps"])
)
fig, ax = plt.subplots(figsize=(4, 3.5), layout="constrained")
image = ax.imshow(scores, cmap="viridis")
ax.set_xticks(range(len(grid["inner_steps"])), grid["inner_steps"])
ax.set_yticks(range(len(grid["inner_lr"])), grid["inner_lr"])
ax.set_xlabel("inner_steps")
ax.set_ylabel("inner_lr")
for (row, col), value in np.ndenumerate(scores):
    ax.text(col, row, f"{value:.0%}", ha="center", va="center", color="white")
fig.colorbar(image, label="5-way 1-shot accuracy")
plt.show()
