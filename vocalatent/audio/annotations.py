"""Reading and writing segment annotations in the formats of the field.

Every reader returns the same table: ``onset_s``, ``offset_s`` (float seconds) and ``label``
(str, ``""`` when the file gives none). Labels are kept as they are in the file.

=============  ======================================  ===================================
format         files                                   read with
=============  ======================================  ===================================
``audacity``   Audacity label track export (.txt)      own reader (crowsetta's ``aud-seq``
                                                       rejects unlabelled regions, which
                                                       Audacity writes routinely)
``raven``      Raven selection table (.txt)            own reader (crowsetta ``raven``
                                                       rejects empty labels); written
                                                       with crowsetta ``raven``
``textgrid``   Praat TextGrid (first interval tier)    crowsetta ``textgrid``
``notmat``     evsonganaly ``.not.mat``                crowsetta ``notmat``
``csv``        CSV with onset_s, offset_s[, label]     pandas (extra columns are kept)
``ava``        AVA two-column onset/offset .txt        own reader (``#`` comment lines)
=============  ======================================  ===================================

Annotation files that cover many recordings (:func:`read_multi_annotation`;
:func:`annotations_for` picks one recording's rows):

===============  ============================================  =============================
format           files                                         read with
===============  ============================================  =============================
``generic-seq``  crowsetta/vak generic-seq CSV (``label``,     pandas; rows of a recording
                 ``onset_s``, ``offset_s``, ``notated_path``)  are those whose
                                                               ``notated_path`` names it
``koumura``      BirdsongRecognition ``Annotation.xml``        xml.etree (sample positions
                 (Koumura & Okanoya 2016)                      over the recording's rate)
===============  ============================================  =============================

Writers: :func:`write_segments` writes CSV, Audacity labels (via :func:`write_audacity`) or a
Raven selection table (via crowsetta), each of which :func:`read_annotation` reads back.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._utils import DataError, ParameterError, atomic_path, check_option, is_number, logger
from ..data.matfile import check_mat_file
from .io import audio_info

__all__ = [
    "ANNOTATION_FORMATS",
    "MULTI_FORMATS",
    "annotations_for",
    "find_annotation",
    "read_multi_annotation",
    "read_annotation",
    "write_audacity",
    "write_raven",
    "write_segments",
]

ANNOTATION_FORMATS = ("audacity", "raven", "textgrid", "notmat", "csv", "ava")
MULTI_FORMATS = ("generic-seq", "koumura")
_KOUMURA_NAME = "Annotation.xml"
_RAVEN_LABEL_COLUMNS = ("Annotation", "annotation", "Label", "label", "Species", "Call Type", "Type")


def _table(onsets, offsets, labels) -> pd.DataFrame:
    df = pd.DataFrame({
        "onset_s": np.asarray(onsets, dtype=np.float64),
        "offset_s": np.asarray(offsets, dtype=np.float64),
        "label": ["" if (lab is None or (isinstance(lab, float) and np.isnan(lab))) else str(lab)
                  for lab in labels],
    })
    return df.sort_values("onset_s", kind="stable").reset_index(drop=True)


def _data_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"unreadable annotation file ({exc})", path=path) from None
    return [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def sniff_format(path: str | os.PathLike) -> str:
    """Guess an annotation file's format from its name and (for .txt) its first lines."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".not.mat"):
        return "notmat"
    if name.endswith(".textgrid"):
        return "textgrid"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".txt"):
        lines = _data_lines(path)
        if not lines:
            return "audacity"
        first = lines[0]
        if "Begin Time" in first and "\t" in first:
            return "raven"
        fields = first.split("\t") if "\t" in first else first.split()
        if len(fields) == 2 and all(is_number(f) for f in fields):
            return "ava"
        if len(fields) >= 2 and all(is_number(f) for f in fields[:2]):
            return "audacity"
    raise DataError("cannot tell the annotation format from the name or content; pass "
                    f"format= one of {', '.join(ANNOTATION_FORMATS)}", path=path)


