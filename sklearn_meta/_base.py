"""What the three meta-learners share: input checks, device, seeding, skorch wiring.

The estimators are plain scikit-learn classes. ``fit`` builds a private
skorch net (``net_``, a ``MetaNet`` of ``_net.py``) whose dataset items are
episodes and whose batches are meta-batches; the algorithm lives in the
torch module's ``forward`` (adapt every task of the meta-batch on its
support set, return query predictions), so skorch's own training step is
the outer update and its callbacks (progress bar, early stopping,
checkpoints, LR schedules, history) work unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import numbers
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data
from skorch.callbacks import EpochScoring, LRScheduler, ProgressBar
from skorch.helper import predefined_split

from ._adaptation import AdaptationMixin
from ._checks import (
    check_callbacks,
    check_channels_first,
    check_float32_range,
    check_hidden_layer_sizes,
    check_labels,
)
from ._compat import Interval, StrOptions
from ._data import INFERENCE_DTYPES, Samples
from ._distributed import episodes_per_process, fingerprint, process_device
from ._net import (
    DataParallelMetaNet,
    EpisodeDataset,
    EpisodeLoader,
    MetaNet,
    StopOnNonFiniteLoss,
    _score_cached_episodes,
    augment_samples,
)
from .model_selection import evaluate_few_shot
from .nn.backbones import (
    batch_statistics,
    calibrate_batch_norm,
    inference_forward,
    make_backbone,
)
from .nn.losses import EpisodeLoss
from .tasks import TaskCollection, training_and_validation_samplers

SHARED_PARAMETER_CONSTRAINTS: dict = {
    "hidden_layer_sizes": ["array-like"],
    "embedding_dim": [Interval(Integral, 1, None, closed="left")],
    "input_shape": [tuple, list, None],
    "n_way": [Interval(Integral, 2, None, closed="left")],
    "k_shot": [Interval(Integral, 1, None, closed="left")],
    "n_query": [Interval(Integral, 1, None, closed="left")],
    "meta_batch_size": [Interval(Integral, 1, None, closed="left")],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "episodes_per_epoch": [Interval(Integral, 1, None, closed="left")],
    "meta_lr": [Interval(Real, 0, None, closed="neither")],
    "meta_lr_schedule": [StrOptions({"constant", "cosine"})],
    "validation_fraction": [Interval(Real, 0, 1, closed="left")],
    "callbacks": [list, None],
    "augment": [callable, None],
    "device": [str, torch.device],
    "distributed": ["boolean"],
    "inference_dtype": [StrOptions(set(INFERENCE_DTYPES))],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
}

#: Episodes drawn once from the validation classes and reused every epoch, so
#: that the validation scores of two epochs are comparable.
N_VALIDATION_EPISODES = 100

#: Training samples whose statistics the BatchNorm layers keep after fit: a
#: fixed number, so calibration costs the same whatever the data's size.
N_CALIBRATION_SAMPLES = 1024

#: Episodes drawn by ``score`` (with a fixed seed, so that the candidates of a
#: grid search are judged on the same episodes).
N_SCORE_EPISODES = 100


def resolve_device(device) -> torch.device:
    """Turn the ``device`` parameter into a usable ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} but no CUDA GPU is available to torch; "
                "use device='cpu' or device='auto'"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif resolved.type != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    return resolved


def binary_decision(logits: np.ndarray) -> np.ndarray:
    """scikit-learn's decision_function shape: one score per sample for two classes."""
    if logits.shape[1] == 2:
        return logits[:, 1] - logits[:, 0]
    return logits


