"""MAMLFeatureExtractor: MAML and its family as a scikit-learn transformer."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted

from ._adaptation import available_after_adaptation
from ._base import (
    SHARED_PARAMETER_CONSTRAINTS,
    MetaLearnerBase,
    atomic,
)
from ._compat import Interval, StrOptions, _fit_context
from .nn.backbones import (
    batch_statistics,
    calibrate_batch_norm,
    embedding_size,
)
from .nn.executors import AutoExecutor
from .nn.losses import episode_scores
from .nn.maml import MAML

#: The inner step sizes ``inner_lr="auto"`` stands for (docs/defaults.md).
AUTO_INNER_LR = {"classification": 0.4, "regression": 0.1}


@dataclass
class _AdaptedTask:
    """The task ``partial_fit`` adapted to.

    Attributes
    ----------
    classes : ndarray or None
        The task's classes (None in regression).
    params : dict of str to torch.Tensor
        The adapted weights, by name.
    body : torch.nn.Module
        A copy of the body with the adapted weights and BatchNorm statistics
        of the support set, for batch-independent ``transform``.
    """

    classes: np.ndarray | None
    params: dict
    body: torch.nn.Module


def _is_classifier(estimator) -> bool:
    return not estimator._regression


class MAMLFeatureExtractor(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, MetaLearnerBase
):
    """MAML and its family: a meta-learned initialisation, adapted by gradient steps.

    ``fit`` meta-learns the initial weights of a network (a body and a linear
    head) such that ``inner_steps`` gradient steps at ``inner_lr`` on a new
    task's few labelled examples fit that task. ``transform`` returns the
    body's embedding (penultimate layer), adapted once ``partial_fit`` has
    adapted it to a task; ``predict`` then answers for that task.

    The family: ``first_order=True`` is first-order MAML; ``inner_params="head"``
    is ANIL (only the head adapts; the body runs once per meta-batch);
    ``learn_inner_lr=True`` is Meta-SGD (a learned step size per weight);
    ``algorithm="reptile"`` is Reptile; ``algorithm="imaml"`` is implicit
    MAML (the meta-gradient by the implicit function theorem, memory
    independent of ``inner_steps``). The default, second-order MAML, is
    exact: its meta-gradient equals a plain-autograd reference.

    Parameters
    ----------
    inner_lr : float or "auto", default="auto"
        Step size of the inner loop (initial value when learned). ``"auto"``
        is 0.4 for classification (the MAML paper's Omniglot setting) and
        0.1 for regression.
    inner_steps : int, default=1
        Inner gradient steps per task in meta-training.
    adapt_steps : int or None, default=None
        Gradient steps at adaptation (``partial_fit``, ``score``); ``None``
        means ``inner_steps``. Taking more steps at test time often helps.
    first_order : bool, default=False
        First-order MAML: drop the second-order terms of the meta-gradient.
    inner_params : {"all", "head"}, default="all"
        ``"head"`` adapts only the head (ANIL).
    learn_inner_lr : bool, default=False
        Meta-SGD: learn one inner step size per adapted weight.
    algorithm : {"maml", "reptile", "imaml"}, default="maml"
        ``"reptile"`` moves the initialisation towards the adapted weights.
        ``"imaml"`` regularises the inner problem towards the initialisation
        (``imaml_lambda``) and computes the meta-gradient by the implicit
        function theorem with conjugate gradient (``cg_steps``); it takes
        neither ``first_order``, ``learn_inner_lr`` nor
        ``inner_params="head"``.
    imaml_lambda : float, default=1.0
        iMAML: strength of the pull towards the initialisation in the inner
        loss, ``imaml_lambda / 2 * |weights - initialisation|^2``. Larger
        values adapt less and make the meta-gradient cheaper to solve for.
    cg_steps : int, default=5
        iMAML: conjugate-gradient steps (Hessian-vector products) per task
        for the meta-gradient.
    task : {"auto", "classification", "regression"}, default="auto"
        ``"auto"``: regression when ``y`` is continuous (tasks then come from
        ``groups``), classification otherwise.
    backbone : {"auto", "mlp", "conv4", "conv4_strided"} or torch.nn.Module, default="auto"
        The body. ``"auto"`` is ``"mlp"`` for rows and, for images,
        ``"conv4_strided"`` up to 32 pixels a side, ``"conv4"`` above (see
        "Choosing the defaults" in the user guide).
    hidden_layer_sizes : tuple of int, default=(128, 128)
        Hidden layers of the MLP body.
    embedding_dim : int, default=64
        Width of the embedding (channels of the Conv4 body).
    input_shape : tuple of int, default=None
        Shape ``(C, H, W)`` of one image when images come as flat rows.
    n_way, k_shot, n_query : int, default=5, 1, 15
        Shape of the training episodes (``n_way`` is unused in regression).
    meta_batch_size : int, default=16
        Tasks per outer step.
    max_epochs : int, default=3
        Passes of ``episodes_per_epoch`` tasks. The defaults train for about
        a minute and a half on two CPU cores on 28x28 images; MAML keeps
        improving for many thousands of tasks: raise it when you can.
    episodes_per_epoch : int, default=500
        Tasks per epoch.
    meta_lr : float, default=1e-3
        Adam's learning rate for the outer update.
    meta_lr_schedule : {"constant", "cosine"}, default="constant"
        ``"cosine"`` lowers Adam's learning rate from ``meta_lr`` to 0 along a
        half cosine over the ``max_epochs * episodes_per_epoch`` episodes
        (per optimiser step; early stopping ends it sooner).
    validation_fraction : float, default=0.0
        Fraction of classes (or tasks) held out to record few-shot validation
        scores each epoch.
    callbacks : list of skorch callbacks, default=None
        Extra skorch callbacks; copied before use.
    augment : callable or None, default=None
        Data augmentation for meta-training only: maps a batch of samples
        ``(n, *input_shape_)`` (images as ``(n, C, H, W)``) to a batch of the
        same shape, applied to every episode's support and query samples, for
        example :class:`~sklearn_meta.nn.augment.RandomAffine`. Helps when
        there are few training classes to learn from.
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        Where the network runs.
    distributed : bool, default=False
        Meta-train as one of the processes started by ``torchrun``: each
        process trains on its share of every meta-batch (so one outer step
        sees ``WORLD_SIZE * meta_batch_size`` episodes) and the gradients are
        averaged across processes. Only rank 0 prints and saves. See the
        "Scaling out" page of the documentation.
    inference_dtype : {"float32", "float64"}, default="float32"
        Precision of the body's forward in ``transform`` and ``predict``.
        ``"float64"`` makes a sample's output independent of the other
        samples of its batch to the last float32 bit, at several times the
        cost; ``"float32"`` agrees with it to about 1e-6. Adaptation runs in
        float32, as meta-training does.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation and episodes; bit-for-bit repeatable on CPU.
    verbose : int, default=0
        1 shows a progress bar and the per-epoch log.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Training classes after ``fit``; the adapted task's classes after
        ``partial_fit`` (classification).
    net_ : skorch.NeuralNet
        The private skorch net that meta-trained the module.
    module_ : sklearn_meta.nn.maml.MAML
        The meta-learned initialisation.
    history_ : skorch.History
        Per-epoch losses (and validation scores).
    n_features_in_ : int
        Features per sample (pixels for images).
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame.
    input_shape_ : tuple of int
        Shape of one sample as the body sees it.

    See Also
    --------
    MetaMetricClassifier : adapts without gradient steps, by class prototypes.
    LEOTransformer : adapts in a learned low-dimensional latent space.

    Notes
    -----
    BatchNorm layers normalise every task's support and query sets by their
    own statistics in meta-training, as MAML's reference implementation
    does, and so does the batched few-shot evaluation (``score``,
    :func:`~sklearn_meta.model_selection.evaluate_few_shot`). ``transform``
    and ``predict`` must not depend on the batch, so they normalise with
    stored statistics: of the training data after ``fit``, of the support
    set after ``partial_fit``. With an MLP body there is no BatchNorm and the
    two paths give identical results.

    For classification the head starts with one learned row replicated for
    every class (UnicornMAML's permutation-invariant initialisation), so a
    task may have any number of classes. A consequence worth knowing: at the
    first inner step all logits are equal and the gradient reaching the body
    cancels, so the first step adapts only the head and the body adapts from
    the second step on (the meta-gradient trains the body either way).

    References
    ----------
    .. [1] C. Finn, P. Abbeel, S. Levine. "Model-Agnostic Meta-Learning for
       Fast Adaptation of Deep Networks". ICML 2017.

    Examples
    --------
    >>> from sklearn_meta import MAMLFeatureExtractor
    >>> from sklearn_meta.datasets import make_sinusoid_tasks
    >>> X, y, groups = make_sinusoid_tasks(n_tasks=50, n_points=20, random_state=0)
    >>> maml = MAMLFeatureExtractor(hidden_layer_sizes=(40, 40), embedding_dim=40,
    ...                             inner_lr=0.01, k_shot=10, n_query=10,
    ...                             max_epochs=1, episodes_per_epoch=32,
    ...                             random_state=0)
    >>> maml = maml.fit(X, y, groups=groups)
    >>> maml.partial_fit(X[:10], y[:10]).predict(X[10:13]).shape
    (3,)
    >>> maml.transform(X[:2]).shape
    (2, 40)
    """

    _parameter_constraints: dict = {
        **SHARED_PARAMETER_CONSTRAINTS,
        "backbone": [
            StrOptions({"auto", "mlp", "conv4", "conv4_strided"}),
            torch.nn.Module,
        ],
        "inner_lr": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "inner_steps": [Interval(Integral, 1, None, closed="left")],
        "adapt_steps": [Interval(Integral, 0, None, closed="left"), None],
        "first_order": ["boolean"],
        "inner_params": [StrOptions({"all", "head"})],
        "learn_inner_lr": ["boolean"],
        "algorithm": [StrOptions({"maml", "reptile", "imaml"})],
        "imaml_lambda": [Interval(Real, 0, None, closed="neither")],
        "cg_steps": [Interval(Integral, 1, None, closed="left")],
        "task": [StrOptions({"auto", "classification", "regression"})],
    }

    def __init__(
        self,
        inner_lr="auto",
        inner_steps=1,
        *,
        adapt_steps=None,
        first_order=False,
        inner_params="all",
        learn_inner_lr=False,
        algorithm="maml",
        imaml_lambda=1.0,
        cg_steps=5,
        task="auto",
        backbone="auto",
        hidden_layer_sizes=(128, 128),
        embedding_dim=64,
        input_shape=None,
        n_way=5,
        k_shot=1,
        n_query=15,
        meta_batch_size=16,
        max_epochs=3,
        episodes_per_epoch=500,
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
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.adapt_steps = adapt_steps
        self.first_order = first_order
        self.inner_params = inner_params
        self.learn_inner_lr = learn_inner_lr
        self.algorithm = algorithm
        self.imaml_lambda = imaml_lambda
        self.cg_steps = cg_steps
        self.task = task
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

    def _build_module(self, regression: bool) -> MAML:
        body = self._new_backbone()
        # MAML refuses the combinations that do not apply (reptile or imaml
        # with learn_inner_lr or ANIL, imaml with first_order) with a
        # ValueError naming them.
        return MAML(
            body,
            embedding_dim=embedding_size(body, self.input_shape_),
            inner_lr=self._inner_lr(regression),
            inner_steps=self.inner_steps,
            first_order=self.first_order,
            inner_params=self.inner_params,
            learn_inner_lr=self.learn_inner_lr,
            algorithm=self.algorithm,
            imaml_lambda=self.imaml_lambda,
            cg_steps=self.cg_steps,
            task="regression" if regression else "classification",
            # iMAML's implicit gradient node has no vmap rule.
            executor=AutoExecutor(body, vectorisable=self.algorithm != "imaml"),
        )

    def _inner_lr(self, regression: bool) -> float:
        if self.inner_lr == "auto":
            return AUTO_INNER_LR["regression" if regression else "classification"]
        return float(self.inner_lr)

    def _divergence_hint(self) -> str:
        # Called before fit has stored the task type: "auto" is spelt out.
        inner_lr = (
            f"'auto': {AUTO_INNER_LR['classification']} for classification, "
            f"{AUTO_INNER_LR['regression']} for regression"
            if self.inner_lr == "auto"
            else self.inner_lr
        )
        return f"lower meta_lr (now {self.meta_lr}) or inner_lr (now {inner_lr})"

    def _n_adapt_steps(self) -> int:
        steps = self.inner_steps if self.adapt_steps is None else self.adapt_steps
        if steps == 0 and not self._regression:
            raise ValueError(
                "adapt_steps=0 leaves the head as initialised, every class with "
                "the same score, so a classification task would be decided by "
                "rounding noise; set adapt_steps >= 1 (zero steps are valid for "
                "regression only, where they give the meta-learned prediction)"
            )
        return steps

    @contextlib.contextmanager
    def _live_inner_lr(self):
        """The meta-learned module, taking steps of the current ``inner_lr``.

        Adaptation follows ``set_params`` as ``adapt_steps`` does, except
        where ``learn_inner_lr=True`` made the step sizes learned weights.
        """
        module = self.net_.module_
        fitted = module.inner_lr
        inner_lr = self._inner_lr(self._regression)
        if module.learn_inner_lr:
            if inner_lr != fitted:
                raise ValueError(
                    f"inner_lr={self.inner_lr!r} cannot change the step sizes that "
                    f"fit learned (learn_inner_lr=True, starting from "
                    f"inner_lr={fitted}); set inner_lr back to {fitted}, or fit "
                    "again to learn from the new value"
                )
            yield module
            return
        module.inner_lr = inner_lr
        try:
            yield module
        finally:
            module.inner_lr = fitted

    # -- fit -------------------------------------------------------------------

    @atomic
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, groups=None):
        """Meta-learn the initialisation on tasks drawn from ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W), or list of (X_i, y_i) tasks
            Training samples, or a collection of tasks.
        y : array-like of shape (n_samples,)
            Class labels, or regression targets (with ``groups``).
        groups : array-like of shape (n_samples,), default=None
            Task id of every sample: each group is one task.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        X, targets, groups, regression = self._validate_fit_data(
            X,
            y,
            groups,
            allow_regression=self.task != "classification",
            force_regression=self.task == "regression",
        )
        if regression:
            vars(self).pop("classes_", None)
            vars(self).pop("_fit_classes", None)
        self._build_module(regression)  # refuses bad combinations before training
        self.net_ = self._meta_train(
            X, targets, groups, regression, lambda: self._build_module(regression)
        )
        self._regression = regression
        self._finish_fit(X)
        self._n_features_out = self.net_.module_.embedding_dim
        if not regression:
            self._fit_classes = self.classes_
        return self

    # -- adaptation ------------------------------------------------------------

    @atomic
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None):
        """Adapt to a task by gradient steps on its labelled examples.

        The first call after ``fit`` or ``reset_adaptation`` starts a new task
        from the meta-learned initialisation (classification: a head for
        ``classes``, or the labels of ``y``); later calls take ``adapt_steps``
        further steps from the adapted weights on the new examples. On an
        unfitted estimator the network is initialised without meta-learning.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Support examples of the task.
        y : array-like of shape (n_samples,)
            Their labels (or regression targets).
        classes : array-like, default=None
            All classes of the task, when some have no example in this call.

        Returns
        -------
        self : object
            The adapted estimator.

        Raises
        ------
        ValueError
            If the weights become non-finite during the steps (too large an
            ``inner_lr`` or too many ``adapt_steps``); the estimator then keeps
            the task it was adapting.
        """
        if not hasattr(self, "net_"):
            kind = type_of_target(np.asarray(y), input_name="y")
            self._regression = self.task == "regression" or (
                self.task == "auto" and kind == "continuous"
            )
            self._initialize_without_meta_training(
                X, lambda: self._build_module(self._regression), self._regression
            )
            self._n_features_out = self.net_.module_.embedding_dim
        X, y = self._validate_samples(X, reset=False, y=y, y_numeric=self._regression)
        n_steps = self._n_adapt_steps()
        task = getattr(self, "_adaptation", None)
        if self._regression:
            if y.dtype.kind not in "biuf":
                raise ValueError(
                    f"this estimator was fitted for regression, but y has "
                    f"{y.dtype} values; pass numbers, or fit with class labels "
                    "(task='classification') to classify"
                )
            targets = torch.as_tensor(y, dtype=torch.float32, device=self._device())
            task_classes = n_classes = None
        else:
            check_classification_targets(y)
            task_classes = self._task_classes(
                y, classes, None if task is None else task.classes
            )
            targets = torch.as_tensor(
                np.searchsorted(task_classes, y), device=self._device()
            )
            n_classes = len(task_classes)
        support_x = self._to_tensor(X)
        with self._live_inner_lr() as module:
            module.train()  # batch statistics per task, as in meta-training
            try:
                with batch_statistics(module):
                    params = module.adapt(
                        support_x,
                        targets,
                        n_classes=n_classes,
                        n_steps=n_steps,
                        params=None if task is None else task.params,
                    )
            finally:
                module.eval()
        params = {name: value.detach() for name, value in params.items()}
        if not all(torch.isfinite(value).all() for value in params.values()):
            # NaN weights would answer every later call with NaN; refusing
            # keeps the task that was being adapted, as for any bad input.
            hint = (
                f"; the learned rates of learn_inner_lr=True are tuned for "
                f"inner_steps={self.inner_steps} steps"
                if self.learn_inner_lr
                else ""
            )
            raise ValueError(
                f"adaptation diverged: the weights became non-finite within "
                f"{n_steps} steps; lower adapt_steps or inner_lr (now "
                f"{self._inner_lr(self._regression)}){hint}"
            )
        body = copy.deepcopy(module.body)
        body.load_state_dict(
            {
                name[len("body.") :]: v
                for name, v in params.items()
                if name.startswith("body.")
            },
            strict=False,
        )
        calibrate_batch_norm(body, support_x)
        body.eval()
        self._adaptation = _AdaptedTask(task_classes, params, body)
        if not self._regression:
            self.classes_ = task_classes
        return self

    # -- inference -------------------------------------------------------------

    def _embedding_network(self) -> torch.nn.Module:
        return self.net_.module_.body

    def _current_body(self) -> torch.nn.Module:
        task = getattr(self, "_adaptation", None)
        return self.net_.module_.body if task is None else task.body

    def transform(self, X):
        """The body's embedding of ``X``, adapted if ``partial_fit`` adapted it.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples.

        Returns
        -------
        embeddings : ndarray of shape (n_samples, embedding_dim)
            float32 embeddings (the penultimate layer).
        """
        check_is_fitted(self, "net_")
        X = self._validate_samples(X, reset=False)
        return self._embed(X, self._current_body()).float().cpu().numpy()

    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "net_")
        X = self._validate_samples(X, reset=False)
        embeddings = self._embed(X, self._current_body())
        params = self._adaptation.params
        weight = params["head.weight"].to(embeddings.dtype)
        bias = params["head.bias"].to(embeddings.dtype)
        outputs = embeddings @ weight.T + bias
        return (
            outputs.squeeze(-1).cpu().numpy()
            if self._regression
            else outputs.cpu().numpy()
        )

    @available_after_adaptation()
    def predict(self, X):
        """Predictions of the adapted network: classes, or regression values.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Classes of the adapted task, or regression values.
        """
        outputs = self._outputs(X)
        if self._regression:
            return outputs
        return self.classes_[np.argmax(outputs, axis=1)]

    @available_after_adaptation(_is_classifier)
    def predict_proba(self, X):
        """Class probabilities of the adapted network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities in the order of ``classes_``.
        """
        return softmax(self._outputs(X), copy=False)

    def _few_shot_scores(self, X, episodes) -> np.ndarray:
        """Score every episode, adapting a meta-batch of them at a time."""
        check_is_fitted(self, "net_")
        X = self._validate_samples(X, reset=False)
        samples = self._samples(X)
        device = self._device()
        regression = self._regression
        n_steps = self._n_adapt_steps()
        scores = []
        with self._live_inner_lr() as module:
            module.train()  # per-task batch statistics, as in meta-training
            try:
                with torch.no_grad(), batch_statistics(module):
                    for start in range(0, len(episodes), self.meta_batch_size):
                        batch = episodes[start : start + self.meta_batch_size]
                        inputs = {
                            "support_x": samples.take(batch.support_index, device),
                            "support_y": batch.support_target.to(device),
                            "query_x": samples.take(batch.query_index, device),
                        }
                        batch = batch.to(device)
                        if regression:
                            inputs["support_y"] = inputs["support_y"].float()
                        outputs = module(**inputs, n_steps=n_steps)
                        scores.append(
                            episode_scores(
                                outputs, batch.query_target, regression
                            ).cpu()
                        )
            finally:
                module.eval()
        return torch.cat(scores).double().numpy()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float32"]
        # fit needs targets: class labels, regression values, or (X, y) tasks.
        tags.target_tags.required = True
        return tags
