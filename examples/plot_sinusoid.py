"""
MAML on sinusoids: the paper's figure
=====================================

MAML's regression benchmark (Finn et al. 2017): every task is a sinusoid
with its own amplitude and phase, seen through K=10 points. The meta-learned
initialisation fits a new sinusoid after one or ten gradient steps; a network
pretrained on all tasks at once learns their average (a flat line) and
cannot recover the shape from ten points.
:class:`~sklearn_meta.plotting.AdaptationCurveDisplay` then measures it over
many new sinusoids: mean squared error against the number of steps.
"""

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from sklearn_meta import MAMLFeatureExtractor
from sklearn_meta.datasets import make_sinusoid_tasks
from sklearn_meta.plotting import AdaptationCurveDisplay

X, y, groups = make_sinusoid_tasks(n_tasks=5000, n_points=20, random_state=0)


class Body(nn.Sequential):
    """The paper's 1-40-40 ReLU body; the estimator adds the linear head."""

    out_features = 40

    def __init__(self):
        super().__init__(nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU())


maml = MAMLFeatureExtractor(
    backbone=Body(),
    inner_lr=0.01,
    k_shot=10,
    n_query=10,
    meta_batch_size=25,
    episodes_per_epoch=2500,
    max_epochs=10,
    random_state=0,
)
maml.fit(X, y, groups=groups)

# %%
# The baseline: the same network trained on all points of all tasks, then
# fine-tuned by the same gradient steps. It is an unfitted estimator's
# partial_fit (no meta-learning) after plain regression training.
pretrained = MAMLFeatureExtractor(backbone=Body(), inner_lr=0.01, random_state=0)
pretrained.partial_fit(X[:10], y[:10])  # builds the network
network = pretrained.net_.module_
optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
X_all = torch.as_tensor(X, dtype=torch.float32)
y_all = torch.as_tensor(y, dtype=torch.float32)
for _ in range(2000):
    batch = torch.randint(len(X_all), (250,))
    optimizer.zero_grad()
    ((network.predict(X_all[batch]) - y_all[batch]) ** 2).mean().backward()
    optimizer.step()

# %%
# A new sinusoid, ten points: predictions after 0, 1 and 10 steps.
rng = np.random.default_rng(1)
amplitude, phase = 3.0, 1.0
support = rng.uniform(-5, 5, size=(10, 1))
grid = np.linspace(-5, 5, 200)[:, None]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True, layout="constrained")
for ax, (name, model) in zip(
    axes, [("MAML", maml), ("pretrained", pretrained)], strict=True
):
    ax.plot(grid, amplitude * np.sin(grid + phase), "k", label="true")
    ax.scatter(
        support,
        amplitude * np.sin(support + phase),
        c="k",
        marker="^",
        label="K=10 points",
    )
    for steps in (0, 1, 10):
        model.reset_adaptation().set_params(adapt_steps=steps)
        model.partial_fit(support, amplitude * np.sin(support[:, 0] + phase))
        ax.plot(grid, model.predict(grid), label=f"{steps} steps")
    ax.set_title(name)
    ax.legend(fontsize=8)

# %%
# Over 200 new sinusoids: mean squared error on ten query points after 0 to
# 10 gradient steps from ten support points, with its 95% confidence band.
# One step from MAML's initialisation does more than ten from the
# pretrained network's.
X_new, y_new, groups_new = make_sinusoid_tasks(n_tasks=200, n_points=20, random_state=1)
fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
for name, model in [("MAML", maml), ("pretrained", pretrained)]:
    AdaptationCurveDisplay.from_estimator(
        model.reset_adaptation(),
        X_new,
        y_new,
        groups=groups_new,
        steps=[0, 1, 2, 5, 10],
        k_shot=10,
        n_query=10,
        n_episodes=200,
        random_state=0,
        ax=ax,
        name=name,
    )
ax.set_yscale("log")
plt.show()
