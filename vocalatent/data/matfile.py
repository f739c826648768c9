"""Check the structure of a MATLAB ``.mat`` file before scipy's compiled reader sees it.

``scipy.io.loadmat`` (used by evfuncs and crowsetta for evsonganaly ``.not.mat`` annotations)
trusts the element tags of a MAT-file: a ``.not.mat`` whose last element had four bytes zeroed
(a data element of type 0) made scipy 1.17 crash the process with a segmentation fault in the
fuzz test (``tests/test_fuzz_inputs.py``, format ``notmat``). :func:`check_mat_file` walks the
file in Python first and refuses, with one line naming the file and the offset, every structure
the format does not allow:

- level 5 (MATLAB 5–7.2): the 128-byte header (version 0x0100, ``IM``/``MI`` endian mark), then
  elements whose tags name a known data type and whose sizes fit inside their parent; each
  ``miMATRIX`` has its array flags (a known class), dimensions (non-negative) and name, and then,
  by class: numeric and char data whose byte counts match the dimensions (and an imaginary part
  when the complex flag is set), the row/column indices of a sparse matrix inside its shape and
  its column pointers monotone, the cells of a cell array, the field names and field values of a
  struct or object; ``miCOMPRESSED`` elements are inflated (with a size cap) and checked the
  same way. Function handles and opaque (MATLAB class) objects are refused: an annotation file
  never holds them and the reader's code for them is the least exercised.
- level 4: each matrix header's type code, sizes and name length fit the file.
- MATLAB 7.3 files are HDF5 (:mod:`vocalatent.data.hdf5_probe` reads those safely).

It reads the file once (decompressing compressed elements), so the cost is that of the reader.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from .._utils import DataError

__all__ = ["check_mat_file"]

#: miTYPE -> item size in bytes (level 5); 14 (miMATRIX) and 15 (miCOMPRESSED) are containers
_ITEM = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8, 16: 1, 17: 2, 18: 4}
_MATRIX, _COMPRESSED = 14, 15
_CELL, _STRUCT, _OBJECT, _CHAR, _SPARSE = 1, 2, 3, 4, 5
_NUMERIC = set(range(6, 16))             # mxDOUBLE .. mxUINT64
_INFLATE_CAP = 1 << 31                   # refuse a compressed element that inflates beyond 2 GiB
_MAX_DEPTH = 64


class _Bad(Exception):
    def __init__(self, offset: int, what: str):
        super().__init__(f"at byte {offset}: {what}")


def check_mat_file(path: str | os.PathLike) -> None:
    """Refuse a ``.mat`` file whose structure scipy's reader cannot be trusted with.

    Raises
    ------
    DataError
        Naming the file, the byte offset and what is wrong.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the file ({exc.strerror or exc})", path=path) from None
    try:
        if data[:8] == b"\x89HDF\r\n\x1a\n" or data[512:520] == b"\x89HDF\r\n\x1a\n":
            return                       # v7.3 = HDF5; scipy refuses it itself
        if len(data) >= 128 and data[126:128] in (b"IM", b"MI"):
            _check_level5(data)
        else:
            _check_level4(data)
    except _Bad as exc:
        raise DataError(f"not a well-formed MATLAB file ({exc})", path=path) from None


# ------------------------------------------------------------------------------ level 5
def _check_level5(data: bytes) -> None:
    end = "<" if data[126:128] == b"IM" else ">"
    version = struct.unpack(end + "H", data[124:126])[0]
    if version != 0x0100:
        raise _Bad(124, f"unknown MAT-file version 0x{version:04x}")
    pos = 128
    while pos < len(data):
        if len(data) - pos < 8:
            break                        # trailing padding after the last element
        t, n, body, nxt = _tag(data, pos, len(data), end)
        if t == _COMPRESSED:
            inner = _inflate(data, body, n, pos)
            it, inn, ibody, inext = _tag(inner, 0, len(inner), end)
            if it != _MATRIX:
                raise _Bad(pos, f"a compressed element holds data type {it}, not a matrix")
            _matrix(inner, ibody, inn, end, pos, 0)
        elif t == _MATRIX:
            _matrix(data, body, n, end, pos, 0)
        else:
            raise _Bad(pos, f"top-level element of data type {t} (a matrix or compressed "
                            "matrix was expected)")
        pos = nxt


