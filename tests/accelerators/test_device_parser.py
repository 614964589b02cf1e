"""``devices`` parsing for indexed accelerators (CUDA, MPS), over a given device count.

These run the real parser with the count as an argument, so every Lightning 2.x
form is checked on a machine without a GPU.
"""

from __future__ import annotations

from typing import Any

import pytest

from fitkit.accelerators import parse_device_indices
from fitkit.utilities.exceptions import MisconfigurationError


@pytest.mark.parametrize(
    ("devices", "count", "expected"),
    [
        (1, 4, [0]),
        (3, 4, [0, 1, 2]),
        (4, 4, [0, 1, 2, 3]),
        (-1, 3, [0, 1, 2]),
        ("-1", 2, [0, 1]),
        ("auto", 2, [0, 1]),
        ("AUTO", 1, [0]),
        ("3", 4, [0, 1, 2]),  # a digit string counts, as an int does
        (" 2 ", 4, [0, 1]),
        ("1", 4, [0]),
        ("1,", 4, [1]),  # a comma makes it a list of indices
        ("0,", 1, [0]),
        ("0,1", 2, [0, 1]),
        ("1, 3", 4, [1, 3]),
        ("3,1", 4, [3, 1]),  # order kept: local rank 0 uses device 3
        ([0], 1, [0]),
        ([1, 3], 4, [1, 3]),
        ((2,), 3, [2]),
    ],
)
def test_parses_lightning_forms(devices: Any, count: int, expected: list[int]) -> None:
    assert parse_device_indices(devices, count) == expected


@pytest.mark.parametrize(
    ("devices", "count", "fragment"),
    [
        (0, 4, "selects no device"),
        ("0", 4, "selects no device"),
        ([], 4, "selects no device"),
        ("[]", 4, "selects no device"),
        (-2, 4, ">= 1"),
        (5, 4, "asks for 5 cuda device(s) and this process sees 4"),
        ("3", 2, "asks for 3"),
        (1, 0, "sees 0"),
        (-1, 0, "sees none"),
        ("auto", 0, "sees none"),
        ([4], 4, "cuda device 4 does not exist (this process sees indices 0..3)"),
        ("0,4", 2, "cuda device 4 does not exist"),
        ([0], 0, "sees none"),
        ([0, 0], 2, "more than once"),
        ("1,1", 2, "more than once"),
        ([-1], 2, "ints >= 0"),
        ([True], 2, "ints >= 0"),
        ([0.0], 2, "ints >= 0"),
        (True, 2, "bool"),
        (1.0, 2, "float"),
        ({"a": 0}, 2, "dict"),
        (None, 2, "NoneType"),
        ("two", 2, "neither a count"),
        ("0,x", 2, "indices only"),
        ("-1,0", 2, "indices only"),
    ],
)
def test_refuses_bad_values_naming_devices(devices: Any, count: int, fragment: str) -> None:
    with pytest.raises(MisconfigurationError) as err:
        parse_device_indices(devices, count)
    message = str(err.value)
    assert message.startswith(f"`devices={devices!r}` is not valid:")
    assert fragment in message
    assert "Expected" in message and '"auto"' in message


def test_message_names_the_device_kind() -> None:
    with pytest.raises(MisconfigurationError, match="mps device 1 does not exist"):
        parse_device_indices([1], 1, kind="mps")
