"""Precision plug-ins: the number format a run trains in.

=================  =====================  ===========================================
``precision=``     plug-in                what it does
=================  =====================  ===========================================
``"32-true"``      :class:`Precision`     plain float32 (the default); the base class
``"64-true"``      :class:`DoublePrecision`  module, inputs and new tensors in float64
``"16-mixed"``     :class:`MixedPrecision`   float16 autocast, float32 weights, GradScaler
``"bf16-mixed"``   :class:`MixedPrecision`   bfloat16 autocast, float32 weights
``"16-true"``      :class:`HalfPrecision`    module and inputs in float16
``"bf16-true"``    :class:`HalfPrecision`    module and inputs in bfloat16
=================  =====================  ===========================================

See ``docs/precision.md``.
"""

from fitkit.precision.amp import MixedPrecision
from fitkit.precision.double import DoublePrecision
from fitkit.precision.half import HalfPrecision
from fitkit.precision.precision import Precision

__all__ = ["DoublePrecision", "HalfPrecision", "MixedPrecision", "Precision"]