def _read_audacity(path: Path) -> pd.DataFrame:
    on, off, lab = [], [], []
    for i, line in enumerate(_data_lines(path), 1):
        if line.startswith("\\"):  # spectral-selection line of the previous label
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not (is_number(fields[0]) and is_number(fields[1])):
            raise DataError(f"line {i} is not 'start<TAB>end<TAB>label': {line!r}", path=path)
        on.append(float(fields[0]))
        off.append(float(fields[1]))
        lab.append(fields[2].strip() if len(fields) > 2 else "")
    return _table(on, off, lab)


def _read_ava(path: Path) -> pd.DataFrame:
    try:
        arr = np.loadtxt(path, comments="#", ndmin=2)
    except ValueError as exc:
        raise DataError(f"not an AVA onset/offset file ({exc})", path=path) from None
    if arr.size == 0:
        return _table([], [], [])
    if arr.shape[1] != 2:
        raise DataError(f"AVA files have two columns (onset, offset); found {arr.shape[1]}",
                        path=path)
    return _table(arr[:, 0], arr[:, 1], [""] * arr.shape[0])


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"not a readable CSV ({exc})", path=path) from None
    missing = [c for c in ("onset_s", "offset_s") if c not in df.columns]
    if missing:
        raise DataError(f"CSV annotation lacks column(s) {missing}; it has {list(df.columns)}",
                        path=path)
    labels = df["label"] if "label" in df.columns else [""] * len(df)
    try:
        out = _table(df["onset_s"], df["offset_s"], labels)
    except (ValueError, TypeError) as exc:
        raise DataError(f"CSV annotation has non-numeric onset_s/offset_s ({exc})",
                        path=path) from None
    extra = [c for c in df.columns if c not in ("onset_s", "offset_s", "label", "source",
                                                  "duration_s")]
    order = np.argsort(df["onset_s"].to_numpy(), kind="stable")
    for c in extra:
        out[c] = df[c].to_numpy()[order]
    return out


def _read_raven(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"not a readable Raven selection table ({exc})", path=path) from None
    missing = [c for c in ("Begin Time (s)", "End Time (s)") if c not in df.columns]
    if missing:
        raise DataError(f"Raven table lacks column(s) {missing}", path=path)
    if "View" in df.columns and df["View"].nunique() > 1:  # one row per view: keep spectrogram
        spec = df["View"].str.startswith("Spectrogram")
        df = df[spec] if spec.any() else df
    annot_col = next((c for c in _RAVEN_LABEL_COLUMNS if c in df.columns), None)
    labels = df[annot_col] if annot_col else [""] * len(df)
    try:
        on = df["Begin Time (s)"].astype(float)
        off = df["End Time (s)"].astype(float)
    except ValueError as exc:
        raise DataError(f"Raven table has non-numeric times ({exc})", path=path) from None
    return _table(on, off, labels)


def _read_textgrid(path: Path, tier=None) -> pd.DataFrame:
    import crowsetta

    try:
        tg = crowsetta.formats.by_name("textgrid").from_file(path)
    except Exception as exc:  # crowsetta's parser raises many types on malformed files
        raise DataError(f"not a valid Praat TextGrid ({type(exc).__name__}: {exc})",
                        path=path) from None
    if tier is None:
        tier = next((i for i, t in enumerate(tg.tiers) if hasattr(t, "intervals")), None)
        if tier is None:
            raise DataError("TextGrid has no interval tier", path=path)
    seq = tg.to_seq(tier=tier, round_times=False)
    return _table(seq.onsets_s, seq.offsets_s, seq.labels)


def _read_notmat(path: Path) -> pd.DataFrame:
    import crowsetta

    check_mat_file(path)        # scipy's MAT reader crashes the process on some damaged files
    try:
        nm = crowsetta.formats.by_name("notmat").from_file(path)
    except Exception as exc:  # scipy.io / crowsetta raise many types on malformed files
        raise DataError(f"not a valid evsonganaly .not.mat file ({type(exc).__name__}: {exc})",
                        path=path) from None
    return _table(nm.onsets, nm.offsets, nm.labels)