def _tag(buf: bytes, pos: int, limit: int, end: str) -> tuple[int, int, int, int]:
    """(type, nbytes, offset of the data, offset of the next element) of the tag at ``pos``."""
    if limit - pos < 4:
        raise _Bad(pos, "element tag cut off")
    word = struct.unpack(end + "I", buf[pos:pos + 4])[0]
    if word >> 16:                       # small data element: 2 bytes size, 2 bytes type
        t, n = word & 0xFFFF, word >> 16
        if n > 4:
            raise _Bad(pos, f"small data element of {n} bytes (at most 4)")
        if limit - pos < 8:
            raise _Bad(pos, "small data element cut off")
        nxt = pos + 8
        body = pos + 4
    else:
        if limit - pos < 8:
            raise _Bad(pos, "element tag cut off")
        t = word
        n = struct.unpack(end + "I", buf[pos + 4:pos + 8])[0]
        body = pos + 8
        if n > limit - body:
            raise _Bad(pos, f"element of {n} bytes runs past its end ({limit - body} left)")
        pad = 0 if t == _COMPRESSED else (-n) % 8
        nxt = min(body + n + pad, limit)
    if t not in _ITEM and t not in (_MATRIX, _COMPRESSED):
        raise _Bad(pos, f"unknown data type {t}")
    if t in _ITEM and n % _ITEM[t]:
        raise _Bad(pos, f"{n} bytes is not a whole number of items of data type {t}")
    return t, n, body, nxt


def _inflate(data: bytes, body: int, n: int, pos: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data[body:body + n], _INFLATE_CAP)
    except zlib.error as exc:
        raise _Bad(pos, f"compressed element does not inflate ({exc})") from None
    if d.unconsumed_tail:
        raise _Bad(pos, "compressed element inflates beyond 2 GiB")
    return out


def _values(buf: bytes, body: int, n: int, t: int, end: str) -> tuple:
    code = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 12: "q", 13: "Q"}.get(t)
    if code is None:
        raise _Bad(body, f"data type {t} where integers were expected")
    return struct.unpack(f"{end}{n // _ITEM[t]}{code}", buf[body:body + n])


def _sub(buf: bytes, pos: int, limit: int, end: str, what: str) -> tuple[int, int, int, int]:
    if pos >= limit:
        raise _Bad(pos, f"matrix ends before its {what}")
    return _tag(buf, pos, limit, end)


