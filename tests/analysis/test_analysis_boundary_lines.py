"""Sub-grid boundary lines: positions below the grid resolution that move with the map."""

import numpy as np
import pytest

from vocalatent import ParameterError
from vocalatent.analysis.boundary_lines import boundary_lines, distance_fields
from vocalatent.analysis.jacobian import boundaries
from vocalatent.analysis.torus import grid_points, wrapped_diff

R = 32


def _ridges(shift, *, tilt=0.0, r=R):
    """||J|| with two ridges along z2 at z1 = 0.25 + shift + tilt*z2 and 0.75 + ..."""
    p = grid_points(r, 2)
    x, y = p[:, 0], p[:, 1]
    centre = shift + tilt * np.sin(2 * np.pi * y) / (2 * np.pi)
    j = 1.0 + sum(30.0 * np.exp(-wrapped_diff(x, c + centre) ** 2 / (2 * 0.03 ** 2)) for c in (0.25, 0.75))
    return j.reshape(r, r)


def _line_x(lines, y=0.5):
    """z1 where each line crosses z2 = y (linear interpolation between its vertices)."""
    xs = []
    for ln in lines:
        order = np.argsort(ln[:, 1])
        if ln[order, 1].min() <= y <= ln[order, 1].max():
            xs.append(float(np.interp(y, ln[order, 1], ln[order, 0])))
    return np.sort(xs)


@pytest.mark.parametrize("tilt", [0.0, 0.4])
def test_lines_follow_a_shift_of_a_fraction_of_a_cell(tilt):
    expected0 = None
    for frac in (0.0, 0.2, 0.45, 0.7, 0.95):
        s = frac / R
        modes = np.array([[0.5 + s, 0.5], [(0.0 + s) % 1, 0.3]])
        b = boundary_lines(_ridges(s, tilt=tilt), modes=modes)
        xs = _line_x(b.lines)
        assert xs.size == 2
        if expected0 is None:
            expected0 = xs
        # the lines moved by the shift, to well below a tenth of a cell
        np.testing.assert_allclose(xs, expected0 + s, atol=0.05 / R)
    # and they sit on the ridge crests
    crest = 0.25 + tilt * np.sin(2 * np.pi * 0.5) / (2 * np.pi)
    np.testing.assert_allclose(expected0, [crest, crest + 0.5], atol=0.1 / R)


def test_the_grid_mask_cannot_do_this():
    # the border mask of the watershed moves in whole cells: at 0.45 cell of shift it has
    # either not moved or moved a whole cell, while the lines moved 0.45 cell
    s = 0.45 / R
    modes0 = np.array([[0.5, 0.5], [0.0, 0.3]])
    m0 = boundaries(_ridges(0.0), modes=modes0).ridge_mask
    m1 = boundaries(_ridges(s), modes=modes0 + [s, 0]).ridge_mask
    col0 = np.flatnonzero(m0[:, R // 2]).mean()
    col1 = np.flatnonzero(m1[:, R // 2]).mean()
    assert abs((col1 - col0) - 0.45) > 0.3
    l0 = _line_x(boundary_lines(_ridges(0.0), modes=modes0).lines)
    l1 = _line_x(boundary_lines(_ridges(s), modes=modes0 + [s, 0]).lines)
    np.testing.assert_allclose((l1 - l0) * R, 0.45, atol=0.05)


def test_line_strength_is_the_ridge_height_and_lines_are_finer_than_the_grid():
    s = 0.25 / R  # crests at 8.25 and 24.25 cells: a quarter cell from any cell centre or edge
    jac = _ridges(s)
    b = boundary_lines(jac, modes=np.array([[0.5 + s, 0.5], [s, 0.5]]))
    assert set(map(tuple, b.table[["cluster_a", "cluster_b"]].to_numpy())) == {(0, 1)}
    # median log10 ||J|| on a crest of height 31, read off the grid by linear interpolation
    # between nodes a quarter cell from the crest (a little lower than the true crest)
    assert b.table["ridge_log10_jacobian"].to_numpy() == pytest.approx(np.log10(31.0), abs=0.06)
    assert (b.table["strength"] > 1.4).all()
    # every vertex lies within a tenth of a cell of the crest (z2 varies along the line)
    z, which = b.vertices()
    crest_cells = np.array([8.25, 24.25])
    err = np.min(np.abs(z[:, :1] * R - crest_cells[None, :]), axis=1)
    assert err.max() < 0.1
    assert which.max() == len(b.lines) - 1
    # the lines close round the torus: together they span z2 from 0 to 1
    for ln in b.lines:
        assert ln[:, 1].min() == pytest.approx(0.0, abs=1e-9) and ln[:, 1].max() == pytest.approx(1.0, abs=1e-9)


def test_distance_fields_start_at_the_exact_mode_and_the_seam_wraps():
    cost = np.ones((16, 16))
    d = distance_fields(cost, modes=np.array([[0.02, 0.5]]), refine=1)
    # nearest nodes to z1 = 0.02 are at 1/32 (index 0) and on the other side of the seam (index 15)
    assert d[0, 0, 8] == pytest.approx(np.hypot(0.02 - 1 / 32, 0.5 - 8.5 / 16), abs=1e-9)
    assert d[0, 15, 8] == pytest.approx(np.hypot(0.02 + 1 / 32, 0.5 - 8.5 / 16), abs=1e-9)
    with pytest.raises(ParameterError, match="positive"):
        distance_fields(np.zeros((8, 8)), modes=np.array([[0.5, 0.5]]))
    with pytest.raises(ParameterError, match="square 2-D"):
        distance_fields(np.ones((8, 8, 8)), modes=np.array([[0.5, 0.5, 0.5]]))


def test_one_cluster_has_no_lines():
    b = boundary_lines(_ridges(0.0), modes=np.array([[0.5, 0.5]]))
    assert b.lines == [] and len(b.table) == 0