def read_annotation(path: str | os.PathLike, *, format: str | None = None) -> pd.DataFrame:
    """Read one annotation file into a table of segments.

    Parameters
    ----------
    path : path-like
    format : {"audacity", "raven", "textgrid", "notmat", "csv", "ava"} or None
        None: guessed from the name (``.not.mat``, ``.TextGrid``, ``.csv``) or, for ``.txt``,
        the content (Raven header, two numeric columns = AVA, else Audacity).

    Returns
    -------
    pandas.DataFrame
        ``onset_s``, ``offset_s`` (s), ``label`` (str); sorted by onset. CSV files keep their
        extra columns.

    Raises
    ------
    DataError
        Naming the file, when it is missing, malformed, or has an offset before its onset.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such annotation file", path=path)
    fmt = sniff_format(path) if format is None else check_option("format", format,
                                                                  ANNOTATION_FORMATS)
    reader = {"audacity": _read_audacity, "raven": _read_raven, "textgrid": _read_textgrid,
              "notmat": _read_notmat, "csv": _read_csv, "ava": _read_ava}[fmt]
    df = reader(path)
    bad = df["offset_s"] < df["onset_s"]
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"segment {i} ends before it starts (onset_s={df['onset_s'].iloc[i]}, "
                        f"offset_s={df['offset_s'].iloc[i]})", path=path)
    return df


def annotation_candidates(audio_path: str | os.PathLike, *,
                          directory: str | os.PathLike | None = None) -> list[Path]:
    """Annotation file names looked for beside an audio file, in order of preference.

    For ``song.wav``: ``song.wav.csv``, ``song.csv``, ``song.wav.not.mat``, ``song.TextGrid``,
    ``song.wav.TextGrid``, ``song.Table.1.selections.txt``, ``song.wav.txt``, ``song.txt``.
    With ``directory`` they are looked for there instead of beside the audio.
    """
    audio_path = Path(audio_path)
    folder = audio_path.parent if directory is None else Path(directory)
    name, stem = audio_path.name, audio_path.stem
    names = [f"{name}.csv", f"{stem}.csv", f"{name}.not.mat", f"{stem}.TextGrid",
             f"{name}.TextGrid", f"{stem}.Table.1.selections.txt", f"{name}.txt", f"{stem}.txt"]
    return [folder / n for n in names]


def find_annotation(audio_path: str | os.PathLike, *,
                    directory: str | os.PathLike | None = None) -> Path | None:
    """The first existing file of :func:`annotation_candidates`, or None."""
    for cand in annotation_candidates(audio_path, directory=directory):
        if cand.is_file():
            return cand
    return None


def write_audacity(segments: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write segments as an Audacity label track (``start<TAB>end<TAB>label`` per line).

    Times are written with 6 decimals (1 µs). Written atomically.
    """
    path = Path(path)
    labels = segments["label"] if "label" in segments.columns else [""] * len(segments)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for on, off, lab in zip(segments["onset_s"], segments["offset_s"], labels):
                lab = "" if lab is None or (isinstance(lab, float) and np.isnan(lab)) else lab
                fh.write(f"{on:.6f}\t{off:.6f}\t{lab}\n")
    return path


