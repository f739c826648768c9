import numpy as np
import pytest
import torch

from vocalatent import ParameterError
from vocalatent.analysis.geodesic import geodesic, path_length
from vocalatent.analysis.torus import wrapped_diff

from .decoders import FlatTorus, RidgeDecoder


def _crossings(route, x0):
    """z2 values where the (unwrapped) route crosses z1 = x0 (mod 1)."""
    steps = wrapped_diff(route[1:], route[:-1])
    pts = np.concatenate([route[:1], route[:1] + np.cumsum(steps, 0)])
    out = []
    for a, b in zip(pts[:-1], pts[1:]):
        for shift in (-1, 0, 1):
            x = x0 + shift
            if (a[0] - x) * (b[0] - x) < 0:
                t = (x - a[0]) / (b[0] - a[0])
                out.append((a[1] + t * (b[1] - a[1])) % 1)
    return np.array(out)


def test_flat_torus_geodesic_is_the_straight_path():
    f = FlatTorus(2, c=0.2)
    start, end = np.array([0.1, 0.9]), np.array([0.3, 0.25])  # shortest way wraps in z2
    g = geodesic(f, start, end, resolution=32, n_frames=5)
    expected = 2 * np.pi * 0.2 * np.hypot(0.2, 0.35)
    assert g.length == pytest.approx(expected, rel=0.01)
    assert g.straight_length == pytest.approx(expected, rel=0.01)
    assert g.length <= g.straight_length + 1e-9
    np.testing.assert_allclose(g.path[0], start, atol=1e-12)
    np.testing.assert_allclose(g.path[-1], end, atol=1e-12)
    # frames are equally spaced in data space
    steps = np.linalg.norm(np.diff(g.decoded.astype(float), axis=0), axis=1)
    np.testing.assert_allclose(steps, steps.mean(), rtol=0.02)
    np.testing.assert_allclose(g.decoded, f(torch.as_tensor(g.path)).numpy(), atol=1e-6)


def test_geodesic_goes_through_the_gap():
    g = geodesic(RidgeDecoder(gap=True), [0.3, 0.2], [0.7, 0.2], resolution=48)
    cross = _crossings(g.route, 0.5)
    assert cross.size >= 1 and np.all(np.abs(cross - 0.5) < 0.08)
    assert _crossings(g.route, 0.0).size == 0  # never over the gap-less ridge at z1 = 0
    assert g.length < 0.5 * g.straight_length  # straight crosses the ridge (cost ~ 2 x 1.4)
    assert g.method == "grid"


def test_geodesic_crosses_a_ridge_without_gap_at_its_lowest():
    g = geodesic(RidgeDecoder(gap=False), [0.3, 0.2], [0.7, 0.2], resolution=48)
    cross = _crossings(g.route, 0.5)
    assert cross.size == 1
    assert abs(cross[0] - 0.3) < 0.08  # the ridge is lowest (height 1) at z2 = 0.3
    assert g.length <= g.straight_length
    assert g.length >= 2 * 1.0 * 0.95  # it must climb the ridge up and down
    unrefined = geodesic(RidgeDecoder(gap=False), [0.3, 0.2], [0.7, 0.2], resolution=48, refine=False)
    assert g.length <= unrefined.length + 1e-9


def test_ring_geodesic_takes_the_short_way_round():
    f = FlatTorus(1, c=0.5)
    g = geodesic(f, [0.1], [0.85], resolution=64)
    assert g.length == pytest.approx(2 * np.pi * 0.5 * 0.25, rel=0.01)
    assert np.all((g.route[:, 0] <= 0.1 + 1e-9) | (g.route[:, 0] >= 0.85 - 1e-9))


def test_three_dimensional_flat():
    f = FlatTorus(3, c=0.2)
    g = geodesic(f, [0.1, 0.2, 0.3], [0.3, 0.1, 0.45], resolution=8, n_frames=3)
    expected = 2 * np.pi * 0.2 * np.linalg.norm([0.2, 0.1, 0.15])
    assert g.length == pytest.approx(expected, rel=0.01)
    assert g.decoded.shape == (3, 6)


def test_path_length_of_a_known_polyline():
    f = FlatTorus(2, c=0.2)
    length = path_length(f, np.array([[0.9, 0.5], [0.1, 0.5], [0.1, 0.7]]))
    assert length == pytest.approx(2 * np.pi * 0.2 * 0.4, rel=1e-3)


def test_bad_parameters():
    f = FlatTorus(2)
    with pytest.raises(ParameterError, match="connectivity"):
        geodesic(f, [0.1, 0.1], [0.2, 0.2], connectivity=6)
    with pytest.raises(ParameterError, match="same 1-, 2- or 3-D"):
        geodesic(f, [0.1, 0.1], [0.2, 0.2, 0.3])
    with pytest.raises(ParameterError, match="n_frames"):
        geodesic(f, [0.1, 0.1], [0.2, 0.2], n_frames=1)


@pytest.mark.gpu
def test_geodesic_on_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = geodesic(RidgeDecoder(gap=True), [0.3, 0.2], [0.7, 0.2], resolution=48)
    gpu = geodesic(RidgeDecoder(gap=True), [0.3, 0.2], [0.7, 0.2], resolution=48, device="cuda")
    assert gpu.length == pytest.approx(cpu.length, rel=1e-3)
