"""Tests for ``flower_suite.data.hub``'s offline conversion of ``datasets.Dataset`` objects.

Every data set here is built locally; nothing is downloaded (``load_hub_split`` is not called).
"""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from PIL import Image

from flower_suite.data.hub import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    HUB_DATASETS,
    SHAKESPEARE_VOCAB,
    convert_hub_dataset,
    encode_text,
)


def _image_dataset(columns: dict[str, list], image_column: str) -> datasets.Dataset:
    """A ``datasets.Dataset`` whose ``image_column`` holds PIL images (Image feature)."""
    return datasets.Dataset.from_dict(columns).cast_column(image_column, datasets.Image())


def _context(seed: int) -> str:
    """An 80-character string drawn from the Shakespeare vocabulary."""
    rng = np.random.default_rng(seed)
    return "".join(SHAKESPEARE_VOCAB[i] for i in rng.integers(0, len(SHAKESPEARE_VOCAB), 80))


# ----------------------------------------------------------------------------------- MNIST


def test_mnist_greyscale_conversion() -> None:
    """Greyscale 28x28 images become (N, 1, 28, 28) float32 = uint8 / 255, labels int64."""
    # Prepare
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    labels = [3, 0, 9, 3]
    ds = _image_dataset({"image": [Image.fromarray(a) for a in pixels], "label": labels}, "image")

    # Execute
    data = convert_hub_dataset("mnist", ds)

    # Assert
    assert data.x.shape == (4, 1, 28, 28)
    assert data.x.dtype == np.float32
    np.testing.assert_array_equal(data.x[:, 0], pixels.astype(np.float32) / 255.0)
    assert data.y.dtype == np.int64
    np.testing.assert_array_equal(data.y, labels)
    assert data.num_classes == 10
    assert data.groups is None
    assert data.name == "mnist"


def test_missing_label_column_is_reported() -> None:
    """A data set without the expected label column names the missing column."""
    pixels = np.zeros((2, 28, 28), dtype=np.uint8)
    ds = _image_dataset({"image": [Image.fromarray(a) for a in pixels], "digit": [0, 1]}, "image")

    with pytest.raises(ValueError, match="column 'label' missing"):
        convert_hub_dataset("mnist", ds)


def test_missing_image_column_is_reported() -> None:
    """CIFAR-10 expects its images in ``img``; a data set using ``image`` is refused."""
    pixels = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    ds = _image_dataset({"image": [Image.fromarray(a) for a in pixels], "label": [0, 1]}, "image")

    with pytest.raises(ValueError, match="column 'img' missing"):
        convert_hub_dataset("cifar10", ds)


def test_labels_outside_the_class_range_are_refused() -> None:
    """An MNIST label of 10 fails the data set's validation."""
    pixels = np.zeros((2, 28, 28), dtype=np.uint8)
    ds = _image_dataset({"image": [Image.fromarray(a) for a in pixels], "label": [0, 10]}, "image")

    with pytest.raises(ValueError, match="labels must lie"):
        convert_hub_dataset("mnist", ds)


# -------------------------------------------------------------------------------- CIFAR-10