def _matrix(buf: bytes, body: int, n: int, end: str, where: int, depth: int) -> None:
    """Check one miMATRIX whose data is ``buf[body:body+n]``."""
    if depth > _MAX_DEPTH:
        raise _Bad(where, f"cells or structs nested deeper than {_MAX_DEPTH}")
    if n == 0:
        return                           # an empty matrix
    limit = body + n
    t, fn, fb, pos = _sub(buf, body, limit, end, "array flags")
    if t != 6 or fn != 8:
        raise _Bad(body, "array flags are not two uint32")
    flags, nzmax = _values(buf, fb, 8, 6, end)
    cls, complex_ = flags & 0xFF, bool(flags & 0x800)
    if cls in (16, 17) or cls not in ({_CELL, _STRUCT, _OBJECT, _CHAR, _SPARSE} | _NUMERIC):
        raise _Bad(body, f"array class {cls} (function handles and MATLAB objects are not "
                         "read here)" if cls in (16, 17) else f"unknown array class {cls}")
    t, dn, db, pos = _sub(buf, pos, limit, end, "dimensions")
    if t != 5 or dn < 8:
        raise _Bad(pos, "dimensions are not two or more int32")
    dims = _values(buf, db, dn, 5, end)
    if any(d < 0 for d in dims):
        raise _Bad(db, f"negative dimension in {dims}")
    count = 1
    for d in dims:
        count *= d
    t, nn, nb, pos = _sub(buf, pos, limit, end, "name")
    if t not in (1, 2):
        raise _Bad(pos, "array name is not int8 text")
    if cls == _OBJECT:
        t, cn, cb, pos = _sub(buf, pos, limit, end, "class name")
        if t not in (1, 2):
            raise _Bad(pos, "class name is not int8 text")
    if cls in _NUMERIC or cls == _CHAR:
        for part in ("real part", "imaginary part")[: 2 if complex_ else 1]:
            at = pos
            t, pn, pb, pos = _sub(buf, pos, limit, end, part)
            if t in (_MATRIX, _COMPRESSED):
                raise _Bad(at, f"{part} is a container, not numbers")
            if t in (16,) and cls == _CHAR:
                continue                 # UTF-8 text: characters of varying width
            if pn // _ITEM[t] != count:
                raise _Bad(at, f"{part} holds {pn // _ITEM[t]} values for dimensions {dims}")
    elif cls == _SPARSE:
        if len(dims) != 2:
            raise _Bad(db, f"sparse matrix with dimensions {dims}")
        rows, cols = dims
        at = pos
        t, irn, irb, pos = _sub(buf, pos, limit, end, "row indices")
        ir = _values(buf, irb, irn, t, end)
        t, jcn, jcb, pos = _sub(buf, pos, limit, end, "column pointers")
        jc = _values(buf, jcb, jcn, t, end)
        if len(jc) != cols + 1 or jc[0] != 0 or any(b < a for a, b in zip(jc, jc[1:])):
            raise _Bad(at, "sparse column pointers are not monotone from 0 with one per column")
        nnz = jc[-1]
        if nnz > len(ir) or any(not 0 <= r < rows for r in ir[:nnz]):
            raise _Bad(at, "sparse row indices outside the matrix")
        for part in ("real part", "imaginary part")[: 2 if complex_ else 1]:
            at = pos
            t, pn, pb, pos = _sub(buf, pos, limit, end, part)
            if t in (_MATRIX, _COMPRESSED) or pn // _ITEM[t] < nnz:
                raise _Bad(at, f"sparse {part} holds fewer values than its {nnz} entries")
    elif cls == _CELL:
        for _ in range(count):
            at = pos
            t, cn, cb, pos = _sub(buf, pos, limit, end, "cells")
            if t != _MATRIX:
                raise _Bad(at, f"a cell holds data type {t}, not a matrix")
            _matrix(buf, cb, cn, end, at, depth + 1)
    else:                                # struct or object
        t, ln, lb, pos = _sub(buf, pos, limit, end, "field name length")
        if t != 5 or ln != 4:
            raise _Bad(pos, "field name length is not one int32")
        (flen,) = _values(buf, lb, 4, 5, end)
        t, nn, nb, pos = _sub(buf, pos, limit, end, "field names")
        if t not in (1, 2) or flen <= 0 or nn % flen:
            raise _Bad(pos, "field names do not fill whole names of the stated length")
        nfields = nn // flen
        for _ in range(count * nfields):
            at = pos
            t, cn, cb, pos = _sub(buf, pos, limit, end, "field values")
            if t != _MATRIX:
                raise _Bad(at, f"a field holds data type {t}, not a matrix")
            _matrix(buf, cb, cn, end, at, depth + 1)


# ------------------------------------------------------------------------------ level 4
def _check_level4(data: bytes) -> None:
    pos = 0
    if len(data) < 20:
        raise _Bad(0, "too short for a MAT-file header")
    while pos < len(data):
        if len(data) - pos < 20:
            raise _Bad(pos, "matrix header cut off")
        for end in ("<", ">"):
            mopt, mrows, ncols, imagf, namlen = struct.unpack(end + "5i", data[pos:pos + 20])
            if 0 <= mopt < 5000:
                break
        else:
            raise _Bad(pos, "not a MAT-file (no level 5 header, no level 4 type code)")
        m, o, p, t = mopt // 1000, (mopt // 100) % 10, (mopt // 10) % 10, mopt % 10
        if m > 4 or o != 0 or p > 5 or t > 2:
            raise _Bad(pos, f"unknown level 4 type code {mopt}")
        if mrows < 0 or ncols < 0 or imagf not in (0, 1) or namlen < 1:
            raise _Bad(pos, "level 4 matrix header with negative sizes or no name")
        size = (8, 4, 4, 2, 2, 1)[p] * mrows * ncols * (2 if imagf else 1)
        if 20 + namlen + size > len(data) - pos:
            raise _Bad(pos, f"matrix of {mrows}x{ncols} runs past the end of the file")
        pos += 20 + namlen + size
