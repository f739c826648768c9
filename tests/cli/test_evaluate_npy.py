"""evaluate MODEL DATA.npy: an object, truncated or non-numeric array is one line, never a
traceback (issue 14 item 7)."""

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vocalatent.cli import main

MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_checkpoints" / "qlvm_1d_gaussian.pt"


def _bad(tmp_path, how):
    p = tmp_path / f"{how}.npy"
    if how == "object":
        np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif how == "truncated":
        np.save(p, np.zeros((50, 6)))
        p.write_bytes(p.read_bytes()[:100])
    elif how == "strings":
        np.save(p, np.array([["a"] * 6] * 3))
    elif how == "text":
        p.write_text("1,2,3\n")
    return p


@pytest.mark.parametrize("how", ["object", "truncated", "strings", "text"])
def test_bad_npy_is_one_line_naming_the_file(tmp_path, how):
    p = _bad(tmp_path, how)
    r = CliRunner().invoke(main, ["-q", "evaluate", str(MODEL), str(p)])
    assert r.exit_code != 0 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert str(p) in r.output, r.output