def test_cifar_is_channel_first_and_standardised() -> None:
    """RGB images become (N, 3, 32, 32), standardised per channel with the CIFAR-10 stats."""
    # Prepare
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)  # N, H, W, C
    ds = _image_dataset({"img": [Image.fromarray(a) for a in pixels], "label": [1, 2, 7]}, "img")

    # Execute
    data = convert_hub_dataset("cifar10", ds)

    # Assert: manual (x / 255 - mean) / std in float64, channel c from pixels[..., c].
    assert data.x.shape == (3, 3, 32, 32)
    assert data.x.dtype == np.float32
    for c in range(3):
        expected = (pixels[..., c].astype(np.float64) / 255.0 - CIFAR10_MEAN[c]) / CIFAR10_STD[c]
        np.testing.assert_allclose(data.x[:, c], expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(data.y, [1, 2, 7])


def test_cifar_channels_are_not_confused_with_spatial_axes() -> None:
    """A pure-red image has its signal in channel 0 only, uniformly over all 32x32 pixels."""
    pixels = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    pixels[..., 0] = 255
    ds = _image_dataset({"img": [Image.fromarray(pixels[0])], "label": [0]}, "img")

    data = convert_hub_dataset("cifar10", ds)

    red = (1.0 - CIFAR10_MEAN[0]) / CIFAR10_STD[0]
    green = (0.0 - CIFAR10_MEAN[1]) / CIFAR10_STD[1]
    blue = (0.0 - CIFAR10_MEAN[2]) / CIFAR10_STD[2]
    np.testing.assert_allclose(data.x[0, 0], np.full((32, 32), red), atol=1e-5)
    np.testing.assert_allclose(data.x[0, 1], np.full((32, 32), green), atol=1e-5)
    np.testing.assert_allclose(data.x[0, 2], np.full((32, 32), blue), atol=1e-5)


def test_cifar_stats_are_the_published_ones() -> None:
    """The constants are CIFAR-10's per-channel mean/std (as fractions of 255)."""
    np.testing.assert_allclose(np.array(CIFAR10_MEAN) * 255, [125.3, 123.0, 113.9], atol=0.01)
    np.testing.assert_allclose(np.array(CIFAR10_STD) * 255, [63.0, 62.1, 66.7], atol=0.01)


# --------------------------------------------------------------------------------- FEMNIST


def test_femnist_groups_are_integer_writer_ids() -> None:
    """Writer ids become int64 groups; equal writers share an id, different writers do not."""
    # Prepare
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    writers = ["f0003_12", "f0001_40", "f0003_12", "f0100_00", "f0001_40", "f0003_12"]
    characters = [0, 61, 35, 10, 5, 61]
    ds = _image_dataset(
        {
            "image": [Image.fromarray(a) for a in pixels],
            "character": characters,
            "writer_id": writers,
        },
        "image",
    )

    # Execute
    data = convert_hub_dataset("femnist", ds)

    # Assert
    assert data.x.shape == (6, 1, 28, 28)
    np.testing.assert_array_equal(data.x[:, 0], pixels.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(data.y, characters)
    assert data.num_classes == 62
    assert data.groups is not None
    assert np.issubdtype(data.groups.dtype, np.integer)
    for i in range(6):
        for j in range(6):
            assert (data.groups[i] == data.groups[j]) == (writers[i] == writers[j])
    assert len(np.unique(data.groups)) == 3


def test_femnist_without_writer_column_has_no_groups() -> None:
    """The group column is optional: without ``writer_id`` the groups are None."""
    pixels = np.zeros((2, 28, 28), dtype=np.uint8)
    ds = _image_dataset(
        {"image": [Image.fromarray(a) for a in pixels], "character": [1, 2]}, "image"
    )

    assert convert_hub_dataset("femnist", ds).groups is None


# ----------------------------------------------------------------------------- Shakespeare


def test_shakespeare_vocabulary() -> None:
    """LEAF's vocabulary has 80 distinct characters, matching the registered class count."""
    assert len(SHAKESPEARE_VOCAB) == 80
    assert len(set(SHAKESPEARE_VOCAB)) == 80
    assert HUB_DATASETS["shakespeare"].num_classes == 80


def test_shakespeare_token_ids_match_vocabulary_index() -> None:
    """Every context character and target maps to its index in ``SHAKESPEARE_VOCAB``."""
    # Prepare
    contexts = [_context(0), _context(1), _context(2)]
    targets = ["a", "\n", "}"]
    ds = datasets.Dataset.from_dict(
        {"x": contexts, "y": targets, "character_id": ["ROMEO", "JULIET", "ROMEO"]}
    )

    # Execute
    data = convert_hub_dataset("shakespeare", ds)

    # Assert
    assert data.x.shape == (3, 80)
    assert data.x.dtype == np.int64
    for row, text in zip(data.x, contexts, strict=True):
        assert row.tolist() == [SHAKESPEARE_VOCAB.index(c) for c in text]
    assert data.y.tolist() == [SHAKESPEARE_VOCAB.index(t) for t in targets]
    assert data.groups is not None
    assert data.groups[0] == data.groups[2] != data.groups[1]


def test_shakespeare_unknown_characters_map_to_zero() -> None:
    """Characters outside the vocabulary (e.g. '~', 'é') become id 0, in x and y."""
    # Prepare
    context = "é" + "a" * 78 + "~"
    ds = datasets.Dataset.from_dict({"x": [context], "y": ["~"], "character_id": ["A"]})

    # Execute
    data = convert_hub_dataset("shakespeare", ds)

    # Assert
    a_id = SHAKESPEARE_VOCAB.index("a")
    assert data.x[0].tolist() == [0] + [a_id] * 78 + [0]
    assert data.y.tolist() == [0]
    assert encode_text("~a").tolist() == [0, a_id]


def test_shakespeare_contexts_of_different_lengths() -> None:
    """Contexts of unequal length raise a ValueError listing the lengths."""
    ds = datasets.Dataset.from_dict(
        {"x": ["a" * 80, "b" * 79], "y": ["c", "d"], "character_id": ["A", "B"]}
    )

    with pytest.raises(ValueError, match=r"different lengths \[79, 80\]"):
        convert_hub_dataset("shakespeare", ds)


@pytest.mark.parametrize("bad_target", ["ab", ""])
def test_shakespeare_target_must_be_one_character(bad_target: str) -> None:
    """A target of zero or several characters raises a ValueError."""
    ds = datasets.Dataset.from_dict(
        {"x": ["a" * 80, "b" * 80], "y": ["c", bad_target], "character_id": ["A", "B"]}
    )

    with pytest.raises(ValueError, match="exactly one character"):
        convert_hub_dataset("shakespeare", ds)


def test_encode_text_empty_string() -> None:
    """Encoding the empty string gives an empty int64 array."""
    out = encode_text("")

    assert out.shape == (0,)
    assert out.dtype == np.int64


@pytest.mark.parametrize("missing", ["x", "y"])
def test_shakespeare_missing_column(missing: str) -> None:
    """A Shakespeare data set without its context or target column raises a ValueError."""
    columns = {"x": ["a" * 80], "y": ["c"], "character_id": ["A"]}
    del columns[missing]
    ds = datasets.Dataset.from_dict(columns)

    with pytest.raises(ValueError, match=f"'{missing}'"):
        convert_hub_dataset("shakespeare", ds)


def test_shakespeare_without_character_id_has_no_groups() -> None:
    """Without the ``character_id`` column the converted data set has no groups."""
    ds = datasets.Dataset.from_dict({"x": ["a" * 80, "b" * 80], "y": ["c", "d"]})

    data = convert_hub_dataset("shakespeare", ds)

    assert data.groups is None
    assert data.x.shape == (2, 80)


def test_unknown_hub_name_is_a_clear_error() -> None:
    """An unknown name is a ValueError listing the known ones, not a KeyError."""
    with pytest.raises(ValueError, match="known: mnist"):
        convert_hub_dataset("imagenet", datasets.Dataset.from_dict({"x": [1]}))
