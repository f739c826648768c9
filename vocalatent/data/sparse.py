"""Structure checks for scipy sparse matrices read from files or handed in by users.

scipy's constructors check neither that ``indices`` lie inside the matrix nor, for COO, that
row and column indices do; compiled operations on such a matrix (summing duplicates, sorting
indices, converting, slicing) then read and write outside its arrays: a process abort
(``munmap_chunk(): invalid pointer``) or, worse, results computed from stray memory. Every
reader of the package and every estimator input goes through :func:`check_sparse` or
:func:`sparse_from_arrays` before anything else touches the arrays.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .._utils import DataError, check_option

__all__ = ["check_sparse", "sparse_from_arrays"]


# --------------------------------------------------------------------------------------------

def _check_compressed(data, indices, indptr, shape, fmt: str, *, path, what) -> None:
    """Raise DataError unless ``(data, indices, indptr)`` is a valid CSR/CSC structure of ``shape``."""
    label = f"{what} ({fmt})"
    try:
        n_rows, n_cols = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise DataError(f"{label} has an unreadable shape {shape!r}", path=path) from None
    if n_rows < 0 or n_cols < 0:
        raise DataError(f"{label} has a negative shape {shape!r}", path=path)
    n_major, n_minor = (n_rows, n_cols) if fmt.startswith("csr") else (n_cols, n_rows)
    data, indices, indptr = np.asarray(data), np.asarray(indices), np.asarray(indptr)
    for name, arr in (("data", data), ("indices", indices), ("indptr", indptr)):
        if arr.ndim != 1:
            raise DataError(f"{label}: {name} has {arr.ndim} dimensions; expected 1", path=path)
    for name, arr in (("indices", indices), ("indptr", indptr)):
        if arr.dtype.kind not in "iu":
            raise DataError(f"{label}: {name} has dtype {arr.dtype}; expected integers", path=path)
    if data.dtype.kind not in "biuf":
        raise DataError(f"{label}: data has dtype {data.dtype}; expected numbers", path=path)
    if indptr.size != n_major + 1:
        raise DataError(f"{label}: indptr has {indptr.size} entries; expected {n_major + 1} "
                        f"(one more than the {n_major} {'rows' if fmt.startswith('csr') else 'columns'})",
                        path=path)
    if indptr.size and int(indptr[0]) != 0:
        raise DataError(f"{label}: indptr starts at {int(indptr[0])}; expected 0", path=path)
    if indptr.size > 1 and np.any(np.diff(indptr.astype(np.int64)) < 0):
        raise DataError(f"{label}: indptr decreases (not a valid compressed layout)", path=path)
    nnz = int(indptr[-1]) if indptr.size else 0
    if indices.size != nnz or data.size != nnz:
        raise DataError(f"{label}: indptr ends at {nnz} but there are {indices.size} indices and "
                        f"{data.size} values", path=path)
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= n_minor):
        raise DataError(f"{label}: indices run from {int(indices.min())} to {int(indices.max())} "
                        f"but must lie in [0, {n_minor})", path=path)


def sparse_from_arrays(data, indices, indptr, shape, *, fmt: str = "csr", path=None,
                       what: str = "X"):
    """Build a CSR/CSC matrix from its three arrays after checking them.

    scipy's constructors do not check that ``indices`` lie inside the matrix, and later
    compiled operations then read or write outside the arrays; every matrix read from a file
    goes through this check first.

    Parameters
    ----------
    data, indices, indptr : array-like [shape=(nnz,), (nnz,), (n_major + 1,)]
    shape : (int, int)
    fmt : {"csr", "csc"}
    path : path-like or None
        The file, named in the error.
    what : str
        The element's name in the file (e.g. ``"X"``, ``"layers/counts"``).

    Raises
    ------
    DataError
        Naming the file, the element and what is inconsistent.
    """
    check_option("fmt", fmt, ("csr", "csc"))
    _check_compressed(data, indices, indptr, shape, fmt, path=path, what=what)
    cls = sparse.csr_matrix if fmt == "csr" else sparse.csc_matrix
    return cls((np.asarray(data), np.asarray(indices), np.asarray(indptr)),
               shape=tuple(int(s) for s in shape))


def check_sparse(X, *, path=None, what: str = "X"):
    """Check the structure of a scipy sparse matrix (or array) before computing with it.

    CSR/CSC: as :func:`sparse_from_arrays`; COO: row and column indices inside the shape.
    Other formats are built by scipy itself and are converted to CSR. Dense input is returned
    as it is.

    Returns
    -------
    X : the same matrix (CSR for formats other than CSR/CSC/COO)

    Raises
    ------
    DataError
    """
    if not sparse.issparse(X):
        return X
    fmt = X.format
    if fmt in ("csr", "csc"):
        _check_compressed(X.data, X.indices, X.indptr, X.shape, fmt, path=path, what=what)
        return X
    if fmt == "coo":
        n_rows, n_cols = X.shape
        for name, idx, n in (("row", X.row, n_rows), ("col", X.col, n_cols)):
            idx = np.asarray(idx)
            if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise DataError(f"{what} (coo): {name} indices run from {int(idx.min())} to "
                                f"{int(idx.max())} but must lie in [0, {n})", path=path)
        if not (np.asarray(X.row).size == np.asarray(X.col).size == np.asarray(X.data).size):
            raise DataError(f"{what} (coo): row, col and data differ in length", path=path)
        return X
    return X.tocsr()