def write_raven(segments: pd.DataFrame, path: str | os.PathLike, *, low_freq_hz: float = 0.0,
                high_freq_hz: float = 0.0) -> Path:
    """Write segments as a Raven selection table (through crowsetta). Written atomically.

    The frequency box of each selection is ``low_freq_hz``..``high_freq_hz`` unless the table
    has ``low_freq_hz``/``high_freq_hz`` columns.
    """
    import crowsetta

    path = Path(path)
    n = len(segments)
    labels = segments["label"] if "label" in segments.columns else [""] * n
    df = pd.DataFrame({
        "Selection": np.arange(1, n + 1),
        "View": ["Spectrogram 1"] * n,
        "Channel": (segments["channel"].to_numpy() + 1 if "channel" in segments.columns
                    else np.ones(n, dtype=int)),
        "begin_time_s": segments["onset_s"].to_numpy(np.float64),
        "end_time_s": segments["offset_s"].to_numpy(np.float64),
        "low_freq_hz": (segments["low_freq_hz"].to_numpy(np.float64)
                        if "low_freq_hz" in segments.columns else np.full(n, float(low_freq_hz))),
        "high_freq_hz": (segments["high_freq_hz"].to_numpy(np.float64)
                         if "high_freq_hz" in segments.columns else np.full(n, float(high_freq_hz))),
        "annotation": ["" if lab is None or (isinstance(lab, float) and np.isnan(lab)) else str(lab)
                       for lab in labels],
    })
    raven = crowsetta.formats.by_name("raven")(df=df, annot_path=path, annot_col="Annotation")
    with atomic_path(path, suffix=".txt") as tmp:
        raven.to_file(tmp)
    return path


def write_segments(segments: pd.DataFrame, path: str | os.PathLike, *, format: str = "csv",
                   **kwargs) -> Path:
    """Write one file's segments as ``csv``, ``audacity`` or ``raven``, atomically.

    Parameters
    ----------
    segments : pandas.DataFrame
        With ``onset_s``, ``offset_s`` and optionally ``label`` (and, for CSV, any column).
    path : path-like
    format : {"csv", "audacity", "raven"}, default="csv"
    **kwargs
        Passed to :func:`write_raven`.
    """
    check_option("format", format, ["csv", "audacity", "raven"])
    for col in ("onset_s", "offset_s"):
        if col not in segments.columns:
            raise ParameterError(f"segments lack column {col!r}; they have {list(segments.columns)}")
    if format == "audacity":
        return write_audacity(segments, path)
    if format == "raven":
        return write_raven(segments, path, **kwargs)
    path = Path(path)
    with atomic_path(path, suffix=".csv") as tmp:
        segments.to_csv(tmp, index=False, float_format="%.6f")
    return path


# ----------------------------------------------------------------- one file, many recordings
def _read_generic_seq(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, keep_default_na=False, dtype={"label": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"not a readable generic-seq CSV ({exc})", path=path) from None
    missing = [c for c in ("onset_s", "offset_s", "notated_path") if c not in df.columns]
    if missing:
        raise DataError(f"generic-seq CSV lacks column(s) {missing}; it has {list(df.columns)}",
                        path=path)
    try:
        on, off = df["onset_s"].astype(float), df["offset_s"].astype(float)
    except ValueError as exc:
        raise DataError(f"generic-seq CSV has non-numeric times ({exc})", path=path) from None
    out = pd.DataFrame({"file": df["notated_path"].astype(str).to_numpy(),
                        "onset_s": on.to_numpy(), "offset_s": off.to_numpy(),
                        "label": df["label"].astype(str).to_numpy() if "label" in df.columns
                        else ""})
    return out


def _read_koumura(path: Path, sample_rate: float | None) -> pd.DataFrame:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"not a valid BirdsongRecognition Annotation.xml ({exc})",
                        path=path) from None
    rows = []
    for i, seq in enumerate(root.iter("Sequence")):
        try:
            wav = seq.findtext("WaveFileName").strip()
            pos = int(seq.findtext("Position"))
            for note in seq.iter("Note"):
                a = pos + int(note.findtext("Position"))
                rows.append((wav, a, a + int(note.findtext("Length")),
                             (note.findtext("Label") or "").strip()))
        except (AttributeError, TypeError, ValueError):
            raise DataError(f"Sequence {i} lacks WaveFileName/Position/Length or has a "
                            "non-integer sample position", path=path) from None
    df = pd.DataFrame(rows, columns=["file", "onset_sample", "offset_sample", "label"])
    sr = 32000.0 if sample_rate is None else float(sample_rate)
    df["onset_s"] = df["onset_sample"] / sr
    df["offset_s"] = df["offset_sample"] / sr
    return df[["file", "onset_s", "offset_s", "label", "onset_sample", "offset_sample"]]


