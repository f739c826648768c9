"""Crafted sparse matrices must give a clean error, every time, never memory corruption.

scipy's sparse constructors do not check that ``indices`` lie inside the matrix; compiled code
that later sums, sorts or converts such a matrix reads and writes outside its arrays (seen as
``munmap_chunk(): invalid pointer`` aborts, or as an embedding built from stray memory with
exit status 0). Every reader checks the structure first. Each hostile file is read in fresh
subprocesses several times, because memory corruption is intermittent.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from scipy import sparse

from vocalatent._utils import DataError
from vocalatent.data.single_cell import check_sparse, read_counts, sparse_from_arrays

N_CELLS, N_GENES = 40, 30
REPEATS = 6

# (name, how to damage (data, indices, indptr) of a valid CSR of N_CELLS x N_GENES, message)
DAMAGES = [
    ("index_far_out", lambda d, i, p: (d, _set(i, 3, 10**9), p), "indices run from"),
    ("index_just_out", lambda d, i, p: (d, _set(i, -1, N_GENES), p), "indices run from"),
    ("index_negative", lambda d, i, p: (d, _set(i, 0, -5), p), "indices run from"),
    ("indptr_past_end", lambda d, i, p: (d, i, _set(p, -1, p[-1] + 1000)), "indptr"),
    ("indptr_decreasing", lambda d, i, p: (d, i, _set(p, 5, p[4] - 1)), "indptr decreases"),
    ("indptr_short", lambda d, i, p: (d, i, p[:-3]), "indptr has"),
    ("indptr_not_zero", lambda d, i, p: (d, i, _set(p, 0, 3)), "indptr starts at"),
    ("data_short", lambda d, i, p: (d[:-4], i, p), "values"),
]


def _set(a, k, v):
    a = np.array(a, copy=True)
    a[k] = v
    return a


def _valid(seed=0):
    rng = np.random.default_rng(seed)
    X = sparse.random(N_CELLS, N_GENES, density=0.3, format="csr", random_state=rng,
                      data_rvs=lambda n: rng.integers(1, 20, n)).astype(np.float32)
    X.sort_indices()
    return X


def _write_h5ad(path, data, indices, indptr):
    str_dt = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        g = f.create_group("X")
        g.attrs["encoding-type"] = "csr_matrix"
        g.attrs["encoding-version"] = "0.1.0"
        g.attrs["shape"] = np.asarray([N_CELLS, N_GENES])
        g.create_dataset("data", data=data)
        g.create_dataset("indices", data=indices)
        g.create_dataset("indptr", data=indptr)
        for name, n, stem in (("obs", N_CELLS, "cell"), ("var", N_GENES, "gene")):
            df = f.create_group(name)
            df.attrs["encoding-type"] = "dataframe"
            df.attrs["encoding-version"] = "0.2.0"
            df.attrs["_index"] = "_index"
            df.attrs["column-order"] = np.empty(0, "f8")
            df.create_dataset("_index", data=np.asarray([f"{stem}{k}" for k in range(n)], object),
                              dtype=str_dt)


def _write_10x(path, data, indices, indptr):
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("data", data=data)
        g.create_dataset("indices", data=indices)
        g.create_dataset("indptr", data=indptr)
        g.create_dataset("shape", data=np.asarray([N_GENES, N_CELLS], dtype=np.int32))
        g.create_dataset("barcodes", data=np.asarray([f"AAAC{k:06d}-1" for k in range(N_CELLS)], "S"))
        ft = g.create_group("features")
        ft.create_dataset("id", data=np.asarray([f"ENSG{k:05d}" for k in range(N_GENES)], "S"))
        ft.create_dataset("name", data=np.asarray([f"g{k}" for k in range(N_GENES)], "S"))
        ft.create_dataset("feature_type", data=np.asarray(["Gene Expression"] * N_GENES, "S"))


_READ_SCRIPT = textwrap.dedent("""
    import sys
    from vocalatent._utils import DataError
    from vocalatent.data.single_cell import read_counts
    args = sys.argv[1:]
    for path, backend in zip(args[::2], args[1::2]):
        try:
            cm = read_counts(path, **({"backend": backend} if backend != "-" else {}))
        except DataError as exc:
            print("DATAERROR", str(exc).replace(chr(10), " "), flush=True)
        else:  # a damaged file read without complaint
            print("READ", path, cm.shape, float(cm.X.sum()), flush=True)
