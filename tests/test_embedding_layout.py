"""embedding.nc in tidy layers: one row per item at the root, products in their own groups,
readable with plain xarray (no vocalatent), and read back into the same Dataset."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import xarray as xr

import vocalatent.accessor  # noqa: F401  (ds.vl)
from vocalatent.analysis._demo import synthetic_embedding_dataset
from vocalatent.embedding import join_layers, read_embedding, split_layers, write_embedding


def _analysed():
    ds = synthetic_embedding_dataset(n_per_type=40, random_state=0)
    ds = ds.vl.clusters(resolution=32)
    # a lattice product, as the job adds (aggregate posterior on lattice points)
    ds["aggregate_posterior"] = (("lattice_point",), np.full(55, 1 / 55))
    ds["lattice_z"] = (("lattice_point", "latent"), np.random.default_rng(0).random((55, 2)))
    ds.attrs["heldout_log_likelihood"] = 12.5
    return ds


def test_round_trip_is_identical(tmp_path):
    ds = _analysed()
    path = write_embedding(ds, tmp_path / "embedding.nc")
    back = read_embedding(path)
    assert set(back.variables) == set(ds.variables)
    for name in ds.variables:
        xr.testing.assert_identical(back[name], ds[name])
    assert back.attrs == ds.attrs


def test_root_is_one_row_per_item_and_groups_hold_the_rest(tmp_path):
    ds = _analysed()
    items, groups = split_layers(ds)
    assert set(items.dims) == {"item"}
    labels = [str(v) for v in ds["latent"].values]
    assert {f"embedding_{labels[0]}", f"embedding_{labels[1]}", "log_likelihood", "cluster"} <= set(items.data_vars)
    assert set(groups) >= {"grid", "lattice"}
    assert all("item" not in g.dims for g in groups.values())
    back = join_layers(items, groups)
    xr.testing.assert_identical(back["embedding"], ds["embedding"])
    path = write_embedding(ds, tmp_path / "embedding.nc")
    root = xr.open_dataset(path, engine="h5netcdf")
    assert len(root.to_dataframe()) == ds.sizes["item"]
    grid = xr.open_dataset(path, engine="h5netcdf", group="grid")
    assert "density" in grid and grid["density"].ndim == 2


def test_readable_without_vocalatent(tmp_path):
    ds = _analysed()
    path = write_embedding(ds, tmp_path / "embedding.nc")
    col = f"embedding_{ds['latent'].values[0]}"
    script = textwrap.dedent(f"""
        import sys
        sys.modules["vocalatent"] = None          # importing vocalatent now fails
        try:
            import vocalatent  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("vocalatent importable")
        import xarray as xr
        root = xr.open_dataset({str(path)!r})
        df = root.to_dataframe()
        grid = xr.open_dataset({str(path)!r}, group="grid")
        print(len(df), df[{col!r}].between(0, 1).all(), grid["density"].shape)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    n, ok, shape = r.stdout.split(" ", 2)
    assert int(n) == ds.sizes["item"] and ok == "True" and "32" in shape


def test_earlier_single_group_files_still_read(tmp_path):
    ds = _analysed()
    path = tmp_path / "old.nc"
    ds.to_netcdf(path, engine="h5netcdf")          # the layout before the split
    back = read_embedding(path)
    xr.testing.assert_identical(back["density"], ds["density"])
    xr.testing.assert_identical(back["embedding"], ds["embedding"])