def read_multi_annotation(path: str | os.PathLike, *, format: str | None = None,
                          sample_rate: float | None = None) -> pd.DataFrame:
    """Read an annotation file that covers many recordings.

    Parameters
    ----------
    path : path-like
    format : {"generic-seq", "koumura"} or None
        None: ``.xml`` is Koumura's ``Annotation.xml``, ``.csv`` a generic-seq CSV.
    sample_rate : float, optional
        Koumura files give sample positions: they are divided by this rate (default 32 kHz,
        the BirdsongRecognition recordings' rate; :func:`annotations_for` uses each
        recording's own rate).

    Returns
    -------
    pandas.DataFrame
        ``file`` (the recording named in the annotation, as written there), ``onset_s``,
        ``offset_s``, ``label`` (Koumura also ``onset_sample``, ``offset_sample``).

    Raises
    ------
    DataError
        Naming the file: missing, malformed, lacking columns, or an offset before its onset.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such annotation file", path=path)
    if format is None:
        fmt = {".xml": "koumura", ".csv": "generic-seq"}.get(path.suffix.lower())
        if fmt is None:
            raise DataError("cannot tell the multi-file annotation format from the name; "
                            f"pass format= one of {', '.join(MULTI_FORMATS)}", path=path)
    else:
        fmt = check_option("format", format, MULTI_FORMATS)
    df = _read_koumura(path, sample_rate) if fmt == "koumura" else _read_generic_seq(path)
    bad = df["offset_s"] < df["onset_s"]
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"segment {i} ends before it starts (onset_s={df['onset_s'].iloc[i]}, "
                        f"offset_s={df['offset_s'].iloc[i]})", path=path)
    return df


def _rows_for(table: pd.DataFrame, audio_path: Path, root: Path | None) -> pd.DataFrame | None:
    names = table["file"].astype(str).str.replace("\\", "/", regex=False)
    rel = audio_path.name
    if root is not None:
        try:
            rel = audio_path.relative_to(root).as_posix()
        except ValueError:
            pass
    hit = (names == rel) | (names == audio_path.name) | names.str.endswith("/" + rel)
    if not hit.any():
        return None
    out = table[hit.to_numpy()].drop(columns=["file"])
    return out.sort_values("onset_s", kind="stable").reset_index(drop=True)


_MULTI_CACHE: dict = {}


def _cached_multi(path: Path, sample_rate) -> pd.DataFrame:
    key = (str(path.resolve()), path.stat().st_mtime_ns, sample_rate)
    if key not in _MULTI_CACHE:
        _MULTI_CACHE.clear()  # keep one table: a run uses one multi-file annotation
        _MULTI_CACHE[key] = read_multi_annotation(path, sample_rate=sample_rate)
    return _MULTI_CACHE[key]


#: How a user turns annotation look-up off, in the CLI's own terms.
_OFF = '[audio] annotations = "ignore" in a --config TOML (segment: --annotations ignore)'


def _without_path(exc: DataError, path: Path) -> str:
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def _not_an_annotation(path: Path) -> str | None:
    """Why a candidate file beside a recording is not an annotation at all, or None.

    Only files whose name or content does not say "annotation" are rejected here: a ``.txt``
    whose first data line is neither a Raven header nor numeric times, a ``.csv`` whose header
    has no ``onset_s``/``offset_s`` columns. A file that looks like an annotation but is broken
    is left to :func:`read_annotation`, whose error is reported.
    """
    name = path.name.lower()
    if name.endswith(".csv"):
        try:
            columns = pd.read_csv(path, nrows=0).columns
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
                OSError) as exc:
            return f"not a readable CSV ({type(exc).__name__})"
        if not {"onset_s", "offset_s"} <= set(columns):
            return f"its columns {list(columns)[:6]} hold no onset_s/offset_s"
        return None
    if name.endswith(".txt"):
        try:
            sniff_format(path)
        except DataError:
            return "its first line is neither a Raven header nor start/end times"
    return None


def _usable_candidate(audio_path: Path, directory) -> Path | None:
    """The first candidate annotation file that looks like one; the others get a notice."""
    for cand in annotation_candidates(audio_path, directory=directory):
        if cand.is_symlink() and not cand.exists():
            raise DataError(f"its annotation {cand.name} is a dangling symbolic link (the target "
                            f"{os.readlink(cand)} does not exist); restore the target, remove the "
                            f"link, or never look for annotations: {_OFF}", path=audio_path)
        if not cand.is_file():
            continue
        why = _not_an_annotation(cand)
        if why is None:
            return cand
        logger.warning("%s: not taken as the annotation of %s (%s); %s is segmented by "
                       "amplitude. To never look for annotations: %s", cand, audio_path.name,
                       why, audio_path.name, _OFF)
    return None


def annotations_for(audio_path: str | os.PathLike, *, annotations: str | os.PathLike = "auto",
                    root: str | os.PathLike | None = None
                    ) -> tuple[pd.DataFrame, Path] | None:
    """The annotated segments of one recording, wherever they are, or None.

    Parameters
    ----------
    audio_path : path-like
    annotations : "auto", "ignore", a directory or a file, default="auto"
        ``"auto"``: a file beside the recording (:func:`annotation_candidates`), else a
        Koumura ``Annotation.xml`` in its folder or the folder above (the BirdsongRecognition
        layout ``Bird0/Annotation.xml`` + ``Bird0/Wave/0.wav``). A directory: the candidates
        are looked for there, mirroring the recording's sub-folder under ``root``. A file: a
        multi-file annotation (generic-seq CSV or Koumura XML) whose rows for this recording
        are returned.
    root : path-like, optional
        The root the recording's relative path is taken from (matching ``notated_path``
        entries that hold sub-folders, and mirroring into an annotation directory).

    Returns
    -------
    (pandas.DataFrame, pathlib.Path) or None
        ``onset_s``, ``offset_s``, ``label`` (plus extra columns a CSV had), and the file they
        came from; None when the recording has no annotation there.
    """
    audio_path = Path(audio_path)
    root = None if root is None else Path(root)
    if str(annotations) == "ignore":
        return None
    if str(annotations) != "auto" and Path(annotations).is_file():
        ann = Path(annotations)
        sr = None
        if ann.suffix.lower() == ".xml":
            sr = audio_info(audio_path).sample_rate
        rows = _rows_for(_cached_multi(ann, sr), audio_path, root)
        return None if rows is None else (rows, ann)
    directory = None
    if str(annotations) != "auto":
        sub = Path(".")
        if root is not None:
            try:
                sub = audio_path.parent.relative_to(root)
            except ValueError:
                pass
        directory = Path(annotations) / sub
    found = _usable_candidate(audio_path, directory)
    if found is not None:
        try:
            df = read_annotation(found)
        except DataError as exc:
            raise DataError(f"{_without_path(exc, found)}; it is taken as the annotation of "
                            f"{audio_path.name}: fix it, or turn annotations off with {_OFF}",
                            path=found) from None
        if "notated_path" in df.columns:  # a generic-seq CSV beside the audio: this file's rows
            table = df.rename(columns={"notated_path": "file"})
            rows = _rows_for(table, audio_path, root)
            if rows is None:
                return None
            keep = [c for c in rows.columns if c not in ("annot_path", "sequence", "annotation")]
            return rows[keep], found
        return df, found
    if directory is None:
        for folder in (audio_path.parent, audio_path.parent.parent):
            xml = folder / _KOUMURA_NAME
            if xml.is_file():
                rows = _rows_for(_cached_multi(xml, audio_info(audio_path).sample_rate),
                                 audio_path, folder)
                if rows is not None:
                    return rows, xml
    return None