def atomic(method: Callable) -> Callable:
    """Restore the estimator's attributes when ``method`` raises.

    A failed call must leave a fitted estimator exactly as it was. Every
    method wrapped here assigns new objects to attributes rather than mutating
    existing ones, so a shallow copy of ``__dict__`` is enough to undo it.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        saved = dict(self.__dict__)
        try:
            return method(self, *args, **kwargs)
        except BaseException as error:
            if not isinstance(error, KeyboardInterrupt):
                self.__dict__.clear()
                self.__dict__.update(saved)
            raise

    return wrapper


def is_task_list(X, y) -> bool:
    """Whether ``X`` is a collection of ``(X_i, y_i)`` tasks rather than samples."""
    if isinstance(X, TaskCollection):
        return True
    if y is not None or not isinstance(X, list | tuple) or not X:
        return False
    first = X[0]
    # A task's X is a 2-D array-like; a row of two numbers is a sample.
    return (
        isinstance(first, list | tuple) and len(first) == 2 and np.ndim(first[0]) >= 1
    )


@contextlib.contextmanager
def seeded_rng(device: torch.device, seed: int):
    """torch's generators (the CPU's and ``device``'s) seeded, the caller's restored after."""
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


class MetaLearnerBase(AdaptationMixin, BaseEstimator):
    """Shared machinery of the meta-learning estimators (not public).

    Subclasses provide ``_build_module(input_shape, n_outputs)``, optionally
    ``_divergence_hint()``, and their adaptation logic.
    """

    # -- input -----------------------------------------------------------------

    def _validate_samples(self, X, *, reset: bool, y=None, y_numeric=False):
        """Check ``X`` (and ``y``); return samples shaped ``(n, *input_shape_)``.

        The samples keep the dtype they came in (``uint8`` images, a
        ``np.memmap``): nothing converts the whole set, the estimators convert
        a batch at a time (see :class:`~sklearn_meta._data.Samples`). On
        ``reset`` it records ``n_features_in_``, ``feature_names_in_`` and
        ``input_shape_``; otherwise it checks ``X`` against them.
        """
        image_shape = None
        if isinstance(X, list | tuple) and np.ndim(X[0] if len(X) else 0) > 1:
            X = np.asarray(X)  # a list of images
        if getattr(X, "ndim", None) is not None and X.ndim > 2:
            array = X if isinstance(X, np.ndarray) else np.asarray(X)
            if array.ndim != 4:
                raise ValueError(
                    "X must be 2-D (n_samples, n_features) or 4-D images "
                    f"(n_samples, channels, height, width); got shape {array.shape}"
                )
            image_shape = tuple(array.shape[1:])
            check_channels_first(image_shape, "X")
            X = array.reshape(array.shape[0], -1)
        check = {"dtype": "numeric", "ensure_min_samples": 1}
        if y is not None and not y_numeric:
            check_labels(y)
        if y is None:
            X = validate_data(self, X, reset=reset, **check)
        else:
            X, y = validate_data(self, X, y, reset=reset, y_numeric=y_numeric, **check)
        if reset:
            self.input_shape_ = self._check_input_shape(image_shape, X.shape[1])
        elif image_shape is not None and image_shape != self.input_shape_:
            raise ValueError(
                f"X has images of shape {image_shape}, but this estimator was "
                f"fitted on images of shape {self.input_shape_}"
            )
        check_float32_range(X)
        X = X.reshape(X.shape[0], *self.input_shape_)
        return X if y is None else (X, y)

    def _check_input_shape(self, image_shape, n_features: int) -> tuple:
        if image_shape is not None:
            return image_shape
        if self.input_shape is None:
            return (n_features,)
        shape = tuple(self.input_shape)
        if not shape or not all(
            isinstance(s, numbers.Integral) and int(s) > 0 for s in shape
        ):
            raise ValueError(
                f"input_shape must be a tuple of positive ints such as (1, 28, 28), "
                f"got {self.input_shape!r}"
            )
        check_channels_first(shape, "input_shape")
        if int(np.prod(shape)) != n_features:
            raise ValueError(
                f"input_shape={shape} holds {int(np.prod(shape))} values but X has "
                f"{n_features} features per sample; fix input_shape or X"
            )
        return tuple(int(s) for s in shape)

    def _validate_fit_data(
        self, X, y, groups, *, allow_regression: bool, force_regression=False
    ):
        """Check the meta-training data; returns ``X, targets, groups, regression``.

        Classification targets are encoded ``0..n_classes-1`` and the classes
        stored in ``classes_``; regression (continuous ``y``, or any numeric
        ``y`` with ``force_regression``) needs ``groups``.
        """
        # A refit starts over: a task adapted to the previous model is gone.
        vars(self).pop("_adaptation", None)
        if is_task_list(X, y):
            if groups is not None:
                raise ValueError(
                    "groups must be None when X is a collection of (X, y) tasks: "
                    "the tasks are the groups"
                )
            X, y, groups = TaskCollection(X).to_arrays()
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y "
                "is None: pass fit(X, y), fit(X, y, groups=task_ids) or "
                "fit(list_of_(X, y)_tasks)"
            )
        self._check_network_parameters()
        regression = bool(force_regression)
        if not regression:
            check_labels(y)
        if allow_regression and not regression:
            target_type = type_of_target(y, input_name="y", raise_unknown=True)
            regression = target_type in ("continuous", "continuous-multioutput")
        X, y = self._validate_samples(X, reset=True, y=y, y_numeric=regression)
        if regression:
            if groups is None:
                raise ValueError(
                    "y is continuous (regression), so the tasks must be given: pass "
                    "fit(X, y, groups=task_ids) or a list of (X, y) tasks; for "
                    "classification pass integer or string class labels"
                )
            targets = y.astype(np.float32)
        else:
            check_classification_targets(y)
            self.classes_, targets = np.unique(y, return_inverse=True)
        if groups is not None:
            groups = np.asarray(groups)
            if groups.ndim != 1 or len(groups) != len(X):
                raise ValueError(
                    f"groups must be 1-D with one task id per sample: X has {len(X)} "
                    f"samples, groups has shape {groups.shape}"
                )
        return X, targets, groups, regression

    def _check_network_parameters(self) -> None:
        """Check what ``_parameter_constraints`` cannot: layer sizes, callbacks."""
        check_hidden_layer_sizes(self.hidden_layer_sizes)
        check_callbacks(self.callbacks, self.validation_fraction)

    # -- device and seeds ------------------------------------------------------

    def _seed(self) -> int:
        return int(
            check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        )

    def _device(self) -> torch.device:
        """The device of the fitted network (a pickle may have moved it to CPU)."""
        return self._device_of(self.net_)

    @staticmethod
    def _device_of(net) -> torch.device:
        return torch.device(net.device)

    # -- meta-training ---------------------------------------------------------

    def _meta_train(
        self, X: np.ndarray, targets, groups, regression: bool, build_module: Callable
    ) -> MetaNet:
        """Meta-train ``build_module()`` with skorch on episodes of ``X``; returns the net.

        Runs inside a forked torch RNG seeded from ``random_state``, so the
        same seed gives the same network bit for bit on CPU and the global RNG
        of the caller is left alone.
        """
        device = resolve_device(self.device)
        if self.distributed:
            device = process_device(device)
        seed = self._seed()
        train_part, valid_part = training_and_validation_samplers(
            targets,
            groups,
            self.n_way,
            self.k_shot,
            self.n_query,
            validation_fraction=self.validation_fraction,
            regression=regression,
            seed=seed,
        )
        samples = self._samples(X)
        train_index, train_sampler = train_part
        train_set = EpisodeDataset(
            samples,
            train_index,
            train_sampler,
            self.episodes_per_epoch,
            fixed=False,
            device=device,
        )
        callbacks = [
            ("stop_on_non_finite_loss", StopOnNonFiniteLoss(self._divergence_hint()))
        ]
        train_split = None
        if valid_part is not None:
            valid_index, valid_sampler = valid_part
            valid_set = EpisodeDataset(
                samples,
                valid_index,
                valid_sampler,
                N_VALIDATION_EPISODES,
                fixed=True,
                device=device,
            )
            train_split = predefined_split(valid_set)
            callbacks.append(
                (
                    "valid_neg_mse" if regression else "valid_acc",
                    EpochScoring(
                        functools.partial(
                            _score_cached_episodes, regression=regression
                        ),
                        lower_is_better=False,
                        on_train=False,
                        name="valid_neg_mse" if regression else "valid_acc",
                        use_caching=True,
                    ),
                )
            )
        if self.verbose >= 1:
            callbacks.append(
                (
                    "progress_bar",
                    ProgressBar(
                        batches_per_epoch=math.ceil(
                            self.episodes_per_epoch / self.meta_batch_size
                        )
                    ),
                )
            )
        if self.meta_lr_schedule == "cosine":
            callbacks.append(
                (
                    "meta_lr_schedule",
                    LRScheduler(
                        policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                        T_max=self._outer_steps(),
                        step_every="batch",
                    ),
                )
            )
        extra = dict(self._net_params())
        callbacks += extra.pop("callbacks", [])
        # skorch initialises the callbacks it is given in place: copies keep the
        # user's instances untouched, so the estimator can be cloned and refitted.
        callbacks += [copy.deepcopy(cb) for cb in (self.callbacks or [])]
        if self.augment is not None:
            with seeded_rng(device, seed):
                # A wrong augmentation fails here, before any training.
                augment_samples(
                    self.augment, samples.take(np.arange(2), device), self.input_shape_
                )
        with seeded_rng(device, seed):
            module = build_module()
            net = (DataParallelMetaNet if self.distributed else MetaNet)(
                module=module,
                criterion=EpisodeLoss(regression=regression),
                optimizer=torch.optim.Adam,
                lr=self.meta_lr,
                max_epochs=self.max_epochs,
                batch_size=self.meta_batch_size,
                iterator_train=EpisodeLoader,
                iterator_train__augment=self.augment,
                iterator_train__sample_shape=self.input_shape_,
                iterator_valid=EpisodeLoader,
                train_split=train_split,
                callbacks=callbacks,
                device=device,
                verbose=int(self.verbose),
                **extra,
            )
            if self.distributed:
                net.fingerprint = fingerprint(X, targets, groups, seed)
            try:
                # Every BatchNorm normalises each meta-batch by its own samples
                # in meta-training; _finish_fit calibrates them after.
                with batch_statistics(module):
                    net.fit(train_set, y=None)
            except RuntimeError as error:
                # Adam refuses a step size that overflows float32: the same
                # divergence as a non-finite loss, reached a step earlier.
                if "overflow" not in str(error):
                    raise
                raise ValueError(
                    f"meta-training diverged ({error}); {self._divergence_hint()}"
                ) from None
        # The validation split holds the pool: a pickled estimator keeps no X.
        net.train_split = None
        return net

    def _new_backbone(self) -> torch.nn.Module:
        """The backbone a fit trains: built from its name, or a copy of the
        user's module (never trained in place: refits and clones must start
        from the same weights)."""
        backbone = make_backbone(
            self.backbone,
            self.input_shape_,
            self.hidden_layer_sizes,
            self.embedding_dim,
        )
        if isinstance(self.backbone, torch.nn.Module):
            backbone = copy.deepcopy(backbone)
        return backbone

    def _untrained_net(self, build_module: Callable, regression: bool = False):
        """An initialised but not meta-trained net, for partial_fit before fit."""
        self._check_network_parameters()
        device = resolve_device(self.device)
        with seeded_rng(device, self._seed()):
            return MetaNet(
                module=build_module(),
                criterion=EpisodeLoss(regression=regression),
                device=device,
            ).initialize()

    def _divergence_hint(self) -> str:
        return f"lower meta_lr (now {self.meta_lr})"

    def _outer_steps(self) -> int:
        """Optimiser steps of a fit that runs all its epochs, in this process."""
        episodes = self.episodes_per_epoch
        if self.distributed:
            episodes = episodes_per_process(episodes)
        return self.max_epochs * max(1, math.ceil(episodes / self.meta_batch_size))

    def _net_params(self) -> dict:
        """Extra skorch net arguments (``optimizer__weight_decay``, ...).

        A ``"callbacks"`` entry, a list of ``(name, callback)`` pairs, is added
        to the default callbacks, before the user's.
        """
        return {}

    # -- shared fitted-state helpers -------------------------------------------

    @property
    def module_(self) -> torch.nn.Module:
        """The meta-learned torch module."""
        check_is_fitted(self, "net_")
        return self.net_.module_

    @property
    def history_(self):
        """skorch's training history: per-epoch losses and validation scores."""
        check_is_fitted(self, "net_")
        return self.net_.history

    # -- the data path --------------------------------------------------------

    def _samples(self, X: np.ndarray) -> Samples:
        """``X`` (validated) as samples the network can take a batch at a time."""
        return Samples(X)

    def _to_tensor(self, X: np.ndarray) -> torch.Tensor:
        """All of ``X`` (a support set) as float32 on the device."""
        return self._samples(X).take(slice(None), self._device())

    def _embedding_network(self) -> torch.nn.Module | None:
        """The network that embeds samples (a backbone), None if there is none."""
        raise NotImplementedError

    def _inference_dtype(self) -> torch.dtype:
        return INFERENCE_DTYPES[self.inference_dtype]

    def _embed(self, X: np.ndarray, network: torch.nn.Module) -> torch.Tensor:
        """Eval-mode embeddings of ``X`` by ``network`` in the inference dtype, chunked."""
        device = self._device()
        dtype = self._inference_dtype()
        forward = inference_forward(network, dtype)
        chunks = [forward(x) for x in self._samples(X).chunks(device, dtype)]
        if not chunks:
            return torch.zeros(0, self._n_features_out, dtype=dtype, device=device)
        return torch.cat(chunks)

    def _calibrate(self, X: np.ndarray, network: torch.nn.Module | None) -> None:
        """BatchNorm statistics of ``network`` from a fixed number of samples of ``X``."""
        if network is None:
            return
        rng = np.random.default_rng(self._seed())
        rows = np.sort(rng.permutation(len(X))[:N_CALIBRATION_SAMPLES])
        samples = self._samples(X)
        calibrate_batch_norm(
            network, samples.take(rows, self._device()), samples.chunk_size
        )

    def _finish_fit(self, X: np.ndarray) -> None:
        """Calibrate the BatchNorm layers on training samples; eval mode."""
        self._calibrate(X, self._embedding_network())
        self.net_.module_.eval()

    def _learn_preprocessing(self, X: np.ndarray) -> None:
        """Learn what ``_samples`` needs from the training samples (nothing here)."""

    def _initialize_without_meta_training(
        self, X, build_module: Callable, regression: bool = False
    ) -> None:
        """An initialised, not meta-trained network, for partial_fit before fit.

        A user's backbone is used as given, weights and BatchNorm statistics
        included; a built-in one has its BatchNorm calibrated on ``X``.
        """
        X = self._validate_samples(X, reset=True)
        self._learn_preprocessing(X)
        self.net_ = self._untrained_net(build_module, regression)
        if not isinstance(self.backbone, torch.nn.Module):
            self._calibrate(X, self._embedding_network())
        self.net_.module_.eval()

    # -- adaptation ------------------------------------------------------------

    @staticmethod
    def _task_classes(y, classes, current=None, *, allow_new=False) -> np.ndarray:
        """The classes of the task ``partial_fit`` adapts to, checked.

        ``current`` is None on the first call of a task: its classes are
        ``classes`` or the labels seen. Later calls keep ``current``, adding
        new labels only when ``allow_new``.
        """
        seen = np.unique(y)
        if current is None:
            task_classes = seen if classes is None else np.unique(classes)
            if not np.isin(seen, task_classes).all():
                raise ValueError(
                    f"y has labels {seen[~np.isin(seen, task_classes)].tolist()} that "
                    "are not in classes; add them to classes"
                )
            if len(task_classes) < 2:
                raise ValueError(
                    "a task needs at least two classes to classify, but the first "
                    f"partial_fit call sees only {task_classes.tolist()}; pass more "
                    "classes in y, or all of them with classes=..."
                )
            return task_classes
        if classes is not None and not np.array_equal(np.unique(classes), current):
            raise ValueError(
                f"classes={np.unique(classes).tolist()} differs from the classes of "
                f"the task being adapted, {current.tolist()}; call reset_adaptation() "
                "to start a new task"
            )
        new = seen[~np.isin(seen, current)]
        if len(new) and not allow_new:
            raise ValueError(
                f"y has labels {new.tolist()} outside the classes of the task being "
                f"adapted, {current.tolist()}; call reset_adaptation() and start the "
                "task with all its classes (classes=... in the first partial_fit)"
            )
        return np.union1d(current, seen)

    # -- few-shot score ---------------------------------------------------------

    def score(self, X, y, groups=None):
        """Few-shot score on tasks drawn from ``(X, y)``.

        Draws 100 episodes of ``n_way`` classes (or, with ``groups``, tasks)
        with ``k_shot`` support and ``n_query`` query examples per class, with
        a fixed seed so that the candidates of a grid search meet the same
        episodes; adapts to each support set and judges the query set. The
        estimator is left unchanged. So ``GridSearchCV`` with
        ``cv=ClassKFold(...)`` needs no scorer. It warns when the classes
        scored were seen in meta-training, which inflates the score.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Samples of the classes (tasks) to score on, usually classes not
            seen in meta-training.
        y : array-like of shape (n_samples,)
            Their classes, or regression targets (with ``groups``).
        groups : array-like of shape (n_samples,), default=None
            Task ids; needed for regression.

        Returns
        -------
        score : float
            Mean query accuracy, or negative mean squared error.
        """
        check_is_fitted(self, "net_")
        return evaluate_few_shot(
            self,
            X,
            y,
            n_way=self.n_way,
            k_shot=self.k_shot,
            n_query=self.n_query,
            n_episodes=N_SCORE_EPISODES,
            groups=groups,
            random_state=0,
        ).mean
