"""LEOTransformer: Latent Embedding Optimization as a scikit-learn transformer."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted
from skorch.callbacks import GradientNormClipping

from ._adaptation import available_after_adaptation
from ._base import (
    SHARED_PARAMETER_CONSTRAINTS,
    MetaLearnerBase,
    atomic,
    binary_decision,
    is_task_list,
)
from ._compat import Interval, StrOptions, _fit_context
from ._data import CHUNK_SIZE, Samples
from .nn.backbones import embedding_size
from .nn.leo import LEO, LEOState
from .nn.leo_network import LEONetwork
from .tasks import TaskCollection

#: The internal standardisation scales the features so that, at the
#: decoder's (Glorot) initialisation, a latent step of size 1 changes the
#: logits by about this much: a sample's mean squared norm is then
#: ``LATENT_STEP_GAIN * (latent_dim + 2 * n_features) / (2 * latent_dim)``.
#: Larger values adapt faster but let the sampled weights, which grow
#: exponentially with the latent steps, overflow on tiny data; how the value
#: was chosen is in docs/concepts.md (LEO, Scaling).
LATENT_STEP_GAIN = 4.0

#: Meta-gradients are clipped to this norm, as in the paper's code: it keeps
#: meta-training from diverging at large inner_lr.
MAX_GRAD_NORM = 0.1


@dataclass
class _AdaptedTask:
    """The task ``partial_fit`` adapted to: its classes and LEO's adapted state."""

    classes: np.ndarray
    state: LEOState


