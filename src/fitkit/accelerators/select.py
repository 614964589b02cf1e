"""Turning the Trainer's ``accelerator`` argument into an Accelerator object.

``"auto"`` takes the first available of CUDA, MPS and CPU; ``"gpu"`` the first
available of CUDA and MPS (as in Lightning); ``"cuda"``, ``"mps"`` and ``"cpu"`` ask
for one kind and fail clearly where it is absent. ``"xla"`` (alias ``"tpu"``) is never
picked by ``"auto"``: it needs ``torch_xla``, imported only once a run asks for it. An
Accelerator instance is used as given.
"""

from __future__ import annotations

from typing import Any

from fitkit.accelerators.accelerator import Accelerator
from fitkit.accelerators.cpu import CPUAccelerator
from fitkit.accelerators.cuda import CUDAAccelerator
from fitkit.accelerators.mps import MPSAccelerator
from fitkit.utilities.exceptions import MisconfigurationError, invalid

ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps", "xla", "tpu")

_EXPECTED = f"one of {ACCELERATORS} or an Accelerator instance"


def select_accelerator(accelerator: str | Accelerator) -> Accelerator:
    """The Accelerator for the Trainer's ``accelerator`` argument.

    Example::

        >>> select_accelerator("cpu").name
        'cpu'
        >>> select_accelerator("auto").name in ("cuda", "mps", "cpu")
        True
    """
    if isinstance(accelerator, Accelerator):
        if not accelerator.is_available():
            raise MisconfigurationError(
                invalid(
                    "accelerator",
                    type(accelerator).__name__,
                    "its is_available() returns False in this process",
                    "an accelerator whose devices this machine has",
                )
            )
        return accelerator
    name: Any = accelerator.lower() if isinstance(accelerator, str) else None
    if name == "cpu":
        return CPUAccelerator()
    if name == "auto":
        for kind in (CUDAAccelerator, MPSAccelerator):
            if kind.is_available():
                return kind()
        return CPUAccelerator()
    if name == "gpu":
        for kind in (CUDAAccelerator, MPSAccelerator):
            if kind.is_available():
                return kind()
        raise MisconfigurationError(
            invalid("accelerator", accelerator, "this process sees no CUDA or MPS GPU", "'cpu' or 'auto' here")
        )
    if name in ("xla", "tpu"):
        from fitkit.accelerators.xla import XLAAccelerator, require_torch_xla

        require_torch_xla("accelerator", accelerator)
        return XLAAccelerator()
    if name in ("cuda", "mps"):
        kind = CUDAAccelerator if name == "cuda" else MPSAccelerator
        if not kind.is_available():
            why = (
                "this process sees no CUDA device (torch.cuda.device_count() is 0: no GPU, "
                "a CPU-only torch build, or CUDA_VISIBLE_DEVICES hides them)"
                if name == "cuda"
                else "MPS needs Apple silicon and a torch build with MPS"
            )
            raise MisconfigurationError(invalid("accelerator", accelerator, why, "'cpu' or 'auto' here"))
        return kind()
    raise MisconfigurationError(invalid("accelerator", accelerator, "no such accelerator", _EXPECTED))
