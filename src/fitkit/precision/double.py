"""The ``"64-true"`` plug-in: train in float64 from end to end.

For work that needs more than float32's seven digits (gradient checks, stiff
scientific models). Slow on GPUs and unavailable on MPS, which has no float64.
"""

from __future__ import annotations

import torch

from fitkit.precision.dtype import DtypePrecision


class DoublePrecision(DtypePrecision):
    """Module, floating-point inputs and tensors created in a step are all float64.

    The Trainer builds it for ``precision="64-true"`` (or ``64``, ``"64"``).

    Example::

        >>> import fitkit
        >>> trainer = fitkit.Trainer(accelerator="cpu", precision="64-true", enable_progress_bar=False)
        >>> type(trainer.strategy.precision).__name__
        'DoublePrecision'
    """

    name = "64-true"

    def __init__(self) -> None:
        super().__init__(torch.float64)
