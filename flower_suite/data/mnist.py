"""MNIST from its original IDX files (gzip-compressed or not) in a local directory.

The IDX format (LeCun et al.): a big-endian header of magic number ``0x000008NN`` (NN = number
of dimensions, type byte 0x08 = unsigned byte) followed by one 32-bit size per dimension, then
the raw bytes. Every field is checked so a truncated or mismatched file fails loudly.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from flower_suite.data.dataset import ArrayDataset

MNIST_DIR_ENV = "FLOWER_SUITE_MNIST_DIR"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file of unsigned bytes into an array of its declared shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise ValueError(f"{path}: IDX type 0x{raw[2]:02x} unsupported (only unsigned bytes)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header declares {expected} bytes of data, file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"MNIST file {stem}[.gz] not found in {directory}; download the four IDX files "
        f"there or set {MNIST_DIR_ENV}"
    )


def resolve_mnist_dir(path: str | Path | None = None) -> Path:
    """``path`` if given, else ``$FLOWER_SUITE_MNIST_DIR``; a clear error if neither exists."""
    chosen = path or os.environ.get(MNIST_DIR_ENV)
    if not chosen:
        raise FileNotFoundError(
            f"no MNIST directory: set data.path in the experiment or the {MNIST_DIR_ENV} "
            "environment variable to a folder holding the IDX files"
        )
    directory = Path(chosen).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST directory {directory} does not exist")
    return directory


def load_mnist_idx(path: str | Path | None = None, split: str = "train") -> ArrayDataset:
    """MNIST ``split`` ("train" or "test") as (N, 1, 28, 28) float32 in [0, 1]."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    directory = resolve_mnist_dir(path)
    image_stem, label_stem = _FILES[split]
    images = read_idx(_find(directory, image_stem))
    labels = read_idx(_find(directory, label_stem))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{directory}: images {images.shape} and labels {labels.shape} do not match"
        )
    x = (images.astype(np.float32) / 255.0)[:, None, :, :]
    return ArrayDataset(x=x, y=labels.astype(np.int64), num_classes=10, name=f"mnist-{split}")
