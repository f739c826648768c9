"""Rows of a data matrix as float32 blocks, whatever holds them.

:class:`ItemData` is the one interface through which the estimators read their input: a NumPy
array, a torch tensor, a pandas DataFrame, a scipy.sparse matrix, or any lazily read
array-like with ``shape`` and ``__getitem__`` over sorted integer arrays (an ``h5py.Dataset``,
a :class:`~vocalatent.data.store.SyllableStore`'s spectrograms). Lazily read and sparse inputs
are read and densified block by block, so that memory is bounded by the block, never by the
whole matrix; their values are checked as each block is read.
"""

from __future__ import annotations

import math

import numpy as np

from ._utils import DataError

__all__ = ["ItemData", "is_sparse"]


def is_sparse(X) -> bool:
    """True for a scipy.sparse matrix or array (without importing scipy when it is not loaded)."""
    import sys

    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(X)


def _as_array_like(X, name: str):
    """``X`` as an ndarray, a sparse matrix in CSR/CSC form, or a lazily read array-like."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    if is_sparse(X):
        from .data.sparse import check_sparse

        X = check_sparse(X, what=name)   # before any compiled code touches its arrays
        if X.format not in ("csr", "csc"):
            X = X.tocsr()
        return X
    if hasattr(X, "to_numpy") and hasattr(X, "columns"):  # pandas DataFrame
        return X.to_numpy()
    if isinstance(X, (list, tuple)) or not (hasattr(X, "shape") and hasattr(X, "__getitem__")):
        try:
            arr = np.asarray(X)
        except Exception:  # noqa: BLE001 - anything np.asarray cannot turn into an array
            raise DataError(f"{name} must be an array-like with a shape; got {type(X).__name__}") from None
        X = arr
    if isinstance(X, np.ndarray) and X.dtype == object:
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name} has non-numeric values: {exc}") from None
    return X


class ItemData:
    """Rows of ``X`` as float32 ``(b, D)`` blocks.

    Parameters
    ----------
    X : array-like [shape=(N, D) or (N, F, T)]
        NumPy array, torch tensor, DataFrame, scipy.sparse matrix (CSR or CSC; 2-D), or a
        lazily read array-like (h5py dataset, store spectrograms).
    name : str
        How error messages call the data ("X", "validation").

    Attributes
    ----------
    n : int
        Items.
    item_shape : tuple of int
        Shape of one item.
    n_features : int
        Flattened item size D.
    lazy : bool
        Read (and checked) block by block: lazily read and sparse inputs.
    sparse : bool
        ``X`` is a scipy.sparse matrix.
    """

    def __init__(self, X, *, name: str = "X"):
        X = _as_array_like(X, name)
        if isinstance(X, np.ndarray) and np.iscomplexobj(X):
            raise DataError(f"Complex data not supported: {name} has dtype {X.dtype}")
        shape = tuple(int(s) for s in X.shape)
        if len(shape) not in (2, 3):
            hint = (" Reshape your data: X.reshape(-1, 1) if it has one feature, X.reshape(1, -1) "
                    "if it is one item.") if len(shape) == 1 else ""
            raise DataError(
                f"{name} must be 2-D (n_items, n_features) or 3-D (n_items, F, T); got shape {shape}.{hint}"
            )
        if shape[0] == 0:
            raise DataError(f"{name} is empty: 0 sample(s) (shape={shape}) while a minimum of 1 is required.")
        if math.prod(shape[1:]) == 0:
            raise DataError(f"{name} is empty: 0 feature(s) (shape={shape}) while a minimum of 1 is required.")
        self.name = name
        self.sparse = is_sparse(X)
        if self.sparse and np.iscomplexobj(X.data):
            raise DataError(f"Complex data not supported: {name} has dtype {X.dtype}")
        self.lazy = self.sparse or not isinstance(X, np.ndarray)
        self.X = X
        self.n = shape[0]
        self.item_shape = shape[1:]
        self.n_features = math.prod(self.item_shape)

    def check(self, likelihood) -> None:
        """Validate values (finite, in the likelihood's support). Lazily read and sparse data
        are checked block by block as they are read."""
        if self.lazy:
            return
        self.check_block(self.X.reshape(self.n, -1), 0, likelihood)

    def check_block(self, x: np.ndarray, start: int, likelihood) -> None:
        """Raise a DataError naming the first bad items of block ``x`` (item ``start`` first)."""
        finite = np.isfinite(x)
        if not finite.all():
            rows = np.nonzero(~finite.all(axis=1))[0][:5] + start
            kind = "NaN" if np.isnan(x).any() else "infinite"
            raise DataError(f"{self.name} contains {kind} values (items {rows.tolist()} ...)")
        if likelihood is not None:
            try:
                likelihood.check_data(x)
            except DataError as exc:
                raise DataError(f"{self.name}: {exc}") from None

    def read(self, idx: np.ndarray, likelihood=None) -> np.ndarray:
        """Rows ``idx`` as a float32 ``(b, D)`` array, in the order of ``idx``.

        Lazily read array-likes need ``idx`` sorted (h5py's rule); sparse matrices take any
        order. Only the rows asked for are densified.
        """
        idx = np.asarray(idx)
        if self.sparse:
            x = np.ascontiguousarray(self.X[idx].toarray(), dtype=np.float32)  # CSC gives F order
            self.check_block(x, int(idx.min()) if len(idx) else 0, likelihood)
            return x
        if self.lazy:
            x = np.asarray(self.X[np.sort(idx)], dtype=np.float32).reshape(len(idx), -1)
            self.check_block(x, int(idx[0]) if len(idx) else 0, likelihood)
            return x
        return np.asarray(self.X[idx], dtype=np.float32).reshape(len(idx), -1)

    def chunk_groups(self) -> np.ndarray | None:
        """Per item, the storage chunk of a lazily read chunked source (None otherwise)."""
        if not self.lazy or self.sparse:
            return None
        from .data.rows import chunk_groups

        g = chunk_groups(self.X)
        return None if g is None or len(g) != self.n else g

    def permutation(self, rng: np.random.Generator, batch_size: int | None = None) -> np.ndarray:
        """The order of one training epoch.

        A plain random permutation, except for a lazily read chunked source (an HDF5 store)
        with more than one batch per epoch: then the chunks are shuffled and their items kept
        together, so that a batch decompresses each chunk it touches once instead of a chunk
        per item (on the 100,000-syllable store, chunks of 8: docs/benchmarks.md). Batches
        still draw their chunks at random from the whole data set. One batch per epoch holds
        every item whatever the order, so it is not grouped.
        """
        if batch_size is None or batch_size < self.n:
            groups = self.chunk_groups()
            if groups is not None:
                uniq, inverse = np.unique(groups, return_inverse=True)
                if uniq.size < self.n:
                    rank = rng.permutation(uniq.size)[inverse.reshape(-1)]
                    return np.argsort(rank, kind="stable")
        return rng.permutation(self.n)

    def sample(self, k: int, rng: np.random.Generator) -> np.ndarray:
        """``min(k, n)`` rows drawn without replacement (sorted), as float32 ``(k, D)``."""
        idx = np.sort(rng.choice(self.n, size=min(k, self.n), replace=False))
        return self.read(idx)

    def subset(self, idx: np.ndarray) -> "ItemData":
        """The rows ``idx`` (sorted) as an ItemData: in-memory and sparse data are sliced, lazily
        read data are read through the parent."""
        idx = np.sort(np.asarray(idx))
        if self.lazy and not self.sparse:
            return _Subset(self, idx)
        return ItemData(self.X[idx], name=self.name)


class _Subset(ItemData):
    """Rows ``idx`` of a lazily read ItemData."""

    def __init__(self, parent: ItemData, idx: np.ndarray):
        self.name, self.lazy, self.sparse, self.X = parent.name, True, False, parent.X
        self.parent, self.idx = parent, idx
        self.n, self.item_shape, self.n_features = len(idx), parent.item_shape, parent.n_features

    def read(self, idx, likelihood=None):
        return self.parent.read(self.idx[np.sort(idx)], likelihood)

    def chunk_groups(self):
        g = self.parent.chunk_groups()
        return None if g is None else g[self.idx]
