"""The ``"16-true"`` and ``"bf16-true"`` plug-ins: train in a 16-bit dtype throughout.

Half the memory of float32 for weights, gradients and optimizer state, with no float32
master copy: small updates can round away, which is why ``"bf16-mixed"`` (autocast,
in :mod:`fitkit.precision.amp`) is usually the safer choice for training.
"""

from __future__ import annotations

import torch

from fitkit.precision.dtype import DtypePrecision
from fitkit.utilities.exceptions import MisconfigurationError, invalid

_DTYPES = {"16-true": torch.float16, "bf16-true": torch.bfloat16}


class HalfPrecision(DtypePrecision):
    """Module, floating-point inputs and tensors created in a step are float16 or bfloat16.

    Args:
        precision: ``"16-true"`` (float16) or ``"bf16-true"`` (bfloat16).

    Example::

        >>> HalfPrecision("bf16-true").dtype
        torch.bfloat16
    """

    def __init__(self, precision: str = "16-true") -> None:
        dtype = _DTYPES.get(precision) if isinstance(precision, str) else None
        if dtype is None:
            raise MisconfigurationError(
                invalid(
                    "precision", precision, "HalfPrecision trains in float16 or bfloat16", "'16-true' or 'bf16-true'"
                )
            )
        super().__init__(dtype)
        self.name = precision