""")


def _hostile_files(tmp_path):
    X = _valid()
    for name, damage, message in DAMAGES:
        d, i, p = damage(X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64))
        h5ad = tmp_path / f"{name}.h5ad"
        _write_h5ad(h5ad, d, i, p)
        yield h5ad, message
        tenx = tmp_path / f"{name}_filtered_feature_bc_matrix.h5"
        _write_10x(tenx, d, i, p)
        yield tenx, message


def _backends(path):
    if path.suffix != ".h5ad":
        return ["-"]
    out = ["h5py"]
    try:
        import anndata  # noqa: F401
        out.append("anndata")
    except ImportError:
        pass
    return out


def test_valid_files_read(tmp_path):
    X = _valid()
    _write_h5ad(tmp_path / "ok.h5ad", X.data, X.indices, X.indptr)
    # 10x files store features x barcodes compressed by barcode: the CSR of cells x genes
    _write_10x(tmp_path / "ok_filtered_feature_bc_matrix.h5", X.data, X.indices, X.indptr)
    for path in (tmp_path / "ok.h5ad", tmp_path / "ok_filtered_feature_bc_matrix.h5"):
        for backend in _backends(path):
            kw = {} if backend == "-" else {"backend": backend}
            cm = read_counts(path, **kw)
            np.testing.assert_array_equal(cm.X.toarray(), X.toarray())


def test_hostile_sparse_files_give_clean_errors_every_time(tmp_path):
    cases = [(path, backend, message) for path, message in _hostile_files(tmp_path)
             for backend in _backends(path)]
    argv = [str(a) for path, backend, _ in cases for a in (path, backend)]
    for _ in range(REPEATS):   # fresh processes: corruption is intermittent
        r = subprocess.run([sys.executable, "-c", _READ_SCRIPT, *argv], capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, f"reader process died (rc={r.returncode}): {r.stderr[-400:]}"
        lines = r.stdout.splitlines()
        assert len(lines) == len(cases), r.stdout
        for (path, backend, message), line in zip(cases, lines):
            assert line.startswith("DATAERROR") and path.name in line and message in line, \
                f"{path.name} [{backend}]: {line}"


def test_hostile_file_through_the_cli_is_one_line(tmp_path):
    X = _valid()
    d, i, p = DAMAGES[0][1](X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64))
    path = tmp_path / "crafted.h5ad"
    _write_h5ad(path, d, i, p)
    for _ in range(3):
        r = subprocess.run([sys.executable, "-m", "vocalatent", "embed", str(path), "-o",
                            str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
        assert r.returncode != 0
        assert "Traceback" not in r.stderr
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("Error")]
        assert len(lines) == 1 and "crafted.h5ad" in lines[0] and "indices" in lines[0], r.stderr


def test_in_memory_matrices_are_checked():
    X = _valid()
    # scipy accepts this without complaint; any compiled operation on it is undefined
    bad = sparse.csr_matrix((X.data, _set(X.indices, 2, N_GENES + 7), X.indptr), shape=X.shape)
    with pytest.raises(DataError, match=r"indices run from 0 to 37 but must lie in \[0, 30\)"):
        check_sparse(bad, what="X")
    coo = sparse.coo_matrix((np.ones(2), (np.array([0, N_CELLS]), np.array([1, 2]))),
                            shape=(N_CELLS + 1, N_GENES))
    coo.row[1] = N_CELLS + 5            # damaged after construction
    with pytest.raises(DataError, match="row indices"):
        check_sparse(coo)
    assert check_sparse(X) is X
    dense = X.toarray()
    assert check_sparse(dense) is dense
    M = sparse_from_arrays(X.data, X.indices, X.indptr, X.shape)
    np.testing.assert_array_equal(M.toarray(), dense)
    with pytest.raises(DataError, match="expected integers"):
        sparse_from_arrays(X.data, X.indices.astype(float), X.indptr, X.shape)


def test_estimators_refuse_a_damaged_sparse_matrix():
    from vocalatent import QLVM

    X = _valid()
    bad = sparse.csr_matrix((X.data, _set(X.indices, 2, N_GENES + 7), X.indptr), shape=X.shape)
    with pytest.raises(DataError, match="indices run from"):
        QLVM(likelihood="poisson", max_epochs=1, verbose=False).fit(bad)
