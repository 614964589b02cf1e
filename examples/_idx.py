"""A small reader for IDX files, the format of MNIST's and Fashion-MNIST's raw files.

An IDX file (http://yann.lecun.com/exdb/mnist/, "FILE FORMATS") is a 4-byte magic
number, then one big-endian 32-bit size per dimension, then the values, row-major and
big-endian::

    magic:  0x00 0x00 <type code> <number of dimensions>
    sizes:  N, [rows, cols, ...]   (big-endian int32 each)
    data:   N * rows * cols values of the type code's kind

Type codes: ``0x08`` unsigned byte, ``0x09`` signed byte, ``0x0B`` int16, ``0x0C``
int32, ``0x0D`` float32, ``0x0E`` float64. MNIST's ``*-images-idx3-ubyte`` files are
``0x00000803`` (N x 28 x 28 unsigned bytes), its ``*-labels-idx1-ubyte`` files
``0x00000801`` (N unsigned bytes). Files may be gzip-compressed (``.gz``, as
downloaded); :func:`read_idx` recognises gzip by its first two bytes, not by the name.

* :func:`read_idx`: one file to a ``torch.Tensor`` of its shape and type;
* :func:`find_idx_files`: ``<prefix>-images-idx3-ubyte[.gz]`` and
  ``<prefix>-labels-idx1-ubyte[.gz]`` in a folder (``prefix`` is ``train`` or ``t10k``
  for MNIST and Fashion-MNIST);
* :class:`IDXDataset`: images (and labels) as a map-style ``Dataset``.

This file is a helper of the example scripts (``dcgan_fashion_mnist.py``,
``mnist_lenet_idx.py``); it uses only torch and the standard library.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

# IDX type code -> torch dtype
IDX_TYPES: dict[int, torch.dtype] = {
    0x08: torch.uint8,
    0x09: torch.int8,
    0x0B: torch.int16,
    0x0C: torch.int32,
    0x0D: torch.float32,
    0x0E: torch.float64,
}
GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """The file is not a well-formed IDX file (bad magic number, wrong length, ...)."""


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    opener: Callable[..., Any] = gzip.open if head == GZIP_MAGIC else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as exc:  # a truncated or corrupt gzip stream
        raise IDXFormatError(f"{path}: could not decompress ({exc})") from exc


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read one IDX file (plain or gzip) into a tensor of its shape and type.

    Raises :class:`IDXFormatError` naming the file when the magic number is not an IDX
    one or when the data are shorter or longer than the sizes say.

    Example::

        >>> read_idx("t10k-labels-idx1-ubyte.gz").shape  # doctest: +SKIP
        torch.Size([10000])
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise IDXFormatError(f"{path}: not an IDX file ({len(raw)} bytes, shorter than the 4-byte magic number)")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\x00\x00" or code not in IDX_TYPES:
        raise IDXFormatError(
            f"{path}: not an IDX file: bad magic number 0x{raw[:4].hex()} (expected 0x0000TTNN, "
            f"TT a type code in {', '.join(f'0x{c:02x}' for c in IDX_TYPES)} and NN the number of dimensions; "
            "MNIST images are 0x00000803, labels 0x00000801)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IDXFormatError(f"{path}: truncated IDX header ({ndim} dimensions need {header} bytes, got {len(raw)})")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_TYPES[code]
    itemsize = torch.empty((), dtype=dtype).element_size()
    count = 1
    for size in shape:
        count *= size
    if len(raw) - header != count * itemsize:
        raise IDXFormatError(
            f"{path}: the header says shape {shape} ({count * itemsize} bytes of data), but the file has "
            f"{len(raw) - header} bytes after the header"
        )
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    data = torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header)  # bytearray: writable, no warning
    if itemsize > 1 and sys.byteorder == "little":  # IDX values are big-endian
        data = data.view(-1, itemsize).flip(1).contiguous()
    return data.view(dtype).reshape(shape)


def _first_existing(folder: Path, name: str) -> Path | None:
    # torchvision's downloads leave both the .gz and the extracted file: the plain one reads faster.
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_files(folder: str | os.PathLike[str], prefix: str = "train") -> tuple[Path | None, Path | None]:
    """``(<prefix>-images-idx3-ubyte[.gz], <prefix>-labels-idx1-ubyte[.gz])`` in ``folder``; None where absent."""
    folder = Path(folder)
    return (
        _first_existing(folder, f"{prefix}-images-idx3-ubyte"),
        _first_existing(folder, f"{prefix}-labels-idx1-ubyte"),
    )


class IDXDataset(Dataset):
    """Images from an idx3 file (N x H x W), and labels from an idx1 file (N), if given.

    Each item is ``(image, label)``: the image a float32 tensor of shape 1 x H x W in
    [0, 1] (what ``torchvision.transforms.ToTensor`` gives for a grey image), passed
    through ``transform`` when one is given; the label an ``int`` (-1 when there is no
    labels file). The files are read whole into memory when the dataset is built
    (MNIST's 60,000 training images are 47 MB).

    Example::

        >>> ds = IDXDataset("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")  # doctest: +SKIP
        >>> image, label = ds[0]; image.shape, label  # doctest: +SKIP
        (torch.Size([1, 28, 28]), 7)
    """

    def __init__(
        self,
        images: str | os.PathLike[str],
        labels: str | os.PathLike[str] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.images = read_idx(images)
        if self.images.dim() != 3:
            raise IDXFormatError(
                f"{images}: expected images (3 dimensions, N x H x W), got shape {tuple(self.images.shape)}"
            )
        self.labels: torch.Tensor | None = None
        if labels is not None:
            self.labels = read_idx(labels).long()
            if self.labels.dim() != 1:
                raise IDXFormatError(f"{labels}: expected labels (1 dimension), got shape {tuple(self.labels.shape)}")
            if len(self.labels) != len(self.images):
                raise IDXFormatError(
                    f"{labels} has {len(self.labels)} labels but {images} has {len(self.images)} images"
                )
        self.transform = transform

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike[str],
        prefix: str = "train",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        labels: bool = True,
    ) -> IDXDataset:
        """The ``<prefix>-*`` files in ``folder`` (labels only when ``labels`` and present)."""
        images_path, labels_path = find_idx_files(folder, prefix)
        if images_path is None:
            raise FileNotFoundError(f"no {prefix}-images-idx3-ubyte[.gz] in {folder}")
        if labels and labels_path is None:
            raise FileNotFoundError(f"no {prefix}-labels-idx1-ubyte[.gz] in {folder}")
        return cls(images_path, labels_path if labels else None, transform)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].unsqueeze(0)
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        if self.transform is not None:
            image = self.transform(image)
        label = int(self.labels[index]) if self.labels is not None else -1
        return image, label
