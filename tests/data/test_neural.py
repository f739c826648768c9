"""Spike binning, spike-time and binned-count loaders, input errors, real grasshopper spikes."""

from __future__ import annotations

import importlib.util
import logging

import h5py
import numpy as np
import pandas as pd
import pytest

from vocalatent._utils import DataError, ParameterError
from vocalatent.data.neural import (
    NeuralCounts,
    bin_spikes,
    read_binned,
    read_nwb_units,
    read_spike_times,
)


def test_bin_spikes_known_counts():
    trains = {"a": np.array([0.0, 0.05, 0.099, 0.1, 0.35]), "b": np.array([0.2, 0.21, 0.22])}
    nc = bin_spikes(trains, bin_s=0.1)
    # bins [0,.1) [.1,.2) [.2,.3) [.3,.4); default window starts at the first spike
    np.testing.assert_array_equal(nc.counts, [[3, 1, 0, 1], [0, 0, 3, 0]])
    np.testing.assert_allclose(nc.time, [0.05, 0.15, 0.25, 0.35])
    assert list(nc.unit_names) == ["a", "b"] and nc.bin_s == 0.1
    assert nc.counts.dtype == np.int64 and nc.X.shape == (4, 2)
    # an explicit window leaves out spikes outside it and keeps the partial last bin
    nc2 = bin_spikes(trains, bin_s=0.1, t_start=0.1, t_stop=0.25)
    np.testing.assert_array_equal(nc2.counts, [[1, 0], [0, 3]])
    np.testing.assert_allclose(nc2.time, [0.15, 0.25])


def test_bin_spikes_total_and_window(rng):
    trains = [np.sort(rng.uniform(0, 10, n)) for n in (50, 200, 1000)]
    nc = bin_spikes(trains, bin_s=0.02, t_start=0.0, t_stop=10.0)
    assert nc.n_bins == 500 and nc.n_units == 3
    np.testing.assert_array_equal(nc.counts.sum(1), [50, 200, 1000])
    np.testing.assert_array_equal(nc.unit_names, ["unit0", "unit1", "unit2"])
    # binning agrees with numpy's histogram on the same edges
    edges = np.arange(501) * 0.02
    np.testing.assert_array_equal(nc.counts[2], np.histogram(trains[2], edges)[0])


def test_smoothing_keeps_mass_and_spreads():
    nc = bin_spikes([np.array([5.0])], bin_s=0.01, t_start=0.0, t_stop=10.0, smooth_s=0.05)
    c = nc.counts[0]
    assert c.dtype == np.float64 and nc.smooth_s == 0.05
    assert c.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.argmax(c) == 500 and c.max() < 0.1
    # Gaussian with sd 5 bins
    bins = np.arange(c.size)
    sd = np.sqrt((c * (bins - 500) ** 2).sum())
    assert sd == pytest.approx(5.0, rel=0.02)


def test_bin_spikes_errors(caplog):
    with pytest.raises(DataError, match="no units"):
        bin_spikes([], bin_s=0.1)
    with pytest.raises(DataError, match=r"unit 'u1': 1 NaN or infinite spike times \(first at index 1\)"):
        bin_spikes({"u0": [0.1, 0.2], "u1": [0.3, np.nan]}, bin_s=0.1)
    with pytest.raises(DataError, match="unit 'u1' has no spikes"):
        bin_spikes({"u0": [0.1, 0.2], "u1": []}, bin_s=0.1)
    nc = bin_spikes({"u0": [0.1, 0.2], "u1": []}, bin_s=0.1, allow_empty_units=True)
    assert nc.counts[1].sum() == 0
    with pytest.raises(DataError, match="unit 'neg' has negative spike times.*t_start"):
        bin_spikes({"ok": [0.1], "neg": [-0.5, 0.2]}, bin_s=0.1)
    nc = bin_spikes({"ok": [0.1], "neg": [-0.5, 0.2]}, bin_s=0.1, t_start=-1.0)
    assert nc.counts.sum() == 3 and nc.time[0] == pytest.approx(-0.95)
    with pytest.raises(DataError, match="unit 'm': spike times must be a 1-D array"):
        bin_spikes({"m": np.zeros((2, 2))}, bin_s=0.1)
    with pytest.raises(ParameterError, match="bin_s"):
        bin_spikes([[0.1]], bin_s=0)
    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        nc = bin_spikes({"shuffled": [0.3, 0.1, 0.2]}, bin_s=0.1)
    assert "unit 'shuffled': spike times were not sorted" in caplog.text
    np.testing.assert_array_equal(nc.counts, [[1, 1, 1]])


