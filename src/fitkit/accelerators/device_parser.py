"""Parsing the Trainer's ``devices`` argument for accelerators whose devices have indices.

Pure functions over a device count, so every rule is testable on a machine without
the device. The forms follow PyTorch Lightning 2.x:

=============  ===========  ======================================
``devices``    parsed       meaning
=============  ===========  ======================================
``"auto"``     all          every visible device
``-1``/"-1"    all          every visible device
``3``/``"3"``  [0, 1, 2]    the first three devices
``[1, 3]``     [1, 3]       devices 1 and 3
``"1, 3"``     [1, 3]       the same, as a string
``"1,"``       [1]          device 1 only (a comma makes a string a list)
=============  ===========  ======================================

``0``, ``"0"``, ``[]`` and ``"[]"`` select no device and are refused, as are
duplicates and indices the machine does not have.
"""

from __future__ import annotations

from typing import Any

from fitkit.utilities.exceptions import MisconfigurationError, invalid

EXPECTED_DEVICES = (
    '"auto", an int >= 1 (how many), -1 (all), a list of indices such as [0, 2], '
    'or a string such as "2" (how many), "0,1" or "1," (which)'
)


def parse_device_indices(devices: Any, device_count: int, kind: str = "cuda") -> list[int]:
    """The device indices ``devices`` selects on a machine with ``device_count`` devices of ``kind``.

    Raises :class:`~fitkit.utilities.exceptions.MisconfigurationError` naming
    ``devices`` for a value of the wrong form, one that selects nothing, repeats an
    index, or asks for a device the machine lacks.

    Example::

        >>> parse_device_indices(2, device_count=4)
        [0, 1]
        >>> parse_device_indices("1, 3", device_count=4)
        [1, 3]
        >>> parse_device_indices("2,", device_count=4)
        [2]
        >>> parse_device_indices(-1, device_count=2)
        [0, 1]
    """

    def fail(why: str) -> MisconfigurationError:
        return MisconfigurationError(invalid("devices", devices, why, EXPECTED_DEVICES))

    value = devices
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "auto" or text == "-1":
            value = -1
        elif text == "[]":
            value = []
        elif "," in text:
            parts = [p.strip() for p in text.split(",") if p.strip()]
            if not all(p.isdigit() for p in parts):
                raise fail("a comma-separated string must hold device indices only")
            value = [int(p) for p in parts]
        elif text.isdigit():
            value = int(text)
        else:
            raise fail("it is neither a count nor a list of device indices")
    if isinstance(value, bool):
        raise fail("a bool does not say which devices")
    if isinstance(value, int):
        if value == -1:
            if device_count < 1:
                raise fail(f"it asks for every {kind} device and this process sees none")
            return list(range(device_count))
        if value < 1:
            raise fail("it selects no device" if value == 0 else "a count must be >= 1 (or -1 for all)")
        if value > device_count:
            raise fail(f"it asks for {value} {kind} device(s) and this process sees {device_count}")
        return list(range(value))
    if isinstance(value, (list, tuple)):
        indices = list(value)
        if not indices:
            raise fail("it selects no device")
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices):
            raise fail("a list must hold device indices (ints >= 0)")
        if len(set(indices)) != len(indices):
            raise fail("a device index appears more than once")
        missing = [i for i in indices if i >= device_count]
        if missing:
            have = f"indices 0..{device_count - 1}" if device_count else "none"
            raise fail(f"{kind} device {missing[0]} does not exist (this process sees {have})")
        return indices
    raise fail(f"a {type(devices).__name__} does not say which devices")
