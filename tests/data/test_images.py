"""Image loaders: shapes, ranges, labels against known answers; subsets; bad files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from vocalatent import DataError, ParameterError
from vocalatent.data.images import (FASHION_MNIST_CLASSES, load_digits, load_fashion_mnist,
                                    load_mnist)


@pytest.mark.network
def test_digits_match_known_answer(real_data):
    from sklearn.datasets import load_digits as sk_load_digits

    X, y = load_digits(data_dir=real_data("digits"))
    assert X.shape == (1797, 64) and X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y),
                                  [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    reference = sk_load_digits()  # the same table, read by scikit-learn itself
    np.testing.assert_array_equal(X.astype(np.float64) * 16, reference.data)
    np.testing.assert_array_equal(y, reference.target)


@pytest.mark.network
def test_subsets_are_deterministic_rows_of_the_full_set(real_data):
    directory = real_data("digits")
    X, y = load_digits(data_dir=directory)
    Xa, ya = load_digits(n=100, random_state=3, data_dir=directory)
    Xb, yb = load_digits(n=100, random_state=3, data_dir=directory)
    Xc, _ = load_digits(n=100, random_state=4, data_dir=directory)
    np.testing.assert_array_equal(Xa, Xb)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(Xa, Xc)
    rows = {r.tobytes(): label for r, label in zip(X, y)}
    assert all(rows[r.tobytes()] == label for r, label in zip(Xa, ya))
    assert len({r.tobytes() for r in Xa}) == 100 == len(Xa)
    for bad in (0, -1, 1798, 2.5):
        with pytest.raises(ParameterError, match="n must be"):
            load_digits(n=bad, data_dir=directory)


@pytest.mark.network
def test_mnist_counts_and_values(real_data):
    X, y = load_mnist(data_dir=real_data("mnist"))
    assert X.shape == (10000, 784) and X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y),
                                  [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978])
    # 8-bit intensities k/255 stored with three decimals: 256 distinct values.
    values = np.unique(X)
    assert len(values) == 256
    np.testing.assert_allclose(values, np.round(np.arange(256) / 255, 3), atol=1e-6)
    # A "1" lights fewer pixels than a "0" on average: labels follow the files' classes.
    assert (X[y == 1] > 0.5).sum(1).mean() < (X[y == 0] > 0.5).sum(1).mean()
    Xs, ys = load_mnist(500, random_state=0, data_dir=real_data("mnist"))
    assert Xs.shape == (500, 784) and len(np.unique(ys)) == 10


@pytest.mark.network
def test_fashion_mnist_test_split(real_data):
    X, y = load_fashion_mnist("test", data_dir=real_data("fashion_mnist"))
    assert X.shape == (10000, 784) and X.dtype == np.float32
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), [1000] * 10)
    np.testing.assert_array_equal(y[:10], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
    assert FASHION_MNIST_CLASSES[y[0]] == "Ankle boot"


@pytest.mark.network
def test_fashion_mnist_train_subset(real_data):
    X, y = load_fashion_mnist("train", n=2000, random_state=1,
                              data_dir=real_data("fashion_mnist"))
    assert X.shape == (2000, 784) and set(np.unique(y)) == set(range(10))
    with pytest.raises(ParameterError, match="split must be one of"):
        load_fashion_mnist("validation", data_dir=real_data("fashion_mnist"))


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_idx_round_trip_and_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28))
    labels = rng.integers(0, 10, size=7)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    X, y = load_fashion_mnist("test", data_dir=tmp_path)
    np.testing.assert_allclose(X, images.reshape(7, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)

    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:5])
    with pytest.raises(DataError, match="7 images but 5 labels"):
        load_fashion_mnist("test", data_dir=tmp_path)
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz.*not an IDX file"):
        load_fashion_mnist("test", data_dir=tmp_path)
    (tmp_path / "digits.csv.gz").write_bytes(gzip.compress(b"1,2,3\n"))
    with pytest.raises(DataError, match="digits.csv.gz.*65 columns"):
        load_digits(data_dir=tmp_path)
