"""Neural population data: spike times and binned counts, loaded into a units x bins matrix.

Two kinds of input:

- **spike times** per unit (:func:`read_spike_times` for npz / HDF5 / text files,
  :func:`read_nwb_units` for an NWB file's units table), binned by :func:`bin_spikes`;
- an already **binned** neuron x time matrix (:func:`read_binned` for npz / HDF5 / CSV).

Both end as a :class:`NeuralCounts`: counts [units x bins] with the bin centres (seconds) as
the time coordinate and the unit names.

Rules for spike times (all times in seconds after loading):

- NaN or infinite times, a unit given as anything but a 1-D array, and an empty list of
  units are errors (:class:`~vocalatent._utils.DataError` naming the file and the unit).
- A unit with no spikes in the binned window is an error unless ``allow_empty_units=True``
  (a silent unit usually means a wrong unit id or time window).
- Negative times are an error unless ``t_start`` is given explicitly (a clock that starts
  before 0, e.g. times relative to a stimulus): the default window starts at the first spike
  and a negative time usually means a sign or offset mistake.
- Unsorted times are **sorted, with a warning** naming the unit: binning does not depend on
  order, and unsorted files (concatenated sessions or shanks) are common and harmless.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np

from .._utils import READ_ERRORS, DataError, ParameterError, check_option, check_positive, logger
from .hdf5_probe import check_hdf5

__all__ = [
    "NeuralCounts",
    "TIME_UNITS",
    "bin_spikes",
    "read_binned",
    "read_nwb_units",
    "read_spike_times",
]

#: A spike within this fraction of a bin below an edge counts in the later bin, so that
#: decimal times on an edge (0.3 s with 0.1 s bins) land where they read, despite rounding.
_EDGE_TOL = 1e-9

#: Factors that convert a time unit to seconds.
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


@dataclass(frozen=True)
class NeuralCounts:
    """Spike counts of a population, units x time bins.

    Parameters
    ----------
    counts : np.ndarray [shape=(n_units, n_bins)]
        int64 spike counts, or float64 when smoothed (``smooth_s`` set) or read from a
        binned file holding non-integer values.
    time : np.ndarray [shape=(n_bins,), float64, seconds, increasing]
        Bin centres (or the time stamps given in a binned file).
    unit_names : np.ndarray [shape=(n_units,), dtype=object]
    bin_s : float or None
        Bin width in seconds (None when a binned file gave no time stamps).
    smooth_s : float or None
        Standard deviation of the Gaussian smoothing kernel in seconds, if any.
    source : pathlib.Path or None
    """

    counts: np.ndarray
    time: np.ndarray
    unit_names: np.ndarray
    bin_s: float | None = None
    smooth_s: float | None = None
    source: Path | None = None

    def __post_init__(self):
        counts = np.asarray(self.counts)
        if counts.ndim != 2:
            raise ParameterError(f"counts must be 2-D (units x bins); got shape {counts.shape}")
        time = np.asarray(self.time, dtype=np.float64)
        names = np.asarray(self.unit_names, dtype=object)
        if time.shape != (counts.shape[1],):
            raise ParameterError(f"time has shape {time.shape}; expected ({counts.shape[1]},)")
        if names.shape != (counts.shape[0],):
            raise ParameterError(f"unit_names has shape {names.shape}; expected ({counts.shape[0]},)")
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "time", time)
        object.__setattr__(self, "unit_names", names)
        if self.source is not None:
            object.__setattr__(self, "source", Path(self.source))

    @property
    def n_units(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n_bins(self) -> int:
        return int(self.counts.shape[1])

    @property
    def X(self) -> np.ndarray:
        """Counts as items x features [shape=(n_bins, n_units)], the layout models take."""
        return self.counts.T

    def to_dataarray(self):
        """An ``xarray.DataArray`` with dims ("unit", "time") and the time stamps as coordinate."""
        import xarray as xr

        attrs = {k: v for k, v in (("bin_s", self.bin_s), ("smooth_s", self.smooth_s),
                                    ("source", str(self.source) if self.source else None))
                 if v is not None}
        return xr.DataArray(self.counts, dims=("unit", "time"),
                            coords={"unit": self.unit_names.astype(str), "time": self.time},
                            name="counts", attrs=attrs)


# --------------------------------------------------------------------------------------------
# Binning
# --------------------------------------------------------------------------------------------

#: Largest binned count matrix :func:`bin_spikes` builds (bytes, int64); a damaged time stamp
#: far in the future would otherwise ask for terabytes.
MAX_COUNT_BYTES = 8 * 2**30


def _check_units(spike_times, unit_names, path):
    if isinstance(spike_times, Mapping):
        names = [str(k) for k in spike_times.keys()]
        trains = list(spike_times.values())
    else:
        trains = list(spike_times)
        names = [str(n) for n in unit_names] if unit_names is not None else [
            f"unit{i}" for i in range(len(trains))]
    if unit_names is not None and isinstance(spike_times, Mapping):
        names = [str(n) for n in unit_names]
    if not trains:
        raise DataError("no units: the list of spike trains is empty", path=path)
    if len(names) != len(trains):
        raise DataError(f"{len(names)} unit names for {len(trains)} spike trains", path=path)
    out = []
    for name, t in zip(names, trains):
        arr = np.asarray(t)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise DataError(f"unit {name!r}: spike times must be a 1-D array; got shape "
                            f"{arr.shape}", path=path)
        if arr.size and arr.dtype.kind not in "iuf":
            raise DataError(f"unit {name!r}: spike times have dtype {arr.dtype}; expected numbers",
                            path=path)
        arr = arr.astype(np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():
            raise DataError(f"unit {name!r}: {int(bad.sum())} NaN or infinite spike times "
                            f"(first at index {int(np.flatnonzero(bad)[0])})", path=path)
        if arr.size > 1 and np.any(np.diff(arr) < 0):
            logger.warning("%sunit %r: spike times were not sorted; sorted them",
                           f"{path}: " if path else "", name)
            arr = np.sort(arr)
        out.append(arr)
    return names, out


def bin_spikes(spike_times: Sequence[np.ndarray] | Mapping[str, np.ndarray], *, bin_s: float,
               t_start: float | None = None, t_stop: float | None = None,
               smooth_s: float | None = None, unit_names: Sequence[str] | None = None,
               allow_empty_units: bool = False, source: str | os.PathLike | None = None
               ) -> NeuralCounts:
    """Count spikes in bins of ``bin_s`` seconds.

    Bin ``n`` covers ``[t_start + n bin_s, t_start + (n + 1) bin_s)`` (a time within 1e-9 bin
    widths below an edge counts as on the edge); its time coordinate is its centre. Spikes outside ``[t_start, t_stop)`` are left out (and their number logged).

    Parameters
    ----------
    spike_times : sequence of 1-D arrays, or a mapping unit name -> 1-D array
        Spike times in seconds, one array per unit.
    bin_s : float > 0
        Bin width in seconds (e.g. 0.02-0.1 for population latents).
    t_start : float or None
        Start of the first bin in seconds. Default: the earliest spike (then negative times
        are an error; give ``t_start`` explicitly for a clock that starts before 0).
    t_stop : float or None
        End of the binned window in seconds; the last bin may extend past it so that no
        spike before ``t_stop`` is lost. Default: just after the last spike.
    smooth_s : float or None
        If given, convolve each unit's counts with a Gaussian of this standard deviation in
        seconds (counts become float; smoothed counts suit plots and Gaussian likelihoods,
        not Poisson ones).
    unit_names : sequence of str or None
        Names for a sequence of arrays (default ``unit0, unit1, ...``), or to override a
        mapping's keys.
    allow_empty_units : bool
        Keep units with no spike in the window (all-zero rows) instead of raising.
    source : path-like or None
        File the spike times came from (named in errors, kept in the result).

    Returns
    -------
    NeuralCounts
    """
    check_positive("bin_s", bin_s)
    if smooth_s is not None:
        check_positive("smooth_s", smooth_s)
    names, trains = _check_units(spike_times, unit_names, source)
    nonempty = [t for t in trains if t.size]
    if not nonempty:
        raise DataError("every unit is empty (no spikes at all)", path=source)
    if t_start is None:
        lows = [(t[0], n) for n, t in zip(names, trains) if t.size]
        first, who = min(lows)
        if first < 0:
            raise DataError(f"unit {who!r} has negative spike times (first {first:g} s); times "
                            "must be >= 0 s from the start of the recording, or pass t_start "
                            "explicitly", path=source)
        t_start = float(first)
    t_start = float(t_start)
    last = max(t[-1] for t in nonempty)
    explicit_stop = t_stop is not None
    t_stop = float(t_stop) if explicit_stop else float(last)
    if t_stop < t_start or (explicit_stop and t_stop == t_start):
        raise ParameterError(f"t_stop must be > t_start; got t_start={t_start!r}, t_stop={t_stop!r}")
    span = (t_stop - t_start) / bin_s
    n_bins = (max(int(np.ceil(span - _EDGE_TOL)), 1) if explicit_stop
              else int(np.floor(span + _EDGE_TOL)) + 1)
    if not np.isfinite(span) or len(trains) * float(n_bins) * 8 > MAX_COUNT_BYTES:
        raise DataError(f"the spike times span {t_stop - t_start:g} s: {len(trains)} units x "
                        f"{n_bins:.4g} bins of {bin_s:g} s would need "
                        f"{len(trains) * float(n_bins) * 8 / 2**30:.3g} GiB (limit "
                        f"{MAX_COUNT_BYTES / 2**30:g} GiB); check the file for a damaged time, "
                        "or use a larger [neural] bin_s", path=source)
    counts = np.zeros((len(trains), n_bins), dtype=np.int64)
    dropped = 0
    for u, (name, t) in enumerate(zip(names, trains)):
        inside = (t >= t_start) & ((t < t_stop) if explicit_stop else np.ones(t.size, bool))
        dropped += int(t.size - inside.sum())
        idx = np.floor((t[inside] - t_start) / bin_s + _EDGE_TOL).astype(np.int64)
        idx = np.clip(idx, 0, n_bins - 1)          # guards rounding at the last edge
        counts[u] = np.bincount(idx, minlength=n_bins)
        if counts[u].sum() == 0 and not allow_empty_units:
            raise DataError(f"unit {name!r} has no spikes in [{t_start:g}, {t_stop:g}) s "
                            "(pass allow_empty_units=True to keep silent units)", path=source)
    if dropped:
        logger.info("bin_spikes: %d spikes outside [%g, %g) s left out", dropped, t_start, t_stop)
    time = t_start + (np.arange(n_bins) + 0.5) * bin_s
    out_counts: np.ndarray = counts
    if smooth_s is not None:
        from scipy.ndimage import gaussian_filter1d

        out_counts = gaussian_filter1d(counts.astype(np.float64), sigma=smooth_s / bin_s, axis=1,
                                       mode="constant", truncate=4.0)
    return NeuralCounts(out_counts, time, np.asarray(names, dtype=object), bin_s=float(bin_s),
                        smooth_s=None if smooth_s is None else float(smooth_s), source=source)


# --------------------------------------------------------------------------------------------
# Spike-time files
# --------------------------------------------------------------------------------------------

def _read_text_spikes(path: Path) -> dict[str, np.ndarray]:
    rows: list[list[float]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"not a readable text file of spike times: {exc}", path=path) from exc
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            rows.append([float(v) for v in line.replace(",", " ").split()])
        except ValueError as exc:
            raise DataError(f"line {lineno}: not numbers ({exc})", path=path) from exc
    if not rows:
        raise DataError("no spike times in the file (only comments or blank lines)", path=path)
    if all(len(r) == 1 for r in rows):        # one column: a single unit
        return {path.stem: np.asarray([r[0] for r in rows])}
    return {f"{path.stem}_{i}": np.asarray(r) for i, r in enumerate(rows)}


def read_spike_times(path, *, time_unit: Literal["s", "ms", "us"] = "s",
                     group: str | None = None) -> dict[str, np.ndarray]:
    """Read per-unit spike times from an npz, HDF5 or text file.

    Formats:

    - ``.npz``: one 1-D array per unit; the keys are the unit names.
    - ``.h5`` / ``.hdf5``: a group holding one 1-D dataset per unit (``group``, default the
      group ``units`` when present, else the file's root).
    - text (``.txt``, ``.csv``, ``.dat``, as the nitime example files): ``#`` starts a comment;
      one number per line is a single unit (named after the file); several numbers per line
      make one unit per line (``<stem>_<line>``).

    Parameters
    ----------
    path : path-like
    time_unit : {"s", "ms", "us"}
        Unit of the stored times; they are returned in seconds.
    group : str or None
        HDF5 group holding the units.

    Returns
    -------
    dict
        Unit name -> spike times in seconds [shape=(n_spikes,), float64], sorted (with a
        warning if the file was not). Pass it to :func:`bin_spikes`.
    """
    check_option("time_unit", time_unit, TIME_UNITS)
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    ext = path.suffix.lower()
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                units = {k: np.asarray(z[k]) for k in z.files}
        except READ_ERRORS as exc:
            raise DataError(f"not a readable npz file of numeric arrays: {type(exc).__name__}: {exc}",
                            path=path) from exc
    elif ext in (".h5", ".hdf5"):
        import h5py

        check_hdf5(path)
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise DataError(f"not a readable HDF5 file: {exc}", path=path) from exc
        with f:
            key = group if group is not None else ("units" if "units" in f else "/")
            if key not in f or not isinstance(f[key], h5py.Group):
                raise DataError(f"no group {key!r} (top-level keys: {sorted(f.keys())})", path=path)
            g = f[key]
            units = {}
            for name in g.keys():
                node = g[name]
                if not isinstance(node, h5py.Dataset):
                    raise DataError(f"{key}/{name} is a group; expected one 1-D dataset per unit",
                                    path=path)
                try:
                    units[name] = np.asarray(node[...])
                except READ_ERRORS as exc:
                    raise DataError(f"{key}/{name} is unreadable: {exc}", path=path) from exc
    else:
        units = _read_text_spikes(path)
    if not units:
        raise DataError("no units in the file", path=path)
    names, trains = _check_units(units, None, path)
    scale = TIME_UNITS[time_unit]
    return {n: t * scale for n, t in zip(names, trains)}


def read_nwb_units(path, *, backend: Literal["pynwb", "h5py"] = "pynwb") -> dict[str, np.ndarray]:
    """Read the spike times of an NWB file's units table (seconds, per unit).

    Parameters
    ----------
    path : path-like
        An NWB 2.x file.
    backend : {"pynwb", "h5py"}
        ``"pynwb"`` (the optional extra, ``pip install vocalatent[nwb]``) reads and validates
        the file through pynwb. ``"h5py"`` reads the units table's ragged arrays
        (``units/spike_times``, ``units/spike_times_index``, ``units/id``) directly, with no
        NWB validation.

    Returns
    -------
    dict
        Unit id (as str) -> spike times in seconds [shape=(n_spikes,)].
    """
    check_option("backend", backend, ("pynwb", "h5py"))
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    check_hdf5(path)
    if backend == "pynwb":
        try:
            from pynwb import NWBHDF5IO
        except ImportError as exc:
            raise ImportError("reading NWB files needs the optional 'pynwb' package: "
                              "pip install vocalatent[nwb] (or pass backend='h5py' to read the "
                              "units table without it)") from exc
        with NWBHDF5IO(str(path), "r", load_namespaces=True) as io:
            nwb = io.read()
            if nwb.units is None:
                raise DataError("the NWB file has no units table", path=path)
            ids = nwb.units.id[:]
            units = {str(uid): np.asarray(nwb.units["spike_times"][i])
                     for i, uid in enumerate(ids)}
    else:
        import h5py

        try:
            with h5py.File(path, "r") as f:
                if "units" not in f or "spike_times" not in f["units"]:
                    raise DataError("no units/spike_times table in the file", path=path)
                g = f["units"]
                flat = np.asarray(g["spike_times"][...], dtype=np.float64)
                ends = (np.asarray(g["spike_times_index"][...], dtype=np.int64)
                        if "spike_times_index" in g else np.asarray([flat.size]))
                ids = np.asarray(g["id"][...]) if "id" in g else np.arange(ends.size)
        except DataError:
            raise
        except READ_ERRORS as exc:
            raise DataError(f"not a readable NWB (HDF5) file: {exc}", path=path) from exc
        if ids.size != ends.size:
            raise DataError(f"units/id has {ids.size} entries but spike_times_index has "
                            f"{ends.size}", path=path)
        if ends.size and (np.any(np.diff(ends) < 0) or ends[-1] != flat.size):
            raise DataError("units/spike_times_index is not a valid ragged index "
                            f"(last {ends[-1]}, {flat.size} spike times)", path=path)
        starts = np.concatenate([[0], ends[:-1]])
        units = {str(uid): flat[s:e] for uid, s, e in zip(ids, starts, ends)}
    if not units:
        raise DataError("the units table is empty", path=path)
    names, trains = _check_units(units, None, path)
    return dict(zip(names, trains))


# --------------------------------------------------------------------------------------------
# Binned matrices
# --------------------------------------------------------------------------------------------

def _finish_binned(counts, time, names, *, path, transpose, time_unit):
    counts = np.asarray(counts)
    if counts.ndim != 2:
        raise DataError(f"counts must be 2-D (neurons x time); got shape {counts.shape}", path=path)
    if transpose:
        counts = counts.T
    if counts.shape[0] == 0 or counts.shape[1] == 0:
        raise DataError(f"counts are empty (shape {counts.shape})", path=path)
    if counts.dtype.kind not in "biuf":
        raise DataError(f"counts have dtype {counts.dtype}; expected numbers", path=path)
    if counts.dtype.kind == "f":
        bad = ~np.isfinite(counts)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DataError(f"{int(bad.sum())} NaN or infinite counts (first: unit row {r}, "
                            f"bin {c})", path=path)
    if counts.min() < 0:
        raise DataError(f"negative counts (min {counts.min():g})", path=path)
    if counts.dtype.kind == "f" and np.all(counts == np.rint(counts)):
        counts = counts.astype(np.int64)
    elif counts.dtype.kind in "biu":
        counts = counts.astype(np.int64)
    n_units, n_bins = counts.shape
    if names is None:
        names = [f"unit{i}" for i in range(n_units)]
    names = np.asarray([str(n) for n in np.asarray(names).ravel()], dtype=object)
    if names.size != n_units:
        raise DataError(f"{names.size} unit names for {n_units} units (rows of counts)", path=path)
    bin_s = None
    if time is None:
        time = np.arange(n_bins, dtype=np.float64)
        logger.info("%s: no time stamps; using bin indices as time", path)
    else:
        time = np.asarray(time, dtype=np.float64).ravel() * TIME_UNITS[time_unit]
        if time.size != n_bins:
            raise DataError(f"{time.size} time stamps for {n_bins} bins (columns of counts)",
                            path=path)
        if not np.all(np.isfinite(time)):
            raise DataError(f"{int((~np.isfinite(time)).sum())} NaN or infinite time stamps",
                            path=path)
        if n_bins > 1:
            steps = np.diff(time)
            if np.any(steps <= 0):
                raise DataError(f"time stamps are not increasing (first at bin "
                                f"{int(np.flatnonzero(steps <= 0)[0]) + 1})", path=path)
            bin_s = float(np.median(steps))
    return NeuralCounts(counts, time, names, bin_s=bin_s, source=path)


def read_binned(path, *, counts_key: str = "counts", time_key: str = "time",
                units_key: str = "unit_names", transpose: bool = False,
                time_unit: Literal["s", "ms", "us"] = "s") -> NeuralCounts:
    """Read an already binned neuron x time count matrix.

    Formats:

    - ``.npz`` / ``.h5`` / ``.hdf5``: the arrays ``counts_key`` (neurons x time), optional
      ``time_key`` (time stamps, one per column) and ``units_key`` (names, one per row). An
      npz holding a single array uses it as the counts.
    - ``.csv`` / ``.tsv``: first column the unit names, first row the time stamps (if the
      header is not numeric, bins are numbered instead).

    Parameters
    ----------
    path : path-like
    counts_key, time_key, units_key : str
        Array names in npz / HDF5 files.
    transpose : bool
        The stored matrix is time x neurons.
    time_unit : {"s", "ms", "us"}
        Unit of the stored time stamps (converted to seconds).

    Returns
    -------
    NeuralCounts
        int64 counts when the values are integers, else float64.
    """
    check_option("time_unit", time_unit, TIME_UNITS)
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    ext = path.suffix.lower()
    time = names = None
    if ext == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.files)
                if counts_key in keys:
                    counts = z[counts_key]
                elif len(keys) == 1:
                    counts = z[keys[0]]
                else:
                    raise DataError(f"no array {counts_key!r} (arrays: {keys}); pass counts_key=",
                                    path=path)
                time = z[time_key] if time_key in keys else None
                names = z[units_key] if units_key in keys else None
        except DataError:
            raise
        except READ_ERRORS as exc:
            raise DataError(f"not a readable npz file of numeric arrays: {type(exc).__name__}: {exc}",
                            path=path) from exc
    elif ext in (".h5", ".hdf5"):
        import h5py

        check_hdf5(path)
        try:
            with h5py.File(path, "r") as f:
                if counts_key not in f:
                    raise DataError(f"no dataset {counts_key!r} (keys: {sorted(f.keys())}); "
                                    "pass counts_key=", path=path)
                counts = np.asarray(f[counts_key][...])
                time = np.asarray(f[time_key][...]) if time_key in f else None
                if units_key in f:
                    node = f[units_key]
                    names = (node.asstr()[...] if h5py.check_string_dtype(node.dtype) is not None
                             else node[...])
        except DataError:
            raise
        except READ_ERRORS as exc:
            raise DataError(f"not a readable HDF5 file of binned counts: {exc}", path=path) from exc
    elif ext in (".csv", ".tsv", ".txt"):
        import pandas as pd

        try:
            df = pd.read_csv(path, sep="," if ext == ".csv" else "\t", index_col=0)
        except (ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"not a readable table: {exc}", path=path) from exc
        if transpose:
            df = df.T
            transpose = False
        counts, names = df.to_numpy(), df.index.to_numpy()
        try:
            time = np.asarray(df.columns, dtype=np.float64)
        except ValueError:
            time = None
    else:
        raise DataError("unknown binned-count format; expected .npz, .h5/.hdf5, .csv or .tsv",
                        path=path)
    return _finish_binned(counts, time, names, path=path, transpose=transpose, time_unit=time_unit)
