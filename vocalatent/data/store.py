"""The syllable store: one HDF5 file of fixed-size spectrograms and their segment table.

Layout (h5py, chunked, gzip-compressed)::

    /spectrograms          (N, F, T)  float32 | float16 | uint8, chunks of 8 items
    /segments/<column>     (N,)       one dataset per column (float64, int64 or UTF-8 str)
    /item, /freq, /time    dimension scales of those axes (netCDF-4 convention)
    attrs: format_version, vocalatent_version, params (JSON), info (JSON), dtype, columns (JSON)

Every row carries its identity — ``source`` (path relative to the input root), ``onset_s``,
``offset_s`` — plus ``duration_s``, ``sample_rate``, ``channel``, ``label`` and any metadata
column, so nothing depends on row order in some other file.

xarray: the spectrograms and the segment table carry netCDF-4 dimension scales (``item``,
``freq``, ``time``), so ``xarray.open_dataset(path, engine="h5netcdf")`` gives
``spectrograms (item, freq, time)`` and ``xarray.open_dataset(path, engine="h5netcdf",
group="segments")`` the segment table, without vocalatent installed.

Quantization: ``dtype="float16"`` keeps values in [0, 1] to within 2.5e-4; ``"uint8"`` stores
``round(255 x)`` (error at most 1/510 ≈ 0.002) at a quarter of the size of float32. Reads
always return float32.

Atomic writes: a store is built in a hidden temporary file beside its final path
(``.<name>.vltmp.<random>.tmp``, mode 0644 under the default umask) and renamed onto the path by :meth:`SyllableStore.commit` (or on
leaving a ``with`` block without an exception). Appending to an existing store
(``SyllableStore(path, mode="a")``) copies it to such a temporary file first. A crash or an
exception therefore leaves either the old store or no store, never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .._utils import DataError, ParameterError, check_option, logger, temp_path
from .hdf5_probe import check_hdf5
from .rows import LazyRows, read_runs
from .._version import __version__

__all__ = ["SyllableStore"]

FORMAT_VERSION = 1
_REQUIRED = ("source", "onset_s", "offset_s", "sample_rate")
_DEFAULTS = {"channel": 0, "label": ""}
_CHUNK_ITEMS = 8


def _canonical(params: Mapping[str, Any]) -> Any:
    """JSON round trip: tuples become lists, keys sorted — the form params are compared in."""
    try:
        return json.loads(json.dumps(params, sort_keys=True))
    except TypeError as exc:
        raise ParameterError(f"store params must be JSON-serializable ({exc})") from None


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True)


class StoreSpectrograms(LazyRows):
    """Array-like view of the store's spectrograms: indexing reads only what is asked for.

    Indexing follows :class:`~vocalatent.data.rows.LazyRows` (an int, a slice, a boolean mask
    or an integer array in any order, with repeats); returns float32 (dequantized when the
    store is quantized).
    """

    def __init__(self, dset, dtype: str, owner: "SyllableStore"):
        self._d = dset
        self._kind = dtype
        self._owner = owner  # keeps the file open while this view is in use
        super().__init__(dset.shape[0], tuple(dset.shape[1:]), np.float32)

    @property
    def n_items(self) -> int:
        return int(self._d.shape[0])   # a writable store grows

    def _decode(self, x: np.ndarray) -> np.ndarray:
        if self._kind == "uint8":
            return x.astype(np.float32) / np.float32(255.0)
        return x.astype(np.float32, copy=False)

    @property
    def chunked_source(self):
        """The HDF5 dataset (its ``chunks`` group the items decompressed together)."""
        return self._d

    def read_sorted(self, idx):
        return self._decode(read_runs(self._d, idx))        # one slice per run of rows


def _add_dimension_scales(h5, dtype: str) -> None:
    """Make the store readable by ``xarray.open_dataset(path, engine="h5netcdf")``.

    HDF5 dimension scales ``item``, ``freq`` and ``time`` (the netCDF-4 convention) name the
    axes of ``/spectrograms`` and of every ``/segments/<column>``; a ``uint8`` store carries
    ``scale_factor = 1/255`` so that xarray decodes it to [0, 1] like the store does.
    """
    spec = h5["spectrograms"]
    _, F, T = spec.shape
    item = h5.create_dataset("item", shape=(0,), maxshape=(None,), dtype="i8", chunks=(4096,))
    freq = h5.create_dataset("freq", data=np.arange(F, dtype=np.int64))
    time_ = h5.create_dataset("time", data=np.arange(T, dtype=np.int64))
    freq.attrs["long_name"] = "frequency bin (low to high)"
    time_.attrs["long_name"] = "time bin"
    for k, scale in enumerate((item, freq, time_)):
        scale.make_scale(scale.name.strip("/"))
        spec.dims[k].attach_scale(scale)
    if dtype == "uint8":
        spec.attrs["scale_factor"] = np.float32(1 / 255)


class SyllableStore:
    """A syllable store on disk (see the module docstring for the layout and guarantees).

    Parameters
    ----------
    path : path-like
        An existing store.
    mode : {"r", "a"}, default="r"
        ``"r"``: read-only. ``"a"``: append; the store is copied to a temporary file, and the
        appended items appear at ``path`` only after :meth:`commit`.

    Examples
    --------
    >>> with SyllableStore.create("syl.h5", params={"n": 1}, shape=(4, 4)) as st:  # doctest: +SKIP
    ...     st.append(specs, segments)
    >>> st = SyllableStore("syl.h5"); x = st.spectrograms[[3, 0]]               # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, *, mode: str = "r"):
        import h5py

        check_option("mode", mode, ["r", "a"])
        self.path = Path(path)
        self._tmp: Path | None = None
        if not self.path.is_file():
            raise DataError("no such syllable store", path=self.path)
        check_hdf5(self.path)       # the original: its probe is remembered, a fresh copy's is not
        src = self.path
        if mode == "a":
            self._tmp = self._temp_path(self.path)
            shutil.copy2(self.path, self._tmp)
            src = self._tmp
        try:
            self._h5 = h5py.File(src, "r" if mode == "r" else "r+")
        except OSError as exc:
            self._discard()
            raise DataError(f"not a readable HDF5 syllable store ({exc})", path=self.path) from None
        if self._h5.attrs.get("format") != "vocalatent-syllable-store":
            self._h5.close()
            self._discard()
            raise DataError("not a vocalatent syllable store (missing format attribute)",
                            path=self.path)
        self._writable = mode == "a"
        self._segments_cache: pd.DataFrame | None = None

    # ------------------------------------------------------------------ creation
    @staticmethod
    def _temp_path(path: Path) -> Path:
        return temp_path(path)   # 0644 under the default umask, like every other output

    @classmethod
    def create(cls, path: str | os.PathLike, *, params: Mapping[str, Any],
               shape: tuple[int, int] = (128, 128), dtype: str = "float32",
               info: Mapping[str, Any] | None = None, compression_level: int = 4) -> "SyllableStore":
        """Start a new store; it replaces ``path`` (if any) only on :meth:`commit`.

        Parameters
        ----------
        path : path-like
        params : mapping
            The parameters that make the items (JSON-serializable); stored, and compared by
            :meth:`is_compatible` and :meth:`append`.
        shape : (int, int), default=(128, 128)
            (F, T) of each spectrogram.
        dtype : {"float32", "float16", "uint8"}, default="float32"
            On-disk type (see the module docstring for the quantization error).
        info : mapping, optional
            Extra JSON-serializable facts (e.g. calibrated values, input root) that do not
            define compatibility.
        compression_level : int, default=4
            gzip level 0-9.

        Returns
        -------
        SyllableStore
            Writable; use it as a context manager or call :meth:`commit`.
        """
        import h5py

        check_option("dtype", dtype, ["float32", "float16", "uint8"])
        if (len(tuple(shape)) != 2 or any(not isinstance(s, (int, np.integer)) or s < 1
                                          for s in shape)):
            raise ParameterError(f"shape must be two positive integers (F, T); got {shape!r}")
        canon = _canonical(dict(params))
        info_json = _dumps(_canonical(dict(info or {})))
        self = cls.__new__(cls)
        self.path = Path(path)
        self._tmp = cls._temp_path(self.path)
        self._h5 = h5py.File(self._tmp, "w")
        F, T = (int(s) for s in shape)
        self._h5.create_dataset("spectrograms", shape=(0, F, T), maxshape=(None, F, T),
                                dtype=dtype, chunks=(_CHUNK_ITEMS, F, T), compression="gzip",
                                compression_opts=int(compression_level), shuffle=True)
        self._h5.create_group("segments")
        _add_dimension_scales(self._h5, dtype)
        a = self._h5.attrs
        a["format"] = "vocalatent-syllable-store"
        a["format_version"] = FORMAT_VERSION
        a["vocalatent_version"] = __version__
        a["params"] = _dumps(canon)
        a["info"] = info_json
        a["dtype"] = dtype
        a["columns"] = "[]"
        self._writable = True
        self._segments_cache = None
        return self

    # ------------------------------------------------------------------ writing
    def append(self, spectrograms: np.ndarray, segments: pd.DataFrame, *,
               params: Mapping[str, Any] | None = None) -> None:
        """Append items.

        Parameters
        ----------
        spectrograms : np.ndarray [shape=(n, F, T), values in [0, 1] for uint8 stores]
        segments : pandas.DataFrame [n rows]
            Must hold ``source``, ``onset_s``, ``offset_s``, ``sample_rate``; ``duration_s``,
            ``channel`` (0) and ``label`` ("") are filled in when missing. The columns must
            be those of earlier appends.
        params : mapping, optional
            Parameters that made these items; a ParameterError naming both sets is raised
            when they differ from the store's.
        """
        if not self._writable:
            raise ParameterError(f"{self.path} is open read-only; open it with mode='a' or "
                                 "SyllableStore.create to append")
        if params is not None and _canonical(dict(params)) != self.params:
            raise ParameterError(
                f"cannot append items made with params {_dumps(_canonical(dict(params)))} to "
                f"store {self.path} made with params {_dumps(self.params)}")
        x = np.asarray(spectrograms)
        d = self._h5["spectrograms"]
        if x.ndim != 3 or x.shape[1:] != d.shape[1:]:
            raise ParameterError(f"spectrograms must have shape (n, {d.shape[1]}, {d.shape[2]}); "
                                 f"got {x.shape}")
        if len(segments) != x.shape[0]:
            raise ParameterError(f"{x.shape[0]} spectrograms but {len(segments)} segment rows")
        if not np.all(np.isfinite(x)):
            raise DataError("spectrograms contain NaN or infinite values")
        table = self._prepare_table(segments)
        kind = self._h5.attrs["dtype"]
        if kind == "uint8":
            if x.size and (x.min() < 0 or x.max() > 1):
                raise DataError("a uint8 store holds values in [0, 1]; got "
                                f"[{x.min():.3g}, {x.max():.3g}]")
            x = np.round(x.astype(np.float32) * 255).astype(np.uint8)
        n0, n = d.shape[0], x.shape[0]
        if n == 0:
            return
        d.resize(n0 + n, axis=0)
        d[n0:] = x
        if "item" in self._h5:             # the netCDF dimension scale (stores since 0.2)
            self._h5["item"].resize(n0 + n, axis=0)
            self._h5["item"][n0:] = np.arange(n0, n0 + n)
        cols = json.loads(self._h5.attrs["columns"])
        g = self._h5["segments"]
        if not cols:
            import h5py

            cols = []
            for name in table.columns:
                v = table[name]
                kind_c = ("f" if v.dtype.kind == "f" else "i" if v.dtype.kind in "iub" else "s")
                dt = {"f": "f8", "i": "i8", "s": h5py.string_dtype("utf-8")}[kind_c]
                col = g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(4096,),
                                       compression="gzip", compression_opts=4)
                if "item" in self._h5:
                    col.dims[0].attach_scale(self._h5["item"])
                cols.append({"name": name, "kind": kind_c})
            self._h5.attrs["columns"] = json.dumps(cols)
        names = [c["name"] for c in cols]
        if list(table.columns) != names:
            missing = sorted(set(names) - set(table.columns))
            extra = sorted(set(table.columns) - set(names))
            if missing or extra:
                raise ParameterError(f"segment columns differ from the store's: missing {missing}, "
                                     f"extra {extra}")
            table = table[names]
        for c in cols:
            ds = g[c["name"]]
            ds.resize(n0 + n, axis=0)
            v = table[c["name"]]
            if c["kind"] == "s":
                ds[n0:] = np.array([("" if pd.isna(s) else str(s)) for s in v], dtype=object)
            elif c["kind"] == "i":
                ds[n0:] = v.to_numpy(np.int64)
            else:
                ds[n0:] = v.to_numpy(np.float64)
        self._segments_cache = None

    @staticmethod
    def _prepare_table(segments: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in _REQUIRED if c not in segments.columns]
        if missing:
            raise ParameterError(f"segments lack required column(s) {missing}; they have "
                                 f"{list(segments.columns)}")
        t = segments.reset_index(drop=True).copy()
        if "duration_s" not in t.columns:
            t["duration_s"] = t["offset_s"] - t["onset_s"]
        for k, v in _DEFAULTS.items():
            if k not in t.columns:
                t[k] = v
        t["label"] = t["label"].fillna("").astype(str)
        t["source"] = t["source"].astype(str)
        front = ["source", "onset_s", "offset_s", "duration_s", "sample_rate", "channel", "label"]
        return t[front + [c for c in t.columns if c not in front]]

    def commit(self) -> None:
        """Close the file and atomically move it onto ``path`` (a no-op for read-only stores)."""
        if not self._writable:
            return
        self._h5.flush()
        self._h5.close()
        os.replace(self._tmp, self.path)
        logger.debug("wrote syllable store %s (%d items)", self.path, self._n_committed())
        self._tmp = None
        self._writable = False
        import h5py

        self._h5 = h5py.File(self.path, "r")

    def _n_committed(self) -> int:
        import h5py

        with h5py.File(self.path, "r") as fh:
            return int(fh["spectrograms"].shape[0])

    def _discard(self) -> None:
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()
        self._tmp = None

    def close(self) -> None:
        """Close the file. A writable store that was not committed is discarded."""
        h5 = getattr(self, "_h5", None)
        if h5 is not None and h5.id.valid:
            h5.close()
        if getattr(self, "_writable", False):
            logger.warning("syllable store %s closed without commit: changes discarded", self.path)
            self._writable = False
        self._discard()

    def __enter__(self) -> "SyllableStore":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self._writable = False
            self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return int(self._h5["spectrograms"].shape[0])

    def __repr__(self) -> str:
        return f"SyllableStore({str(self.path)!r}, n={len(self)}, shape={self.shape})"

    @property
    def shape(self) -> tuple[int, int]:
        """(F, T) of each spectrogram."""
        return tuple(int(s) for s in self._h5["spectrograms"].shape[1:])

    @property
    def spectrograms(self) -> StoreSpectrograms:
        """Lazily indexable (N, F, T) float32 array-like; nothing is read until indexed."""
        return StoreSpectrograms(self._h5["spectrograms"], str(self._h5.attrs["dtype"]), self)

    @property
    def segments(self) -> pd.DataFrame:
        """The segment table (one row per spectrogram, in store order)."""
        if self._segments_cache is None:
            cols = json.loads(self._h5.attrs["columns"])
            g = self._h5["segments"]
            data = {}
            for c in cols:
                ds = g[c["name"]]
                data[c["name"]] = (ds.asstr()[...] if c["kind"] == "s" else ds[...])
            df = pd.DataFrame(data)
            if not cols:
                df = pd.DataFrame({c: pd.Series(dtype=object) for c in _REQUIRED})
            self._segments_cache = df
        return self._segments_cache.copy()

    @property
    def params(self) -> dict:
        """The parameters that made the items (as stored, JSON form)."""
        return json.loads(self._h5.attrs["params"])

    @property
    def info(self) -> dict:
        """Extra facts recorded at creation (calibrated values, input root, ...)."""
        return json.loads(self._h5.attrs["info"])

    @property
    def version(self) -> str:
        """vocalatent version that wrote the store."""
        return str(self._h5.attrs["vocalatent_version"])

    def read(self, idx) -> tuple[np.ndarray, pd.DataFrame]:
        """Spectrograms and segment rows of items ``idx`` (any order).

        Returns
        -------
        spectrograms : np.ndarray [shape=(k, F, T), dtype=float32]
        segments : pandas.DataFrame [k rows]
        """
        arr = np.atleast_1d(np.asarray(idx))
        if arr.dtype == bool:
            arr = np.flatnonzero(arr)
        x = self.spectrograms[arr]
        return x, self.segments.iloc[arr].reset_index(drop=True)

    def stale_reason(self, params: Mapping[str, Any], *, check_version: bool = True) -> str | None:
        """Why this store cannot stand for one made with ``params`` now, or None if it can."""
        want = _canonical(dict(params))
        have = self.params
        if want != have:
            keys = sorted(set(want) | set(have))
            diff = [k for k in keys if want.get(k) != have.get(k)]
            return f"params differ in {diff}: store has {_dumps({k: have.get(k) for k in diff})}, " \
                   f"requested {_dumps({k: want.get(k) for k in diff})}"
        if check_version and self.version != __version__:
            return f"made by vocalatent {self.version}, this is {__version__}"
        return None

    def is_compatible(self, params: Mapping[str, Any], *, check_version: bool = True) -> bool:
        """True when the store was made with exactly ``params`` (and this package version)."""
        return self.stale_reason(params, check_version=check_version) is None
