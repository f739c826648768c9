"""One lazily read array of items: what the job, the model and the stores index.

Items of a data set (syllable spectrograms in an HDF5 store, rows of a count matrix, the
concatenated stores of a batch) are read only when asked for. :class:`LazyRows` holds the rules
every such array follows, once:

- ``shape``, ``dtype``, ``ndim`` and ``len`` describe the whole array without reading it;
- ``rows[i]`` (an int) is one item; ``rows[a:b]``, ``rows[mask]`` and ``rows[[5, 1, 5]]`` (any
  order, repeats, negative indices) are a block of items in the order asked for;
- the block is read from the source in **sorted, unique** order (what h5py needs, and what
  reads a file front to back) and put back in the caller's order;
- ``np.asarray(rows)`` reads everything.

A subclass implements :meth:`LazyRows.read_sorted` (sorted unique int64 indices → an array of
those items). :class:`RowSubset` (rows ``index`` of another array: a held-out split) and
:class:`ConcatRows` (several arrays end to end) are the two generic ones.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .._utils import DataError, item_indices

__all__ = ["ConcatRows", "LazyRows", "RowSubset", "chunk_groups", "read_runs", "take_rows"]


class LazyRows:
    """Base of the lazily read item arrays (see the module docstring for the indexing rules).

    Parameters
    ----------
    n : int >= 0
        Number of items.
    item_shape : tuple of int
        Shape of one item.
    dtype : numpy dtype, default float32
        Type of the arrays returned.
    """

    def __init__(self, n: int, item_shape: tuple, dtype=np.float32):
        self._n = int(n)
        self._item_shape = tuple(int(s) for s in item_shape)
        self._dtype = np.dtype(dtype)

    # ------------------------------------------------------------------ description
    @property
    def n_items(self) -> int:
        """Number of items (a subclass over a growing source may compute it each time)."""
        return self._n

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n_items,) + self._item_shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return 1 + len(self._item_shape)

    def __len__(self) -> int:
        return self.n_items

    # ------------------------------------------------------------------ reading
    def read_sorted(self, idx: np.ndarray) -> np.ndarray:
        """Items ``idx`` (sorted, unique, non-negative int64), shape ``(len(idx),) + item_shape``."""
        raise NotImplementedError

    def _read(self, flat: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(flat, return_inverse=True)
        if uniq.size == 0:
            return np.empty((0,) + self._item_shape, dtype=self._dtype)
        data = np.asarray(self.read_sorted(uniq), dtype=self._dtype)
        return data[inverse.reshape(-1)]

    def __getitem__(self, idx):
        n = self.n_items
        if isinstance(idx, (int, np.integer)):
            if not -n <= idx < n:
                raise IndexError(f"index {idx} is out of range for {n} items")
            return self._read(np.array([int(idx) % n], dtype=np.int64))[0]
        if isinstance(idx, slice):
            idx = np.arange(n)[idx]
        flat, shape = item_indices(idx, n)
        return self._read(flat).reshape(tuple(shape) + self._item_shape)

    def __array__(self, dtype=None, copy=None):
        out = self[np.arange(self.n_items)]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype})"


class RowSubset(LazyRows):
    """Rows ``index`` of an array-like, read lazily (e.g. the held-out split of a store).

    Parameters
    ----------
    base : array-like
        Anything with ``shape`` whose ``__getitem__`` takes a sorted integer array (a NumPy
        array, an h5py dataset, a :class:`LazyRows`).
    index : array-like of int
        Rows of ``base``, in the order they appear in the subset.
    """

    def __init__(self, base, index):
        self.base = base
        self.index = np.asarray(index, dtype=np.int64).reshape(-1)
        n_base = int(base.shape[0])
        if self.index.size and (self.index.min() < 0 or self.index.max() >= n_base):
            raise IndexError(f"subset indices out of range for {n_base} items")
        super().__init__(len(self.index), tuple(base.shape[1:]), getattr(base, "dtype", np.float32))

    def read_sorted(self, idx):
        return _read_rows(self.base, self.index[idx])


class ConcatRows(LazyRows):
    """Several array-likes end to end along the item axis, read array by array.

    Parameters
    ----------
    arrays : sequence of array-likes [shape=(N_k, ...)]
        All with the same item shape; empty ones are left out.
    dtype : numpy dtype, default float32
    """

    def __init__(self, arrays: Sequence, dtype=np.float32):
        arrays = [a for a in arrays if len(a)]
        if not arrays:
            raise DataError("nothing to concatenate: every array is empty")
        shapes = {tuple(a.shape[1:]) for a in arrays}
        if len(shapes) != 1:
            raise DataError(f"the arrays hold items of different shapes {sorted(shapes)}")
        self.arrays = arrays
        self.offsets = np.cumsum([0] + [len(a) for a in arrays])
        super().__init__(int(self.offsets[-1]), shapes.pop(), dtype)

    def read_sorted(self, idx):
        out = np.empty((idx.size,) + self._item_shape, dtype=self._dtype)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        for k in np.unique(which):
            sel = np.flatnonzero(which == k)
            out[sel] = _read_rows(self.arrays[k], idx[sel] - self.offsets[k])
        return out


def read_runs(dset, idx: np.ndarray) -> np.ndarray:
    """``dset[idx]`` for sorted unique ``idx``, read as one slice per run of consecutive rows.

    h5py's point selection (``dset[idx]`` with an index array) is several times slower than
    reading the same rows as slices: on a gzip store of 128 x 128 items in chunks of 8, 1,536
    random rows take 5.1 s by point selection and 2.4 s as 1,536 one-row slices, and 1,536
    rows in whole chunks 3.2 s against 0.59 s (docs/benchmarks.md).
    """
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size == 0:
        return np.asarray(dset[0:0])
    runs = np.split(idx, np.flatnonzero(np.diff(idx) != 1) + 1)
    return np.concatenate([np.asarray(dset[int(r[0]):int(r[-1]) + 1]) for r in runs])


def chunk_groups(X) -> np.ndarray | None:
    """Per item of ``X``, the storage chunk it lives in (items of one chunk are decompressed
    together), or None when ``X`` is not read in chunks (NumPy, sparse, unchunked files).

    Knows HDF5 datasets (``chunks``), the store's spectrograms, :class:`RowSubset` and
    :class:`ConcatRows`; chunk ids are unique across the arrays of a concatenation.
    """
    if isinstance(X, RowSubset):
        g = chunk_groups(X.base)
        return None if g is None else g[X.index]
    if isinstance(X, ConcatRows):
        parts, offset, any_chunked = [], 0, False
        for a in X.arrays:
            g = chunk_groups(a)
            if g is None:
                g = np.arange(len(a), dtype=np.int64)       # each item its own group
            else:
                any_chunked = True
            parts.append(g + offset)
            offset += int(g.max()) + 1 if g.size else 0
        return np.concatenate(parts) if any_chunked else None
    dset = getattr(X, "chunked_source", None)
    dset = X if dset is None else dset
    chunks = getattr(dset, "chunks", None)
    if not chunks or int(chunks[0]) <= 1:
        return None
    return np.arange(int(dset.shape[0]), dtype=np.int64) // int(chunks[0])


def _read_rows(base, rows: np.ndarray) -> np.ndarray:
    """``base[rows]`` for any row order and repeats, reading ``base`` in increasing order
    (one slice when the rows are contiguous)."""
    if isinstance(base, np.ndarray):
        return base[rows]
    uniq, inverse = np.unique(rows, return_inverse=True)
    if uniq.size == 0:
        return np.empty((0,) + tuple(base.shape[1:]), dtype=getattr(base, "dtype", np.float32))
    if isinstance(base, LazyRows):
        data = np.asarray(base[uniq])
    else:                                   # an h5py dataset or the like: slices, not points
        data = read_runs(base, uniq)
    return data[inverse.reshape(-1)]


def take_rows(X, index):
    """Rows ``index`` of ``X``: a copy for a NumPy array, a lazy :class:`RowSubset` otherwise."""
    index = np.asarray(index, dtype=np.int64)
    return X[index] if isinstance(X, np.ndarray) else RowSubset(X, index)
