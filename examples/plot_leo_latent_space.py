"""
LEO's latent space before and after adaptation
==============================================

:class:`~sklearn_meta.LEOTransformer` learns a low-dimensional latent space
of classifiers: a new task's few labelled examples are encoded into one
latent code per class, a few gradient steps move the codes, and a decoder
turns them into the weights of a linear classifier.

Here LEO runs, as in the paper, on a meta-learned embedding: the first step
of the pipeline is a :class:`~sklearn_meta.MetaMetricClassifier`
meta-trained on 120 classes of synthetic glyphs. We draw the latent codes
that ``transform`` gives the drawings of five classes never seen in
training, before and after LEO adapted to them from five drawings each.
"""

# %%
# Meta-train the two-stage pipeline
# ---------------------------------
# Images travel through the pipeline as flat rows; ``input_shape`` tells the
# convolutional backbone their shape. Budgets are tiny so that the example
# runs in about a minute on a CPU.
import matplotlib.pyplot as plt
import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.pipeline import make_pipeline

from sklearn_meta import LEOTransformer, MetaMetricClassifier
from sklearn_meta.datasets import make_glyph_tasks
from sklearn_meta.model_selection import evaluate_few_shot

X, y = make_glyph_tasks(n_classes=150, n_per_class=20, random_state=0)
X = X.reshape(len(X), -1)
train = y < 120

pipe = make_pipeline(
    MetaMetricClassifier(
        backbone="conv4_strided",
        input_shape=(1, 28, 28),
        n_way=10,
        n_query=5,
        max_epochs=1,
        episodes_per_epoch=80,
        meta_lr=2e-3,
        random_state=0,
    ),
    LEOTransformer(latent_dim=16, max_epochs=2, episodes_per_epoch=320, random_state=0),
)
pipe.fit(X[train], y[train])
embed, leo = pipe[0], pipe[-1]

result = evaluate_few_shot(pipe, X[~train], y[~train], n_episodes=200, random_state=0)
print(f"5-way 1-shot accuracy on the 30 new classes: {result}")

# %%
# Adapt to five new classes
# -------------------------
# ``partial_fit`` on five drawings per class adapts the class codes; the
# other fifteen drawings are the queries.
new_classes = np.arange(120, 125)
task = np.isin(y, new_classes)
support = task & (np.arange(len(y)) % 20 < 5)
query = task & ~support

codes_before = pipe.transform(X[task])
leo.partial_fit(embed.transform(X[support]), y[support])
codes_after = pipe.transform(X[task])
accuracy = np.mean(pipe.predict(X[query]) == y[query])
print(f"query accuracy after adaptation: {accuracy:.1%}")

# %%
# Draw the codes in two dimensions
# --------------------------------
# One PCA for both panels, so that they share axes. Before adaptation a
# drawing's code depends on that drawing alone; after, each code has moved
# with the code of the class the adapted classifier assigns it to, which
# pulls the classes apart. The silhouette score (higher: tighter, better
# separated classes) measures it in the full latent space.
pca = PCA(n_components=2).fit(np.vstack([codes_before, codes_after]))
labels = y[task]
is_support = support[task]
fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
for ax, codes, title in zip(
    axes,
    (codes_before, codes_after),
    ("before adaptation", "after adaptation"),
    strict=True,
):
    points = pca.transform(codes)
    for colour, label in enumerate(new_classes):
        mine = labels == label
        ax.scatter(*points[mine & ~is_support].T, s=14, color=f"C{colour}", alpha=0.6)
        ax.scatter(
            *points[mine & is_support].T,
            s=60,
            color=f"C{colour}",
            marker="*",
            edgecolor="black",
            linewidth=0.5,
            label=f"class {label}",
        )
    ax.set_title(f"{title} (silhouette {silhouette_score(codes, labels):.2f})")
    ax.set_xlabel("PC 1")
axes[0].set_ylabel("PC 2")
axes[1].legend(loc="best", fontsize=8, title="stars: support")
fig.tight_layout()
plt.show()

# %%
# ``reset_adaptation`` forgets the task: the codes are the unadapted ones
# again, and LEO is ready for the next task.
leo.reset_adaptation()
print(np.allclose(pipe.transform(X[task]), codes_before))
