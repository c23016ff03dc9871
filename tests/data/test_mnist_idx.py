"""Tests for ``flower_suite.data.mnist``: IDX files written by hand in a temporary folder."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from flower_suite.data.mnist import MNIST_DIR_ENV, load_mnist_idx, read_idx, resolve_mnist_dir

IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension

STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _idx_bytes(magic: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    """A big-endian IDX header (magic, then one 32-bit size per dimension) plus payload."""
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in shape)
    return header + payload


def _write(path: Path, content: bytes) -> Path:
    """Write ``content`` to ``path``, gzip-compressed when the name ends in ``.gz``."""
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(content)
    else:
        path.write_bytes(content)
    return path


def _make_split(
    directory: Path, split: str, n: int, *, gz: bool, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Write random 28x28 images and labels for ``split``; return (images, labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    image_stem, label_stem = STEMS[split]
    _write(
        directory / f"{image_stem}{suffix}", _idx_bytes(IMAGES_MAGIC, (n, 28, 28), images.tobytes())
    )
    _write(directory / f"{label_stem}{suffix}", _idx_bytes(LABELS_MAGIC, (n,), labels.tobytes()))
    return images, labels


# -------------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_images(tmp_path: Path, gz: bool) -> None:
    """``read_idx`` returns the uint8 array in its declared shape, raw or gzip-compressed."""
    # Prepare
    images = np.arange(3 * 28 * 28, dtype=np.uint64).astype(np.uint8).reshape(3, 28, 28)
    name = "imgs.idx" + (".gz" if gz else "")
    path = _write(tmp_path / name, _idx_bytes(IMAGES_MAGIC, (3, 28, 28), images.tobytes()))

    # Execute
    out = read_idx(path)

    # Assert
    assert out.dtype == np.uint8
    assert out.shape == (3, 28, 28)
    np.testing.assert_array_equal(out, images)


def test_read_idx_accepts_str_paths(tmp_path: Path) -> None:
    """A string path works as well as a ``Path``."""
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    path = _write(tmp_path / "labels", _idx_bytes(LABELS_MAGIC, (5,), labels.tobytes()))

    np.testing.assert_array_equal(read_idx(str(path)), labels)


def test_read_idx_gzip_file_is_really_compressed(tmp_path: Path) -> None:
    """The .gz writer used by these tests produces gzip data (so the gz path is exercised)."""
    labels = np.zeros(100, dtype=np.uint8)
    path = _write(tmp_path / "labels.gz", _idx_bytes(LABELS_MAGIC, (100,), labels.tobytes()))

    assert path.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(path), labels)


@pytest.mark.parametrize("magic", [0x01000803, 0x00010803, 0x08030000])
def test_read_idx_bad_magic(tmp_path: Path, magic: int) -> None:
    """A file whose first two bytes are not zero is not an IDX file."""
    path = _write(tmp_path / "bad", _idx_bytes(magic, (1,), b"\x00"))

    with pytest.raises(ValueError, match="bad magic"):
        read_idx(path)


def test_read_idx_too_short_for_magic(tmp_path: Path) -> None:
    """A file shorter than the 4-byte magic number is refused."""
    path = _write(tmp_path / "tiny", b"\x00\x00")

    with pytest.raises(ValueError, match="bad magic"):
        read_idx(path)


@pytest.mark.parametrize("type_byte", [0x09, 0x0B, 0x0C, 0x0D, 0x0E])
def test_read_idx_unsupported_type(tmp_path: Path, type_byte: int) -> None:
    """IDX types other than unsigned byte (0x08) are refused with the type in the message."""
    magic = (type_byte << 8) | 1
    path = _write(tmp_path / "typed", _idx_bytes(magic, (1,), b"\x00" * 8))

    with pytest.raises(ValueError, match=f"0x{type_byte:02x} unsupported"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated_data(tmp_path: Path, gz: bool) -> None:
    """A header declaring more bytes than the file holds raises a ValueError."""
    # Prepare: header says 4 x 28 x 28, payload only has 3 images.
    payload = bytes(3 * 28 * 28)
    path = _write(
        tmp_path / ("short" + (".gz" if gz else "")),
        _idx_bytes(IMAGES_MAGIC, (4, 28, 28), payload),
    )

    # Execute / Assert
    with pytest.raises(ValueError, match=f"declares {4 * 28 * 28} bytes.*has {3 * 28 * 28}"):
        read_idx(path)


def test_read_idx_trailing_bytes(tmp_path: Path) -> None:
    """A payload longer than the header declares is also refused."""
    path = _write(tmp_path / "long", _idx_bytes(LABELS_MAGIC, (3,), bytes(4)))

    with pytest.raises(ValueError, match="declares 3 bytes"):
        read_idx(path)


def test_read_idx_truncated_header(tmp_path: Path) -> None:
    """A magic number announcing three dimensions with fewer size fields is refused."""
    path = _write(tmp_path / "hdr", struct.pack(">I", IMAGES_MAGIC) + struct.pack(">I", 5))

    with pytest.raises(ValueError, match="truncated IDX header"):
        read_idx(path)


# --------------------------------------------------------------------------- load_mnist_idx


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_mnist_round_trip(tmp_path: Path, gz: bool, split: str) -> None:
    """Images come back as (N, 1, 28, 28) float32 equal to uint8 / 255; labels as int64."""
    # Prepare
    images, labels = _make_split(tmp_path, split, n=5, gz=gz, seed=7)

    # Execute
    data = load_mnist_idx(tmp_path, split)

    # Assert
    assert data.x.shape == (5, 1, 28, 28)
    assert data.x.dtype == np.float32
    np.testing.assert_allclose(data.x[:, 0], images.astype(np.float32) / 255.0, rtol=0, atol=0)
    assert data.y.dtype == np.int64
    np.testing.assert_array_equal(data.y, labels.astype(np.int64))
    assert data.num_classes == 10
    assert data.name == f"mnist-{split}"


def test_load_mnist_reads_the_requested_split(tmp_path: Path) -> None:
    """Train and test come from their own files (different sizes here)."""
    _make_split(tmp_path, "train", n=6, gz=True, seed=1)
    _make_split(tmp_path, "test", n=2, gz=False, seed=2)

    assert len(load_mnist_idx(tmp_path, "train")) == 6
    assert len(load_mnist_idx(tmp_path, "test")) == 2


def test_load_mnist_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no path, the directory comes from ``FLOWER_SUITE_MNIST_DIR``."""
    # Prepare
    images, _ = _make_split(tmp_path, "train", n=5, gz=True)
    monkeypatch.setenv(MNIST_DIR_ENV, str(tmp_path))

    # Execute
    data = load_mnist_idx()

    # Assert
    assert MNIST_DIR_ENV == "FLOWER_SUITE_MNIST_DIR"
    assert resolve_mnist_dir() == tmp_path
    np.testing.assert_array_equal(data.x[:, 0], images.astype(np.float32) / 255.0)


