"""Pure PyTorch cores of sklearn-meta: no scikit-learn in this package."""

from .backbones import (
    MLP,
    Conv4,
    TaskBatchNorm2d,
    calibrate_batch_norm,
    embedding_size,
    make_backbone,
    set_elementary_batch_norm,
)

__all__ = [
    "MLP",
    "Conv4",
    "TaskBatchNorm2d",
    "calibrate_batch_norm",
    "embedding_size",
    "make_backbone",
    "set_elementary_batch_norm",
]