class LEOTransformer(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, MetaLearnerBase
):
    """Latent Embedding Optimization: few-shot adaptation in a learned latent space.

    ``fit`` meta-trains, on episodes drawn from the training classes, an
    encoder that maps a task's support examples to one low-dimensional
    latent code per class, and a decoder that turns each code into the
    weights of a linear classifier on the features. A new task is learned by
    ``partial_fit`` on its few labelled examples: the encoder gives the class
    codes, ``inner_steps`` gradient steps on the codes adapt them (few
    dimensions to optimise, so few examples suffice), and ``finetune_steps``
    steps on the decoded weights refine them. ``transform`` returns a latent
    code per sample, which shows the structure the encoder learned.

    By default LEO works on the input features themselves, as in the paper,
    which runs it on pretrained embeddings: tabular columns, or the output of
    an earlier step of a ``Pipeline`` such as a :class:`MetaMetricClassifier`.
    A ``backbone`` embeds raw inputs (images) first and is meta-trained
    jointly with LEO.

    Parameters
    ----------
    latent_dim : int, default=64
        Width of a class latent code, and of ``transform``'s output.
    inner_lr : float, default=1.0
        Step size of the gradient steps on the latent codes (of the mean
        support cross-entropy; the paper's code steps on the sum over a
        5-way task, so its 1.0 is 5.0 here).
    inner_steps : int, default=5
        Gradient steps on the latent codes, in meta-training and adaptation.
    finetune_lr : float, default=0.001
        Step size of the fine-tuning steps on the decoded classifier weights.
    finetune_steps : int, default=5
        Fine-tuning steps on the decoded weights after the latent steps.
    kl_weight : float, default=0.001
        Weight of the KL divergence between the class codes' distribution and
        a standard normal, in the meta-training loss.
    orthogonality_weight : float, default=0.001
        Weight of the penalty that keeps the decoder's per-latent weight
        vectors decorrelated.
    encoder_penalty_weight : float, default=1e-9
        Weight of the penalty that pulls the encoder's codes towards the
        adapted ones.
    dropout : float, default=0.3
        Dropout rate on the features, in meta-training only.
    learn_inner_lr : bool, default=False
        Meta-learn one latent step size per latent dimension and one
        fine-tuning step size per feature, starting from ``inner_lr`` and
        ``finetune_lr``.
    weight_decay : float, default=1e-8
        L2 penalty on the network's weights (through Adam), as in the paper.
    backbone : {"mlp", "conv4", "conv4_strided"}, torch.nn.Module or None, default=None
        None runs LEO on the input features. Otherwise the network that
        embeds the raw inputs first, meta-trained with LEO: ``"mlp"`` for
        rows, ``"conv4"`` or ``"conv4_strided"`` for images (4-D ``X`` or
        ``input_shape`` of length 3), or a module of your own.
    hidden_layer_sizes : tuple of int, default=(128, 128)
        Hidden layers of the MLP backbone.
    embedding_dim : int, default=64
        Width of the backbone's embedding.
    input_shape : tuple of int, default=None
        Shape ``(C, H, W)`` of one image when images come as flat rows.
    n_way, k_shot, n_query : int, default=5, 1, 15
        Shape of the training episodes (classes, support and query examples
        per class), and of the episodes ``score`` draws.
    meta_batch_size : int, default=8
        Episodes per optimiser step; LEO adapts them all at once.
    max_epochs : int, default=20
        Passes of ``episodes_per_epoch`` episodes.
    episodes_per_epoch : int, default=1000
        Episodes per epoch.
    meta_lr : float, default=1e-3
        Adam's learning rate.
    meta_lr_schedule : {"constant", "cosine"}, default="constant"
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
        Precision of adaptation, ``transform``, ``predict`` and the few-shot
        evaluation. ``"float64"`` makes a sample's output independent of the
        other samples of its batch to the last float32 bit, at several times
        the cost; ``"float32"`` agrees with it to about 1e-6.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation and the episodes; the same seed gives the
        same model bit for bit on CPU.
    verbose : int, default=0
        1 shows a progress bar and the per-epoch log.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Training classes after ``fit``; the adapted task's classes after
        ``partial_fit``, the only ones ``predict`` chooses from.
    net_ : skorch.NeuralNet
        The private skorch net that meta-trained the module.
    module_ : torch.nn.Module
        The meta-learned network: ``module_.leo`` is the
        :class:`~sklearn_meta.nn.leo.LEO` core, ``module_.backbone`` the
        backbone or None.
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
    MetaMetricClassifier : prototypes in a meta-learned embedding.
    MAMLFeatureExtractor : adapts by gradient steps from a learned initialisation.

    Notes
    -----
    Without a backbone, the features are standardised internally with
    statistics of the ``fit`` data: centred, each column divided by its
    standard deviation (the pixels of images, 4-D ``X`` or ``input_shape``
    of length 3, share one scale), then all rescaled by one factor that
    depends on ``latent_dim`` and the number of features only. The logits are
    inner products of the features with the decoded weights, so the
    features' scale sets the size of a latent step: unscaled features make
    meta-training diverge, and the factor gives a step of ``inner_lr`` the
    same effect whatever the number of features. The outputs do not
    depend on the scale of ``X``, so no scaler is needed in front. With a
    backbone the inputs reach it unchanged. Meta-gradients are clipped to
    norm 0.1, as in the paper's code.

    ``inner_lr``, ``inner_steps``, ``finetune_lr`` and ``finetune_steps``
    are live: ``partial_fit``, ``score`` and the batched evaluation adapt
    with their current values, so ``set_params`` after ``fit`` changes how
    the next task is adapted (and ``GridSearchCV`` can tune them). With
    ``learn_inner_lr=True`` the step sizes are learned weights: changing
    ``inner_lr`` or ``finetune_lr`` after ``fit`` is refused.

    ``transform`` gives each sample the latent code of a class whose only
    example is that sample (the encoder and relation network applied to the
    sample paired with itself). Once adapted, each code is moved as its
    class's code moved in the latent steps, the class being the adapted
    classifier's soft assignment of the sample, so that drawing the codes
    before and after adaptation shows what adaptation did.

    References
    ----------
    .. [1] A. A. Rusu, D. Rao, J. Sygnowski, O. Vinyals, R. Pascanu,
       S. Osindero and R. Hadsell. "Meta-Learning with Latent Embedding
       Optimization". ICLR 2019. https://arxiv.org/abs/1807.05960

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_meta import LEOTransformer
    >>> rng = np.random.default_rng(0)
    >>> centres = rng.normal(size=(30, 8)) * 3
    >>> y = np.repeat(np.arange(30), 20)
    >>> X = centres[y] + rng.normal(size=(600, 8))
    >>> leo = LEOTransformer(latent_dim=8, max_epochs=1, episodes_per_epoch=40,
    ...                      random_state=0).fit(X[y < 25], y[y < 25])
    >>> leo.transform(X[:3]).shape
    (3, 8)
    >>> support = (y >= 25) & (np.arange(600) % 20 < 5)
    >>> leo = leo.partial_fit(X[support], y[support])
    >>> leo.classes_
    array([25, 26, 27, 28, 29])
    >>> leo.predict_proba(X[y >= 25]).shape
    (100, 5)
    """

    _parameter_constraints: dict = {
        **SHARED_PARAMETER_CONSTRAINTS,
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "inner_lr": [Interval(Real, 0, None, closed="left")],
        "inner_steps": [Interval(Integral, 0, None, closed="left")],
        "finetune_lr": [Interval(Real, 0, None, closed="left")],
        "finetune_steps": [Interval(Integral, 0, None, closed="left")],
        "kl_weight": [Interval(Real, 0, None, closed="left")],
        "orthogonality_weight": [Interval(Real, 0, None, closed="left")],
        "encoder_penalty_weight": [Interval(Real, 0, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "learn_inner_lr": ["boolean"],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "backbone": [
            None,
            StrOptions({"mlp", "conv4", "conv4_strided"}),
            torch.nn.Module,
        ],
    }

    def __init__(
        self,
        latent_dim=64,
        *,
        inner_lr=1.0,
        inner_steps=5,
        finetune_lr=0.001,
        finetune_steps=5,
        kl_weight=0.001,
        orthogonality_weight=0.001,
        encoder_penalty_weight=1e-9,
        dropout=0.3,
        learn_inner_lr=False,
        weight_decay=1e-8,
        backbone=None,
        hidden_layer_sizes=(128, 128),
        embedding_dim=64,
        input_shape=None,
        n_way=5,
        k_shot=1,
        n_query=15,
        meta_batch_size=8,
        max_epochs=20,
        episodes_per_epoch=1000,
        meta_lr=1e-3,
        meta_lr_schedule="constant",
        validation_fraction=0.0,
        callbacks=None,
        augment=None,
        device="auto",
        distributed=False,
        inference_dtype="float32",
        random_state=None,
        verbose=0,
    ):
        self.latent_dim = latent_dim
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.finetune_lr = finetune_lr
        self.finetune_steps = finetune_steps
        self.kl_weight = kl_weight
        self.orthogonality_weight = orthogonality_weight
        self.encoder_penalty_weight = encoder_penalty_weight
        self.dropout = dropout
        self.learn_inner_lr = learn_inner_lr
        self.weight_decay = weight_decay
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

    def _build_module(self) -> LEONetwork:
        backbone = None
        in_features = self.n_features_in_
        if self.backbone is not None:
            backbone = self._new_backbone()
            in_features = embedding_size(backbone, self.input_shape_)
        leo = LEO(
            in_features,
            self.latent_dim,
            inner_lr=self.inner_lr,
            inner_steps=self.inner_steps,
            finetune_lr=self.finetune_lr,
            finetune_steps=self.finetune_steps,
            kl_weight=self.kl_weight,
            encoder_penalty_weight=self.encoder_penalty_weight,
            orthogonality_weight=self.orthogonality_weight,
            dropout=self.dropout,
            learn_inner_lr=self.learn_inner_lr,
        )
        return LEONetwork(leo, backbone)

    def _net_params(self) -> dict:
        return {
            "optimizer__weight_decay": self.weight_decay,
            "callbacks": [
                ("gradient_norm_clipping", GradientNormClipping(MAX_GRAD_NORM))
            ],
        }

    def _divergence_hint(self) -> str:
        return f"lower meta_lr (now {self.meta_lr}) or inner_lr (now {self.inner_lr})"

    # -- standardisation -------------------------------------------------------

    def _learn_preprocessing(self, X: np.ndarray) -> None:
        """Mean and scale of the features the core sees (none with a backbone)."""
        if self.backbone is not None:
            # The backbone learns the scale of what it feeds the core.
            self._feature_mean = self._feature_scale = None
            return
        n_features = self.n_features_in_
        mean, std = Samples(X).moments()
        if len(self.input_shape_) == 3:
            # Pixels share one unit: scaling each alone would blow up the
            # rarely inked ones.
            scale = np.ones_like(std)
        else:
            # Each column in its own unit, as StandardScaler does.
            scale = np.where(std > 0, std, 1.0)
        squared_norm = np.sum((std / scale) ** 2)
        if squared_norm > 0:
            target = (
                LATENT_STEP_GAIN
                * (self.latent_dim + 2 * n_features)
                / (2 * self.latent_dim)
            )
            scale = scale * np.sqrt(squared_norm / target)
        self._feature_mean = mean
        self._feature_scale = scale

    def _samples(self, X: np.ndarray) -> Samples:
        return Samples(X, self._feature_mean, self._feature_scale)

    # -- fit -------------------------------------------------------------------

    def _check_not_regression(self, X, y) -> None:
        if is_task_list(X, y):
            y = TaskCollection(X).to_arrays()[1]
        if y is None:
            return
        if type_of_target(y, input_name="y") in (
            "continuous",
            "continuous-multioutput",
        ):
            raise ValueError(
                f"{type(self).__name__} classifies, but y is continuous: LEO has no "
                "regression head; pass class labels (ints or strings)"
            )

    @atomic
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, groups=None):
        """Meta-train LEO on episodes drawn from the classes of ``X``.

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
        self._check_not_regression(X, y)
        X, targets, groups, _ = self._validate_fit_data(
            X, y, groups, allow_regression=False
        )
        self._learn_preprocessing(X)
        self.net_ = self._meta_train(X, targets, groups, False, self._build_module)
        self._finish_fit(X)
        self._n_features_out = int(self.latent_dim)
        self._fit_classes = self.classes_
        return self

    def _embedding_network(self) -> torch.nn.Module | None:
        return self.net_.module_.backbone

    # -- adaptation ------------------------------------------------------------

    @atomic
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None):
        """Adapt to a new task from its labelled support examples.

        The first call after ``fit`` or ``reset_adaptation`` starts a new task
        whose classes are ``classes`` (or the labels of ``y``) from the
        meta-learned state: the encoder gives each class its latent code,
        ``inner_steps`` gradient steps on the support cross-entropy adapt the
        codes, and ``finetune_steps`` steps adapt the decoded weights. Later
        calls continue from the adapted codes and weights with the same steps
        on their own examples (as ``partial_fit`` continues training
        elsewhere in scikit-learn); a class that gets its first examples in a
        later call takes the encoder's code for them. The task's classes are
        fixed by the first call. On an unfitted estimator the network is
        initialised without meta-training.

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
        self._check_not_regression(X, y)
        if not hasattr(self, "net_"):
            self._initialize_without_meta_training(X, self._build_module)
            self._n_features_out = int(self.latent_dim)
        X, y = self._validate_samples(X, reset=False, y=y)
        with warnings.catch_warnings():
            # One example per class is what a 1-shot support set is.
            warnings.filterwarnings("ignore", "The number of unique classes")
            check_classification_targets(y)
        task = getattr(self, "_adaptation", None)
        task_classes = self._task_classes(
            y, classes, None if task is None else task.classes
        )
        core = self._inference_core()
        features = self._features(X)
        labels = torch.as_tensor(
            np.searchsorted(task_classes, y), device=features.device
        )
        with torch.no_grad():
            state = core.adapt(
                features,
                labels,
                len(task_classes),
                state=None if task is None else self._state(),
            )
        self._adaptation = _AdaptedTask(task_classes, state)
        self.classes_ = task_classes
        return self

    # -- inference -------------------------------------------------------------

    def _inference_core(self) -> LEO:
        """A copy of the meta-learned core in the inference dtype, in eval mode.

        The core is small, so a copy per call costs less than the work done
        with it. The copy adapts with the current step counts and (unless
        learned) step sizes, so ``set_params`` after ``fit`` takes effect.
        """
        core = copy.deepcopy(self.net_.module_.leo).to(self._inference_dtype())
        core.inner_steps = int(self.inner_steps)
        core.finetune_steps = int(self.finetune_steps)
        rates = {
            "inner_lr": (core.initial_inner_lr, core.inner_lr),
            "finetune_lr": (core.initial_finetune_lr, core.finetune_lr),
        }
        for name, (fitted, rate) in rates.items():
            value = getattr(self, name)
            if not core.learn_inner_lr:
                rate.data.fill_(float(value))
            elif value != fitted:
                raise ValueError(
                    f"{name}={value} cannot change the step sizes that fit "
                    f"learned (learn_inner_lr=True, starting from {name}={fitted}); "
                    f"set {name} back to {fitted}, or fit again to learn from the "
                    "new value"
                )
        return core.eval()

    def _state(self) -> LEOState | None:
        """The adapted state in the inference dtype (None before adaptation)."""
        task = getattr(self, "_adaptation", None)
        if task is None:
            return None
        dtype = self._inference_dtype()
        state = task.state
        return dataclasses.replace(
            state,
            **{
                field.name: value.to(dtype) if value.is_floating_point() else value
                for field in dataclasses.fields(state)
                if isinstance(value := getattr(state, field.name), torch.Tensor)
            },
        )

    def _features(self, X: np.ndarray) -> torch.Tensor:
        """Features the core sees for ``X``: standardised, embedded, chunked."""
        backbone = self.net_.module_.backbone
        features = self._embed(X, torch.nn.Flatten() if backbone is None else backbone)
        return features.reshape(len(features), self.net_.module_.leo.in_features)

    def transform(self, X):
        """Per-sample latent codes; moved with their class once adapted.

        Before adaptation a sample's code is the latent code the encoder
        gives a class whose only example is that sample. After
        ``partial_fit`` it is moved by the adaptation of the class the
        adapted classifier (softly) assigns it to; ``reset_adaptation``
        brings the unadapted codes back.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples.

        Returns
        -------
        codes : ndarray of shape (n_samples, latent_dim)
            float32 latent codes.
        """
        check_is_fitted(self, "net_")
        X = self._validate_samples(X, reset=False)
        features = self._features(X)
        core = self._inference_core()
        state = self._state()
        with torch.no_grad():
            codes = torch.cat(
                [
                    core.encode(features[start : start + CHUNK_SIZE], state)
                    for start in range(0, len(features), CHUNK_SIZE)
                ]
            )
        return codes.float().cpu().numpy()

    def _logits(self, X) -> np.ndarray:
        """float64 logits ``(n_samples, n_classes)``; -inf for a class not seen yet."""
        X = self._validate_samples(X, reset=False)
        state = self._state()
        with torch.no_grad():
            logits = self._inference_core().predict_logits(self._features(X), state)
        logits[:, state.class_counts == 0] = float("-inf")
        return logits.cpu().numpy()

    @available_after_adaptation()
    def decision_function(self, X):
        """Confidence scores of the adapted classifier.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
            Logits of the classes of ``classes_``, inner products of the
            features with each class's weights (a class without an example
            yet gets ``-inf``); with two classes, as in scikit-learn, the
            score of the second class minus that of the first.
        """
        return binary_decision(self._logits(X))

    @available_after_adaptation()
    def predict_proba(self, X):
        """Class probabilities of the adapted classifier.

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

    @available_after_adaptation()
    def predict(self, X):
        """Classes of the adapted task.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Predicted classes, from ``classes_``.
        """
        return self.classes_[np.argmax(self._logits(X), axis=1)]

    # -- batched few-shot evaluation (used by model_selection) -----------------

    def _few_shot_scores(self, X, episodes, chunk: int = 100) -> np.ndarray:
        """Query accuracy of every episode, adapted ``chunk`` episodes at a time.

        The adaptation of ``partial_fit`` (inference dtype, the Gaussians' means, no
        dropout), run by the core's batched forward.
        """
        check_is_fitted(self, "net_")
        X = self._validate_samples(X, reset=False)
        drawn, episodes = episodes.compact()
        features = self._features(X[drawn])
        core = self._inference_core()
        scores = []
        with torch.no_grad():
            for start in range(0, len(episodes), chunk):
                batch = episodes[start : start + chunk].to(features.device)
                logits = core(**batch.gather(features))
                correct = logits.argmax(-1) == batch.query_target
                scores.append(correct.double().mean(dim=1).cpu())
        return torch.cat(scores).numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        # fit needs class labels (or a list of (X, y) tasks).
        tags.target_tags.required = True
        return tags
