"""
When meta-learning helps, and when it does not
==============================================

Meta-learning transfers what many training classes have in common to new
classes. With too few training classes there is nothing to transfer: on
scikit-learn's digits, meta-trained on the five classes 0-4, a prototypical
network does not beat raw pixels on 5-9. On the synthetic glyphs, accuracy on
new classes grows with the number of training classes until it leaves the
pixel baseline far behind.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

from sklearn_meta import MetaMetricClassifier
from sklearn_meta.datasets import make_glyph_tasks
from sklearn_meta.model_selection import evaluate_few_shot, evaluate_nearest_centroid

# %%
# Digits: train on 0-4, test 5-way 1-shot on 5-9. Rotations and flips of the
# training digits as extra classes give the learner more classes to learn
# from, which helps a little, not enough.
digits = load_digits()
X = (digits.images / 16.0).astype(np.float32)[:, None]
y = digits.target
train, test = y < 5, y >= 5
rotated = np.concatenate([np.rot90(X[train], k, axes=(2, 3)) for k in range(4)])
flipped = np.concatenate([rotated, rotated[..., ::-1]])
augmented_y = np.concatenate([y[train] + 10 * k for k in range(8)])

common = dict(n_way=5, k_shot=1, n_episodes=500, random_state=0)
params = dict(
    backbone="conv4_strided",
    embedding_dim=32,
    n_way=5,  # as many as the five training digits
    n_query=15,
    max_epochs=2,
    episodes_per_epoch=300,
    meta_lr=1e-3,
    meta_lr_schedule="constant",
    random_state=0,
)
plain = MetaMetricClassifier(**params).fit(X[train], y[train])
augmented = MetaMetricClassifier(**params).fit(flipped, augmented_y)
digit_results = {
    "raw pixels": evaluate_nearest_centroid(X[test], y[test], **common),
    "meta-learned on 5 classes": evaluate_few_shot(plain, X[test], y[test], **common),
    "... with rotations and flips (40 classes)": evaluate_few_shot(
        augmented, X[test], y[test], **common
    ),
}
for name, result in digit_results.items():
    print(f"digits 5-9, 5-way 1-shot, {name}: {result}")

# %%
# Glyphs: the same learner, trained on more and more classes, tested on 100
# classes it never saw.
X, y = make_glyph_tasks(n_classes=700, n_per_class=20, random_state=0)
X_new, y_new = X[y >= 600], y[y >= 600]
pixels = evaluate_nearest_centroid(X_new, y_new, **common)
n_train_classes = [5, 20, 80, 600]
curve = []
for n_classes in n_train_classes:
    clf = MetaMetricClassifier(
        backbone="conv4_strided",
        n_way=min(20, n_classes),
        n_query=5,
        max_epochs=1,
        episodes_per_epoch=400,
        random_state=0,
    ).fit(X[y < n_classes], y[y < n_classes])
    curve.append(evaluate_few_shot(clf, X_new, y_new, **common))
    print(f"glyphs, {n_classes} training classes: {curve[-1]}")

fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
ax.errorbar(
    n_train_classes,
    [r.mean for r in curve],
    yerr=[r.ci95 for r in curve],
    marker="o",
    label="meta-learned",
)
ax.axhline(pixels.mean, color="gray", linestyle="--", label="raw pixels")
ax.set_xscale("log")
ax.set_xlabel("training classes")
ax.set_ylabel("5-way 1-shot accuracy on new classes")
ax.legend()
plt.show()
