"""SyllableStore: round trip, lazy reads, append, param refusal, atomicity, quantization."""

import numpy as np
import pandas as pd
import pytest

from vocalatent import DataError, ParameterError
from vocalatent.data.store import SyllableStore

PARAMS = {"spectrogram": {"n_freq": 6, "f_max": 8000.0, "calib_percentiles": (30, 99)}}


def _items(n, seed=0, start=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 6, 5)).astype(np.float32)
    seg = pd.DataFrame({"source": [f"d/f{i % 3}.wav" for i in range(start, start + n)],
                        "onset_s": np.arange(start, start + n) * 0.5,
                        "offset_s": np.arange(start, start + n) * 0.5 + 0.1,
                        "sample_rate": 32000, "label": [f"l{i}" for i in range(start, start + n)],
                        "animal": "bird1"})
    return x, seg


def test_round_trip_lazy_read_and_metadata(tmp_path):
    x, seg = _items(37)
    path = tmp_path / "s.h5"
    with SyllableStore.create(path, params=PARAMS, shape=(6, 5)) as st:
        for b in range(0, 37, 8):  # the last partial batch (5 items) must not be lost
            st.append(x[b:b + 8], seg.iloc[b:b + 8])
    st = SyllableStore(path)
    assert len(st) == 37 and st.shape == (6, 5)
    np.testing.assert_array_equal(st.spectrograms[:], x)
    idx = np.array([30, 2, 2, 17])
    np.testing.assert_array_equal(st.spectrograms[idx], x[idx])
    got_x, got_seg = st.read(idx)
    np.testing.assert_array_equal(got_x, x[idx])
    assert got_seg["label"].tolist() == ["l30", "l2", "l2", "l17"]
    table = st.segments
    assert table["animal"].eq("bird1").all() and table["channel"].eq(0).all()
    np.testing.assert_allclose(table["duration_s"], 0.1)
    assert st.params == {"spectrogram": {"n_freq": 6, "f_max": 8000.0, "calib_percentiles": [30, 99]}}
    assert st.is_compatible(PARAMS) and not st.is_compatible({"spectrogram": {"n_freq": 7}})
    assert "n_freq" in str(SyllableStore(path).stale_reason({"spectrogram": {"n_freq": 7}}))
    with pytest.raises(ParameterError, match="read-only"):
        st.append(x[:1], seg.iloc[:1])


def test_append_mode_and_param_refusal(tmp_path):
    path = tmp_path / "s.h5"
    x, seg = _items(10)
    with SyllableStore.create(path, params=PARAMS, shape=(6, 5)) as st:
        st.append(x, seg)
    x2, seg2 = _items(4, seed=1, start=10)
    with SyllableStore(path, mode="a") as st:
        with pytest.raises(ParameterError, match="made with params.*n_freq.*7.*n_freq.*6"):
            st.append(x2, seg2, params={"spectrogram": {"n_freq": 7}})
        st.append(x2, seg2, params=PARAMS)
    st = SyllableStore(path)
    assert len(st) == 14
    np.testing.assert_array_equal(st.spectrograms[10:], x2)
    with SyllableStore(path, mode="a") as st2:
        with pytest.raises(ParameterError, match="missing \\['animal'\\]"):
            st2.append(x2, seg2.drop(columns="animal"))


def test_exception_mid_write_leaves_old_store_intact(tmp_path):
    path = tmp_path / "s.h5"
    x, seg = _items(6)
    with SyllableStore.create(path, params=PARAMS, shape=(6, 5)) as st:
        st.append(x, seg)
    with pytest.raises(RuntimeError):
        with SyllableStore.create(path, params={"other": 1}, shape=(6, 5)) as st:
            st.append(x[:3], seg.iloc[:3])
            raise RuntimeError("crash")
    with pytest.raises(RuntimeError):
        with SyllableStore(path, mode="a") as st:
            st.append(x, seg)
            raise RuntimeError("crash")
    st = SyllableStore(path)
    assert len(st) == 6 and st.params["spectrogram"]["n_freq"] == 6
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"]  # no temporary left behind
    new = tmp_path / "new.h5"
    with pytest.raises(RuntimeError):
        with SyllableStore.create(new, params=PARAMS, shape=(6, 5)) as st:
            st.append(x, seg)
            raise RuntimeError("crash")
    assert not new.exists()


