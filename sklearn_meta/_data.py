"""The data path: samples kept as the user stored them, converted a batch at a time.

An estimator never converts the whole of ``X``: a ``uint8`` array or an
``np.memmap`` stays what it is, and each meta-batch, calibration batch or
inference chunk is gathered, moved to the device and turned into floats on
its own, so memory grows with a batch, not with the data.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

#: How many samples are converted and embedded at once outside training...
CHUNK_SIZE = 1024

#: ... or fewer, so that a chunk holds at most this many input values (1,024
#: grey 32x32 images), which bounds its memory...
CHUNK_VALUES = 1024 * 32 * 32

#: ... and at most this many positions (pixels of one channel: 64 images of
#: 32x32; a row is one position). A convolution's activations grow with the
#: image's area whatever its channels, and on a CPU a chunk whose first
#: activations stay in the cache runs faster than a larger one.
CHUNK_POSITIONS = 64 * 32 * 32

#: The dtypes ``inference_dtype`` names.
INFERENCE_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class Samples:
    """Samples ``(n, *sample_shape)`` as stored, handed out as float tensors.

    ``uint8`` images (samples of three dimensions, ``(C, H, W)``) are pixels
    and are scaled to [0, 1]; any other number is taken as it is. ``offset``
    and ``scale`` (arrays of ``sample_shape``), when given, standardise every
    converted batch as ``(x - offset) / scale``.

    Parameters
    ----------
    data : ndarray or np.memmap of shape (n, *sample_shape)
        The samples; never copied as a whole.
    offset, scale : ndarray of shape sample_shape, default=None
        Standardisation applied after the conversion.
    """

    def __init__(
        self,
        data: np.ndarray,
        offset: np.ndarray | None = None,
        scale: np.ndarray | None = None,
    ) -> None:
        self.data = data
        self.sample_shape = tuple(data.shape[1:])
        self.pixels = data.dtype == np.uint8 and len(self.sample_shape) == 3
        self.offset = offset
        self.scale = scale

    def __len__(self) -> int:
        return len(self.data)

    @property
    def chunk_size(self) -> int:
        """Samples per chunk: ``CHUNK_SIZE``, fewer for large samples."""
        n_values = int(np.prod(self.sample_shape))
        n_positions = int(np.prod(self.sample_shape[1:]))
        return max(
            1,
            min(CHUNK_SIZE, CHUNK_VALUES // n_values, CHUNK_POSITIONS // n_positions),
        )

    def take(
        self, index, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Samples at ``index`` (any shape), ``(*index.shape, *sample_shape)`` floats."""
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        return self._convert(self.data[index], device, dtype)

    def chunks(
        self, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> Iterator[torch.Tensor]:
        """The samples in order, a chunk at a time, as float tensors."""
        chunk_size = self.chunk_size
        for start in range(0, len(self.data), chunk_size):
            yield self._convert(self.data[start : start + chunk_size], device, dtype)

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """float64 mean and standard deviation of every value, chunk by chunk."""
        total = np.zeros(self.sample_shape)
        total_square = np.zeros(self.sample_shape)
        cpu = torch.device("cpu")
        for chunk in self.chunks(cpu, torch.float64):
            total += chunk.sum(dim=0).numpy()
            total_square += chunk.square().sum(dim=0).numpy()
        mean = total / len(self)
        variance = np.maximum(total_square / len(self) - mean**2, 0.0)
        return mean, np.sqrt(variance)

    def _convert(
        self, batch: np.ndarray, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        # torch.from_numpy shares memory and refuses read-only arrays (a
        # memmap opened with mode "r"): those are copied, one batch only.
        batch = np.asarray(batch)
        if not (batch.flags.writeable and batch.flags.c_contiguous):
            batch = np.array(batch, order="C")
        tensor = torch.from_numpy(batch)
        if device.type == "cuda":
            tensor = tensor.pin_memory().to(device, non_blocking=True)
        tensor = tensor.to(dtype)
        if self.pixels:
            tensor = tensor / 255
        if self.offset is not None:
            offset = torch.as_tensor(self.offset, device=device, dtype=dtype)
            scale = torch.as_tensor(self.scale, device=device, dtype=dtype)
            tensor = (tensor - offset) / scale
        return tensor
