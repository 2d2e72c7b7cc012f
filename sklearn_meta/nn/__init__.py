"""Pure PyTorch cores of sklearn-meta: no scikit-learn in this package."""

from .augment import RandomAffine
from .backbones import (
    MLP,
    Conv4,
    TaskBatchNorm2d,
    calibrate_batch_norm,
    embedding_size,
    forward_in_float64,
    make_backbone,
)
from .executors import AutoExecutor, TaskThreads, TaskVmap, choose_executor
from .leo import LEO, LEOState
from .maml import MAML
from .prototypes import PrototypicalNetwork

__all__ = [
    "AutoExecutor",
    "LEO",
    "MLP",
    "Conv4",
    "LEOState",
    "MAML",
    "PrototypicalNetwork",
    "RandomAffine",
    "TaskBatchNorm2d",
    "TaskThreads",
    "TaskVmap",
    "calibrate_batch_norm",
    "choose_executor",
    "embedding_size",
    "forward_in_float64",
    "make_backbone",
]