def test_read_spike_times_npz_h5_text(tmp_path):
    a, b = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.25])
    np.savez(tmp_path / "s.npz", cellA=a, cellB=b)
    u = read_spike_times(tmp_path / "s.npz")
    assert list(u) == ["cellA", "cellB"]
    np.testing.assert_array_equal(u["cellB"], b)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        g = f.create_group("units")
        g.create_dataset("u1", data=a * 1000)
        g.create_dataset("u2", data=b * 1000)
    u = read_spike_times(tmp_path / "s.h5", time_unit="ms")
    np.testing.assert_allclose(u["u1"], a)
    one = tmp_path / "one.txt"
    one.write_text("# comment\n100\n250\n\n900\n")
    u = read_spike_times(one, time_unit="ms")
    assert list(u) == ["one"] and np.allclose(u["one"], [0.1, 0.25, 0.9])
    many = tmp_path / "many.txt"
    many.write_text("0.1 0.2 0.3\n0.5 0.7\n")
    u = read_spike_times(many)
    assert list(u) == ["many_0", "many_1"] and u["many_1"].size == 2


def test_read_spike_times_errors(tmp_path):
    np.savez(tmp_path / "nan.npz", good=np.array([0.1]), bad=np.array([0.2, np.nan]))
    with pytest.raises(DataError, match=r"nan\.npz: unit 'bad': 1 NaN"):
        read_spike_times(tmp_path / "nan.npz")
    with h5py.File(tmp_path / "nested.h5", "w") as f:
        f.create_group("units").create_group("u1")
    with pytest.raises(DataError, match=r"nested\.h5: units/u1 is a group"):
        read_spike_times(tmp_path / "nested.h5")
    bad = tmp_path / "bad.txt"
    bad.write_text("0.1\nspike\n")
    with pytest.raises(DataError, match=r"bad\.txt: line 2: not numbers"):
        read_spike_times(bad)
    with pytest.raises(ParameterError, match="time_unit"):
        read_spike_times(bad, time_unit="min")


def _write_nwb_units(path, trains, ids):
    flat = np.concatenate(trains)
    ends = np.cumsum([len(t) for t in trains])
    with h5py.File(path, "w") as f:
        g = f.create_group("units")
        g.attrs["neurodata_type"] = "Units"
        g.create_dataset("spike_times", data=flat)
        g.create_dataset("spike_times_index", data=ends)
        g.create_dataset("id", data=np.asarray(ids))


def test_read_nwb_units_h5py_backend(tmp_path):
    trains = [np.array([0.1, 0.4]), np.array([0.2]), np.array([0.05, 0.3, 0.6])]
    p = tmp_path / "rec.nwb"
    _write_nwb_units(p, trains, [10, 11, 12])
    u = read_nwb_units(p, backend="h5py")
    assert list(u) == ["10", "11", "12"]
    for got, want in zip(u.values(), trains):
        np.testing.assert_array_equal(got, want)
    bad = tmp_path / "bad.nwb"
    _write_nwb_units(bad, trains, [1, 2])
    with pytest.raises(DataError, match=r"bad\.nwb: units/id has 2 entries"):
        read_nwb_units(bad, backend="h5py")


@pytest.mark.skipif(importlib.util.find_spec("pynwb") is not None, reason="pynwb is installed")
def test_read_nwb_units_needs_pynwb(tmp_path):
    p = tmp_path / "rec.nwb"
    _write_nwb_units(p, [np.array([0.1])], [0])
    with pytest.raises(ImportError, match=r"pip install vocalatent\[nwb\]"):
        read_nwb_units(p)


