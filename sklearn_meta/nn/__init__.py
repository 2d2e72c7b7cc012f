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
from .leo import LEO, LEONetwork, LEOState
from .maml import MAML
from .prototypes import PrototypicalNetwork

__all__ = [
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
    "calibrate_batch_norm",
    "embedding_size",
    "inference_forward",
    "make_backbone",
]