def test_explicit_path_wins_over_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit path is used even when the environment variable points elsewhere."""
    _make_split(tmp_path, "train", n=3, gz=False)
    monkeypatch.setenv(MNIST_DIR_ENV, str(tmp_path / "does-not-exist"))

    assert len(load_mnist_idx(str(tmp_path), "train")) == 3


def test_no_path_and_no_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a path or the environment variable a FileNotFoundError names the variable."""
    monkeypatch.delenv(MNIST_DIR_ENV, raising=False)

    with pytest.raises(FileNotFoundError, match=MNIST_DIR_ENV):
        load_mnist_idx()


def test_missing_directory(tmp_path: Path) -> None:
    """A path that does not exist raises FileNotFoundError."""
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist_idx(tmp_path / "nowhere")


def test_path_that_is_a_file(tmp_path: Path) -> None:
    """A path naming a file, not a folder, is refused like a missing folder."""
    file_path = tmp_path / "file.txt"
    file_path.write_text("not a folder")

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist_idx(file_path)


def test_missing_label_file(tmp_path: Path) -> None:
    """A folder with the images but no labels names the missing file."""
    _make_split(tmp_path, "train", n=3, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()

    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        load_mnist_idx(tmp_path, "train")


def test_missing_image_file_for_test_split(tmp_path: Path) -> None:
    """Train files alone do not satisfy a request for the test split."""
    _make_split(tmp_path, "train", n=3, gz=False)

    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist_idx(tmp_path, "test")


def test_image_label_count_mismatch(tmp_path: Path) -> None:
    """Five images with four labels raise a ValueError."""
    # Prepare
    image_stem, label_stem = STEMS["train"]
    _write(tmp_path / image_stem, _idx_bytes(IMAGES_MAGIC, (5, 28, 28), bytes(5 * 28 * 28)))
    _write(tmp_path / label_stem, _idx_bytes(LABELS_MAGIC, (4,), bytes(4)))

    # Execute / Assert
    with pytest.raises(ValueError, match="do not match"):
        load_mnist_idx(tmp_path, "train")


def test_image_file_with_wrong_rank(tmp_path: Path) -> None:
    """An image file with two dimensions (flattened images) is refused."""
    image_stem, label_stem = STEMS["train"]
    _write(tmp_path / image_stem, _idx_bytes(0x00000802, (2, 784), bytes(2 * 784)))
    _write(tmp_path / label_stem, _idx_bytes(LABELS_MAGIC, (2,), bytes(2)))

    with pytest.raises(ValueError, match="do not match"):
        load_mnist_idx(tmp_path, "train")


def test_labels_out_of_range_are_refused(tmp_path: Path) -> None:
    """A label of 10 or more fails the data set's validation."""
    image_stem, label_stem = STEMS["train"]
    _write(tmp_path / image_stem, _idx_bytes(IMAGES_MAGIC, (2, 28, 28), bytes(2 * 28 * 28)))
    _write(tmp_path / label_stem, _idx_bytes(LABELS_MAGIC, (2,), bytes([1, 10])))

    with pytest.raises(ValueError, match="labels must lie"):
        load_mnist_idx(tmp_path, "train")


def test_unknown_split(tmp_path: Path) -> None:
    """Only 'train' and 'test' are valid splits."""
    _make_split(tmp_path, "train", n=2, gz=False)

    with pytest.raises(ValueError, match="split must be"):
        load_mnist_idx(tmp_path, "validation")