def test_read_binned_formats(tmp_path, rng):
    counts = rng.poisson(2.0, size=(3, 20))
    time = 10.0 + 0.05 * np.arange(20)
    names = np.array(["n1", "n2", "n3"])
    np.savez(tmp_path / "b.npz", counts=counts, time=time, unit_names=names)
    nc = read_binned(tmp_path / "b.npz")
    np.testing.assert_array_equal(nc.counts, counts)
    np.testing.assert_allclose(nc.time, time)
    assert nc.bin_s == pytest.approx(0.05) and list(nc.unit_names) == list(names)
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f.create_dataset("rates", data=counts.T.astype(np.float32))
        f.create_dataset("t", data=time * 1000)
        f.create_dataset("unit_names", data=names.astype(object), dtype=h5py.string_dtype())
    nc = read_binned(tmp_path / "b.h5", counts_key="rates", time_key="t", transpose=True,
                     time_unit="ms")
    np.testing.assert_array_equal(nc.counts, counts)
    assert nc.counts.dtype == np.int64 and list(nc.unit_names) == list(names)
    np.testing.assert_allclose(nc.time, time)
    pd.DataFrame(counts, index=names, columns=[f"{t:.2f}" for t in time]).to_csv(tmp_path / "b.csv")
    nc = read_binned(tmp_path / "b.csv")
    np.testing.assert_array_equal(nc.counts, counts)
    np.testing.assert_allclose(nc.time, time)
    np.save(tmp_path / "only.npy", counts)
    np.savez(tmp_path / "only.npz", counts)
    nc = read_binned(tmp_path / "only.npz")
    np.testing.assert_array_equal(nc.counts, counts)
    np.testing.assert_array_equal(nc.time, np.arange(20))
    assert nc.bin_s is None
    da = read_binned(tmp_path / "b.npz").to_dataarray()
    assert da.dims == ("unit", "time") and float(da.time[0]) == 10.0


def test_read_binned_errors(tmp_path):
    counts = np.ones((2, 5))
    np.savez(tmp_path / "short.npz", counts=counts, time=np.arange(4.0))
    with pytest.raises(DataError, match=r"short\.npz: 4 time stamps for 5 bins"):
        read_binned(tmp_path / "short.npz")
    np.savez(tmp_path / "nant.npz", counts=counts, time=np.array([0, 1, np.nan, 3, 4.0]))
    with pytest.raises(DataError, match=r"nant\.npz: 1 NaN or infinite time stamps"):
        read_binned(tmp_path / "nant.npz")
    np.savez(tmp_path / "back.npz", counts=counts, time=np.array([0, 1, 2, 1.5, 4.0]))
    with pytest.raises(DataError, match="not increasing"):
        read_binned(tmp_path / "back.npz")
    np.savez(tmp_path / "neg.npz", counts=-counts)
    with pytest.raises(DataError, match="negative counts"):
        read_binned(tmp_path / "neg.npz")
    np.savez(tmp_path / "names.npz", counts=counts, unit_names=np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match="3 unit names for 2 units"):
        read_binned(tmp_path / "names.npz")
    np.savez(tmp_path / "empty.npz", counts=np.zeros((0, 5)))
    with pytest.raises(DataError, match="empty"):
        read_binned(tmp_path / "empty.npz")
    np.savez(tmp_path / "two.npz", a=counts, b=counts)
    with pytest.raises(DataError, match=r"no array 'counts' \(arrays: \['a', 'b'\]\)"):
        read_binned(tmp_path / "two.npz")


def test_neural_counts_validation():
    with pytest.raises(ParameterError, match="time has shape"):
        NeuralCounts(np.zeros((2, 3)), np.arange(4), ["a", "b"])


@pytest.mark.network
def test_grasshopper_spike_times(real_data):
    folder = real_data("grasshopper_spikes")
    files = sorted(folder.rglob("grasshopper_spike_times*.txt"))
    assert len(files) == 2
    units = {}
    for f in files:
        units.update(read_spike_times(f, time_unit="us"))   # the files store microseconds
    assert [t.size for t in units.values()] == [929, 868]
    for t in units.values():
        assert np.all(np.diff(t) >= 0) and 0 <= t[0] and t[-1] < 10.0
    nc = bin_spikes(units, bin_s=0.05, t_start=0.0, t_stop=10.0)
    assert nc.counts.shape == (2, 200)
    np.testing.assert_array_equal(nc.counts.sum(1), [929, 868])
    # the cell was driven at about 100 Hz (the file header's "desired firing rate")
    rate = nc.counts.sum(1) / 10.0
    assert np.all((rate > 70) & (rate < 110))
    np.testing.assert_allclose(nc.time[:2], [0.025, 0.075])


def test_a_damaged_far_time_stamp_is_an_error_not_a_huge_allocation():
    from vocalatent.data.neural import bin_spikes

    trains = {"u0": np.array([0.1, 0.5, 1e12]), "u1": np.array([0.2, 0.3])}
    with pytest.raises(DataError, match=r"span .* GiB .*larger \[neural\] bin_s"):
        bin_spikes(trains, bin_s=0.01)