@pytest.mark.parametrize("dtype,tol", [("float16", 2.5e-4), ("uint8", 1 / 510 + 1e-7)])
def test_quantized_error_bound(tmp_path, dtype, tol):
    x, seg = _items(9)
    with SyllableStore.create(tmp_path / "q.h5", params=PARAMS, shape=(6, 5), dtype=dtype) as st:
        st.append(x, seg)
    back = SyllableStore(tmp_path / "q.h5").spectrograms[:]
    assert back.dtype == np.float32 and np.abs(back - x).max() <= tol


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="nope.h5: no such syllable store"):
        SyllableStore(tmp_path / "nope.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="junk.h5: not a readable HDF5"):
        SyllableStore(tmp_path / "junk.h5")
    x, seg = _items(3)
    with SyllableStore.create(tmp_path / "s.h5", params=PARAMS, shape=(6, 5)) as st:
        with pytest.raises(ParameterError, match="shape"):
            st.append(x[:, :5], seg)
        with pytest.raises(ParameterError, match="required column"):
            st.append(x, seg.drop(columns="source"))
        st.append(x, seg)


def test_store_opens_with_plain_xarray_without_vocalatent(tmp_path):
    """The store's layout is netCDF-4 enough for xarray: spectrograms (item, freq, time) and
    the segment table, read in a process where vocalatent cannot be imported."""
    import subprocess
    import sys
    import textwrap

    from vocalatent.data.store import SyllableStore

    rng = np.random.default_rng(0)
    x = rng.random((11, 6, 7)).astype(np.float32)
    seg = pd.DataFrame({"source": [f"f{k % 3}.wav" for k in range(11)],
                        "onset_s": np.arange(11) * 0.5, "offset_s": np.arange(11) * 0.5 + 0.1,
                        "sample_rate": 32000})
    path = tmp_path / "syllables.h5"
    with SyllableStore.create(path, params={"a": 1}, shape=(6, 7), dtype="uint8") as st:
        st.append(x[:5], seg.iloc[:5])
        st.append(x[5:], seg.iloc[5:])
    script = textwrap.dedent(f"""
        import sys
        sys.modules["vocalatent"] = None
        import numpy as np, xarray as xr
        ds = xr.open_dataset({str(path)!r}, engine="h5netcdf")
        seg = xr.open_dataset({str(path)!r}, engine="h5netcdf", group="segments").to_dataframe()
        print(dict(ds["spectrograms"].sizes), len(seg), list(seg["source"])[:3])
        np.save({str(tmp_path / "x.npy")!r}, ds["spectrograms"].values)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "{'item': 11, 'freq': 6, 'time': 7} 11 ['f0.wav', 'f1.wav', 'f2.wav']" in r.stdout
    # xarray decodes the uint8 quantisation exactly as the store does
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), SyllableStore(path).spectrograms[:],
                               atol=1e-6)


def test_runs_of_rows_are_read_as_slices_with_the_same_values(tmp_path):
    import h5py

    from vocalatent.data.rows import read_runs

    x = np.random.default_rng(3).random((50, 4, 3)).astype(np.float32)
    with h5py.File(tmp_path / "r.h5", "w") as f:
        f.create_dataset("x", data=x, chunks=(8, 4, 3), compression="gzip")
    with h5py.File(tmp_path / "r.h5", "r") as f:
        d = f["x"]
        rng = np.random.default_rng(0)
        for idx in (np.array([7]), np.arange(10, 30), np.array([0, 1, 2, 9, 20, 21, 49]),
                    np.sort(rng.choice(50, 17, replace=False))):
            np.testing.assert_array_equal(read_runs(d, idx), x[idx])
        assert read_runs(d, np.array([], dtype=int)).shape == (0, 4, 3)


def test_chunk_groups_and_the_grouped_epoch_order(tmp_path):
    """A chunked store's epoch order keeps each chunk's items together (every batch reads
    whole chunks) and is still a permutation drawn at random; in-memory data and one batch
    per epoch keep the plain permutation."""
    from vocalatent.data.rows import ConcatRows, RowSubset, chunk_groups
    from vocalatent.items import ItemData

    x, seg = _items(37)
    path = tmp_path / "s.h5"
    with SyllableStore.create(path, params=PARAMS, shape=(6, 5)) as st:
        st.append(x, seg)
    spec = SyllableStore(path).spectrograms
    g = chunk_groups(spec)
    c = int(spec.chunked_source.chunks[0])
    assert c > 1
    np.testing.assert_array_equal(g, np.arange(37) // c)
    sub = RowSubset(spec, [3, 4, 30, 31, 32])
    np.testing.assert_array_equal(chunk_groups(sub), np.array([3, 4, 30, 31, 32]) // c)
    cat = ConcatRows([spec, x[:5]])
    gc = chunk_groups(cat)
    assert len(np.unique(gc)) == len(np.unique(g)) + 5      # unique ids across the parts
    assert chunk_groups(x) is None

    data = ItemData(spec)
    perms = [data.permutation(np.random.default_rng(s), batch_size=8) for s in range(2)]
    for perm in perms:
        assert sorted(perm.tolist()) == list(range(37))
        runs = g[perm]
        assert (np.diff(runs) != 0).sum() == len(np.unique(g)) - 1   # each chunk in one run
    assert not np.array_equal(perms[0], perms[1])
    # a held-out split of the store groups by the store's chunks
    part = data.subset(np.arange(0, 37, 2))
    pp = part.permutation(np.random.default_rng(0), batch_size=4)
    assert (np.diff(g[np.arange(0, 37, 2)][pp]) != 0).sum() == len(np.unique(g[::2])) - 1
    # plain permutations where grouping buys nothing
    np.testing.assert_array_equal(data.permutation(np.random.default_rng(5), batch_size=37),
                                  np.random.default_rng(5).permutation(37))
    np.testing.assert_array_equal(ItemData(x).permutation(np.random.default_rng(5), batch_size=8),
                                  np.random.default_rng(5).permutation(37))
