"""MetaMetricClassifier: prototypical networks with a learned metric."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import (
    ClassifierMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
)
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ._base import (
    SHARED_PARAMETER_CONSTRAINTS,
    MetaLearnerBase,
    atomic,
    binary_decision,
    resolve_device,
)
from ._compat import Interval, StrOptions, _fit_context
from .nn.backbones import Conv4, embedding_size
from .nn.prototypes import PrototypicalNetwork, finetune


@dataclass
class _AdaptedTask:
    """The task ``partial_fit`` adapted to: what later calls continue from.

    Attributes
    ----------
    classes : ndarray
        The task's classes.
    classes_given : bool
        Whether the first call fixed them with ``classes=...`` (later calls
        may add classes only when it did not).
    module : PrototypicalNetwork
        The network that embeds for this task (fine-tuned, or the fitted one).
    sums, counts : ndarray
        Per-class sums of the support embeddings and support counts, so that
        the prototypes are running means.
    support_x, support_y : ndarray or None
        All support samples so far, kept only when fine-tuning needs them.
    """

    classes: np.ndarray
    classes_given: bool
    module: torch.nn.Module
    sums: np.ndarray
    counts: np.ndarray
    support_x: np.ndarray | None = None
    support_y: np.ndarray | None = None


class MetaMetricClassifier(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClassifierMixin, MetaLearnerBase
):
    """Metric-based meta-learning: prototypical networks with a learned metric.

    ``fit`` meta-trains an embedding on episodes drawn from the training
    classes: each episode averages its support examples into one prototype
    per class and classifies its queries by their distance to the
    prototypes. A new task needs no gradient step: ``partial_fit`` on its
    few labelled examples builds the prototypes (running means, so it is
    truly incremental), and ``predict`` assigns the nearest one.

    Parameters
    ----------
    metric : {"euclidean", "cosine", "mahalanobis"}, default="euclidean"
        Distance between embeddings and prototypes. ``"mahalanobis"`` learns
        a positive diagonal metric plus a rank-``metric_rank`` term. Every
        metric is scaled by a learned temperature.
    metric_rank : int, default=0
        Rank of the low-rank part of the Mahalanobis metric.
    finetune_steps : int, default=0
        Gradient steps that ``partial_fit`` takes on the embedding with the
        task's support set (prototypical loss, Adam) before computing the
        prototypes. 0 keeps the meta-learned embedding.
    finetune_lr : float, default=1e-3
        Learning rate of that fine-tuning.
    backbone : {"auto", "mlp", "conv4", "conv4_strided"} or torch.nn.Module, default="auto"
        Embedding network. ``"auto"`` is ``"mlp"`` for rows and, for images
        (4-D ``X`` or ``input_shape`` of length 3), ``"conv4_strided"`` up to
        32 pixels a side, ``"conv4"`` above (see "Choosing the defaults" in
        the user guide).
    hidden_layer_sizes : tuple of int, default=(128, 128)
        Hidden layers of the MLP backbone.
    embedding_dim : int, default=64
        Width of the embedding (channels of the Conv4 backbone).
    input_shape : tuple of int, default=None
        Shape ``(C, H, W)`` of one image when images come as flat rows.
    n_way, k_shot, n_query : int, default=40, 1, 2
        Shape of the training episodes: classes, support and query examples
        per class. Training with more ways than at test time helps (Snell et
        al. 2017); data with fewer classes trains on as many as it has, with
        a warning.
    meta_batch_size : int, default=1
        Episodes per optimiser step (one, as in the prototypical-network paper).
    max_epochs : int, default=2
        Passes of ``episodes_per_epoch`` episodes. The defaults train for
        about a minute on two CPU cores on 28x28 images: raise it for more
        data or more compute, accuracy keeps rising for many thousands of
        episodes.
    episodes_per_epoch : int, default=500
        Episodes per epoch.
    meta_lr : float, default=3e-3
        Adam's learning rate.
    meta_lr_schedule : {"constant", "cosine"}, default="cosine"
        ``"cosine"`` lowers Adam's learning rate from ``meta_lr`` to 0 along a
        half cosine over the ``max_epochs * episodes_per_epoch`` episodes
        (per optimiser step; early stopping ends it sooner).
    validation_fraction : float, default=0.0
        Fraction of the classes held out to record few-shot validation
        accuracy (``history_[:, "valid_acc"]``) each epoch.
    callbacks : list of skorch callbacks, default=None
        Extra skorch callbacks (early stopping, checkpoints, LR schedules);
        copied before use.
    augment : callable or None, default=None
        Data augmentation for meta-training only: maps a batch of samples
        ``(n, *input_shape_)`` (images as ``(n, C, H, W)``) to a batch of the
        same shape, applied to every episode's support and query samples, for
        example :class:`~sklearn_meta.nn.augment.RandomAffine`. Helps when
        there are few training classes to learn from.
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        Where the network runs; ``"auto"`` picks CUDA when available.
    distributed : bool, default=False
        Meta-train as one of the processes started by ``torchrun``: each
        process trains on its share of every meta-batch (so one outer step
        sees ``WORLD_SIZE * meta_batch_size`` episodes) and the gradients are
        averaged across processes. Only rank 0 prints and saves. See the
        "Scaling out" page of the documentation.
    inference_dtype : {"float32", "float64"}, default="float32"
        Precision of ``transform``, ``predict`` and the few-shot evaluation.
        ``"float64"`` makes a sample's output independent of the other
        samples of its batch to the last float32 bit, at several times the
        cost; ``"float32"`` agrees with it to about 1e-6.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and the episodes; the same seed gives the
        same model bit for bit on CPU.
    verbose : int, default=0
        1 shows a progress bar and the per-epoch log.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The classes ``predict`` chooses from: the training classes after
        ``fit``, the task's classes after ``partial_fit``.
    prototypes_ : ndarray of shape (n_classes, embedding_dim)
        One embedding per class of ``classes_``.
    net_ : skorch.NeuralNet
        The private skorch net that meta-trained the module.
    module_ : torch.nn.Module
        The meta-learned :class:`~sklearn_meta.nn.prototypes.PrototypicalNetwork`.
    history_ : skorch.History
        Per-epoch training loss (and validation accuracy).
    n_features_in_ : int
        Number of features per sample (pixels for images).
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame.
    input_shape_ : tuple of int
        Shape of one sample as the backbone sees it.

    See Also
    --------
    MAMLFeatureExtractor : adapts by gradient steps from a learned initialisation.
    LEOTransformer : adapts in a learned low-dimensional latent space.

    References
    ----------
    .. [1] J. Snell, K. Swersky, R. Zemel. "Prototypical Networks for Few-shot
       Learning". NeurIPS 2017.

    Examples
    --------
    >>> from sklearn_meta import MetaMetricClassifier
    >>> from sklearn_meta.datasets import make_glyph_tasks
    >>> X, y = make_glyph_tasks(n_classes=30, n_per_class=10, random_state=0)
    >>> train = y < 25
    >>> clf = MetaMetricClassifier(backbone="conv4_strided", max_epochs=1,
    ...                            episodes_per_epoch=20, random_state=0)
    >>> clf = clf.fit(X[train], y[train])
    >>> clf.partial_fit(X[~train][::10], y[~train][::10]).classes_
    array([25, 26, 27, 28, 29])
    >>> clf.transform(X[:2]).shape
    (2, 64)
    """

    _parameter_constraints: dict = {
        **SHARED_PARAMETER_CONSTRAINTS,
        "backbone": [
            StrOptions({"auto", "mlp", "conv4", "conv4_strided"}),
            torch.nn.Module,
        ],
        "metric": [StrOptions({"euclidean", "cosine", "mahalanobis"})],
        "metric_rank": [Interval(Integral, 0, None, closed="left")],
        "finetune_steps": [Interval(Integral, 0, None, closed="left")],
        "finetune_lr": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self,
        metric="euclidean",
        *,
        metric_rank=0,
        finetune_steps=0,
        finetune_lr=1e-3,
        backbone="auto",
        hidden_layer_sizes=(128, 128),
        embedding_dim=64,
        input_shape=None,
        n_way=40,
        k_shot=1,
        n_query=2,
        meta_batch_size=1,
        max_epochs=2,
        episodes_per_epoch=500,
        meta_lr=3e-3,
        meta_lr_schedule="cosine",
        validation_fraction=0.0,
        callbacks=None,
        augment=None,
        device="auto",
        distributed=False,
        inference_dtype="float32",
        random_state=None,
        verbose=0,
    ):
        self.metric = metric
        self.metric_rank = metric_rank
        self.finetune_steps = finetune_steps
        self.finetune_lr = finetune_lr
        self.backbone = backbone
        self.hidden_layer_sizes = hidden_layer_sizes
        self.embedding_dim = embedding_dim
        self.input_shape = input_shape
        self.n_way = n_way
        self.k_shot = k_shot
        self.n_query = n_query
        self.meta_batch_size = meta_batch_size
        self.max_epochs = max_epochs
        self.episodes_per_epoch = episodes_per_epoch
        self.meta_lr = meta_lr
        self.meta_lr_schedule = meta_lr_schedule
        self.validation_fraction = validation_fraction
        self.callbacks = callbacks
        self.augment = augment
        self.device = device
        self.distributed = distributed
        self.inference_dtype = inference_dtype
        self.random_state = random_state
        self.verbose = verbose

    # -- building --------------------------------------------------------------

    def _build_module(self) -> PrototypicalNetwork:
        backbone = self._new_backbone()
        if (
            not isinstance(self.backbone, torch.nn.Module)
            and isinstance(backbone, Conv4)
            and resolve_device(self.device).type == "cpu"
        ):
            # Faster on a CPU only (docs/concepts.md, Memory layout); GPUs keep
            # the default layout.
            backbone.to_channels_last()
        return PrototypicalNetwork(
            backbone,
            embedding_size(backbone, self.input_shape_),
            metric=self.metric,
            metric_rank=self.metric_rank,
        )

    # -- fit -------------------------------------------------------------------

    @atomic
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, groups=None):
        """Meta-train the embedding on episodes drawn from the classes of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W), or list of (X_i, y_i) tasks
            Training samples, or a collection of tasks.
        y : array-like of shape (n_samples,)
            Class labels. Episodes draw ``n_way`` of these classes.
        groups : array-like of shape (n_samples,), default=None
            Task id of every sample: episodes are then drawn within one task.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        X, targets, groups, _ = self._validate_fit_data(
            X, y, groups, allow_regression=False
        )
        self.net_ = self._meta_train(X, targets, groups, False, self._build_module)
        module = self.net_.module_
        self._n_features_out = embedding_size(module.backbone, self.input_shape_)
        self._finish_fit(X)
        sums, counts = self._class_sums(module, X, targets, len(self.classes_))
        self.prototypes_ = sums / counts[:, None]
        self._fit_classes = self.classes_
        self._fit_prototypes = self.prototypes_
        return self

    def _embedding_network(self) -> torch.nn.Module:
        return self.net_.module_.backbone

    # -- adaptation ------------------------------------------------------------

    @atomic
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None):
        """Adapt to a new task from its labelled support examples.

        The first call after ``fit`` or ``reset_adaptation`` starts a new task
        whose classes are ``classes`` (or the labels of ``y``); later calls
        update its prototypes as running means, so several calls give the
        same prototypes as one call on all the data, and may add classes
        (unless ``classes`` fixed them). On an unfitted estimator the network
        is initialised without meta-training.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Support examples of the task.
        y : array-like of shape (n_samples,)
            Their labels.
        classes : array-like, default=None
            All classes of the task, when some have no example in this call.

        Returns
        -------
        self : object
            The adapted estimator.
        """
        if not hasattr(self, "net_"):
            self._initialize_without_meta_training(X, self._build_module)
            self._n_features_out = embedding_size(
                self.net_.module_.backbone, self.input_shape_
            )
        X, y = self._validate_samples(X, reset=False, y=y)
        # Support sets are small: float32 once, so later calls can join them.
        X = self._to_tensor(X).cpu().numpy()
        check_classification_targets(y)
        task = getattr(self, "_adaptation", None)
        task_classes = self._task_classes(
            y,
            classes,
            None if task is None else task.classes,
            allow_new=task is not None and not task.classes_given,
        )
        module = self.net_.module_ if task is None else task.module
        index = np.searchsorted(task_classes, y)
        support_x = support_y = None
        if self.finetune_steps > 0:
            support_x = X if task is None else np.concatenate([task.support_x, X])
            support_y = y if task is None else np.concatenate([task.support_y, y])
            support_index = np.searchsorted(task_classes, support_y)
            module = self._finetune(module, support_x, support_index, len(task_classes))
            sums, counts = self._class_sums(
                module, support_x, support_index, len(task_classes)
            )
        else:
            sums, counts = self._class_sums(module, X, index, len(task_classes))
            if task is not None:
                previous = np.searchsorted(task_classes, task.classes)
                sums[previous] += task.sums
                counts[previous] += task.counts
        self._adaptation = _AdaptedTask(
            classes=task_classes,
            classes_given=classes is not None if task is None else task.classes_given,
            module=module,
            sums=sums,
            counts=counts,
            support_x=support_x,
            support_y=support_y,
        )
        self.classes_ = task_classes
        with np.errstate(invalid="ignore", divide="ignore"):
            self.prototypes_ = sums / counts[:, None]
        return self

    def _class_sums(self, module, X, index, n_classes):
        """float64 sums of each class's embeddings and the class counts."""
        embeddings = self._embed(X, module.backbone).double()
        labels = torch.as_tensor(index, device=embeddings.device)
        sums = embeddings.new_zeros(n_classes, embeddings.shape[1])
        sums.index_add_(0, labels, embeddings)
        counts = np.bincount(index, minlength=n_classes).astype(np.float64)
        return sums.cpu().numpy(), counts

    def _finetune(self, module, X, index, n_classes):
        """A copy of ``module`` trained ``finetune_steps`` on the support set."""
        diverged = ValueError(
            f"fine-tuning diverged: the weights became non-finite within "
            f"finetune_steps={self.finetune_steps} steps; lower finetune_lr "
            f"(now {self.finetune_lr}) or finetune_steps"
        )
        try:
            tuned = finetune(
                module,
                self._to_tensor(X),
                torch.as_tensor(index, device=self._device()),
                n_classes,
                n_steps=self.finetune_steps,
                lr=self.finetune_lr,
            )
        except RuntimeError as error:
            # Adam refuses a step that overflows float32: the same divergence.
            if "overflow" not in str(error):
                raise
            raise diverged from None
        if not all(torch.isfinite(p).all() for p in tuned.parameters()):
            # NaN weights would give NaN prototypes and every answer class 0;
            # refusing keeps the task being adapted, as MAML's adaptation does.
            raise diverged
        return tuned

    def reset_adaptation(self):
        """Forget the adapted task: predict the training classes again.

        Returns
        -------
        self : object
            The estimator.
        """
        super().reset_adaptation()
        if hasattr(self, "_fit_prototypes"):
            self.prototypes_ = self._fit_prototypes
        else:
            vars(self).pop("prototypes_", None)
        return self

    # The few-shot score of the shared base, not ClassifierMixin's accuracy:
    # after fit on some classes, a task's classes are new ones.
    score = MetaLearnerBase.score

    # -- inference -------------------------------------------------------------

    def _current_module(self):
        task = getattr(self, "_adaptation", None)
        return self.net_.module_ if task is None else task.module

    def transform(self, X):
        """Embed ``X`` with the (adapted, if adapted) network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples.

        Returns
        -------
        embeddings : ndarray of shape (n_samples, embedding_dim)
            float32 embeddings.
        """
        check_is_fitted(self, "net_")
        X = self._validate_samples(X, reset=False)
        embeddings = self._embed(X, self._current_module().backbone)
        return embeddings.float().cpu().numpy()

    def _logits(self, X) -> np.ndarray:
        """Logits ``(n_samples, n_classes)``; a class with no example yet gets -inf."""
        check_is_fitted(self, ["net_", "prototypes_"])
        X = self._validate_samples(X, reset=False)
        module = self._current_module()
        embeddings = self._embed(X, module.backbone)
        prototypes = torch.as_tensor(
            self.prototypes_, dtype=embeddings.dtype, device=embeddings.device
        )
        empty = torch.isnan(prototypes).any(dim=1)
        with torch.no_grad():
            logits = module.logits(embeddings, torch.nan_to_num(prototypes))
        logits[:, empty] = float("-inf")
        return logits.cpu().numpy()

    def decision_function(self, X):
        """Confidence scores: scaled negative distances to the prototypes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
            Logits of the classes of ``classes_`` (classes without an example
            yet get ``-inf``); with two classes, as in scikit-learn, the score
            of the second class minus that of the first.
        """
        return binary_decision(self._logits(X))

    def predict_proba(self, X):
        """Class probabilities: a softmax over the logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities in the order of ``classes_``.
        """
        return softmax(self._logits(X), copy=False)

    def predict(self, X):
        """Class of the nearest prototype.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Predicted classes.
        """
        scores = self._logits(X)
        return self.classes_[np.argmax(scores, axis=1)]

    # -- batched few-shot evaluation (used by model_selection) -----------------

    def _few_shot_scores(self, X, episodes, chunk: int = 256) -> np.ndarray | None:
        """Query accuracy of every episode, all episodes batched.

        Without fine-tuning, adaptation is the prototypes alone: each sample
        the episodes draw is embedded once and every episode is a gather.
        With fine-tuning each episode needs its own network, so ``None`` asks
        the caller to adapt episode by episode.
        """
        if self.finetune_steps > 0:
            return None
        check_is_fitted(self, "net_")
        X = self._validate_samples(X, reset=False)
        module = self.net_.module_
        drawn, episodes = episodes.compact()
        embeddings = self._embed(X[drawn], module.backbone)
        scores = []
        with torch.no_grad():
            for start in range(0, len(episodes), chunk):
                batch = episodes[start : start + chunk].to(embeddings.device)
                n_classes = int(batch.support_target.max()) + 1
                prototypes = module.class_prototypes(
                    embeddings[batch.support_index], batch.support_target, n_classes
                )
                logits = module.logits(embeddings[batch.query_index], prototypes)
                correct = logits.argmax(-1) == batch.query_target
                scores.append(correct.float().mean(dim=1).cpu())
        return torch.cat(scores).numpy().astype(np.float64)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
