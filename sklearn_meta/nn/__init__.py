"""Pure PyTorch cores of sklearn-meta: no scikit-learn in this package."""

from .augment import RandomAffine
from .backbones import (
    MLP,
    Conv4,
    TaskBatchNorm2d,
    batch_statistics,
    calibrate_batch_norm,
    embedding_size,
    inference_forward,
    make_backbone,
)
from .executors import AutoExecutor, TaskThreads, TaskVmap, choose_executor
from .leo import LEO, LEOState
from .leo_network import LEONetwork
from .maml import MAML
from .prototypes import PrototypicalNetwork

__all__ = [
    "AutoExecutor",
    "LEO",
    "LEONetwork",
    "MLP",
    "Conv4",
    "LEOState",
    "MAML",
    "PrototypicalNetwork",
    "RandomAffine",
    "TaskBatchNorm2d",
    "batch_statistics",
    "TaskThreads",
    "TaskVmap",
    "calibrate_batch_norm",
    "choose_executor",
    "embedding_size",
    "inference_forward",
    "make_backbone",
]
