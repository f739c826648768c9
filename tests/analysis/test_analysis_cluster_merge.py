"""The decoder merge of clusters (analysis/clusters.py: merge_by_decoder): known answers on a
synthetic map where one type is laid out as two lumps, and a control where the second lump is
a type of its own."""

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from vocalatent import ParameterError
from vocalatent.analysis.clusters import (decoder_separation, find_clusters, merge_by_decoder, projection_dip,
                                         separation_index)
from vocalatent.analysis.torus import wrap

from .decoders import von_mises_bump

D = 40
SPREAD = 0.3  # within-type sd along the type's own axis of variation (data units)
NOISE = 0.05  # pixel noise


class LumpDecoder:
    """Softly piecewise-constant decoder over lumps on the 2-D torus: near lump j it decodes
    ``images[j]``; the weights are normalised von Mises bumps round the lump centres."""

    def __init__(self, centres, images):
        self.centres = torch.as_tensor(np.asarray(centres), dtype=torch.float32)
        self.images = torch.as_tensor(np.asarray(images), dtype=torch.float32)

    def __call__(self, z):
        z = torch.as_tensor(z, dtype=torch.float32)
        w = torch.stack([von_mises_bump(z[:, 0] - c[0], 8.0) * von_mises_bump(z[:, 1] - c[1], 8.0)
                         for c in self.centres], 1) + 1e-12
        return (w / w.sum(1, keepdim=True)) @ self.images


def _split_map(rng, *, second_is_a_type: bool, n=400, n_rare=0):
    """Items of type A (its within-type variation along ``v``) laid out as two lumps by the
    sign of that variation, a distinct type B, and optionally a rare type R near B.

    With ``second_is_a_type``, the second lump's items are a type of their own instead: the
    same map, but their images are ``a + 2 v`` (6.7 within-type sds from A)."""
    a, b, r, v = rng.normal(0, 1, (4, D))
    v /= np.linalg.norm(v)
    centres = np.array([[0.2, 0.2], [0.2, 0.55], [0.7, 0.4], [0.7, 0.4 + 8 * 0.02]])
    s = SPREAD * rng.standard_normal(2 * n)
    lump = (s > 0).astype(int)  # the map chops A's continuum of variation into two lumps
    x_a = a + s[:, None] * v
    truth = np.zeros(2 * n, int)
    if second_is_a_type:
        x_a[lump == 1] = a + (2.0 + np.abs(s[lump == 1]))[:, None] * v
        truth[lump == 1] = 1
    x_b = b + SPREAD * rng.standard_normal((n, 1)) * v
    x_r = r + SPREAD * rng.standard_normal((n_rare, 1)) * v
    x = np.concatenate([x_a, x_b, x_r]) + NOISE * rng.standard_normal((2 * n + n + n_rare, D))
    where = np.r_[lump, np.full(n, 2), np.full(n_rare, 3)]
    truth = np.r_[truth, np.full(n, 2), np.full(n_rare, 3)]
    z = wrap(centres[where] + 0.02 * rng.standard_normal((where.size, 2)))
    images = np.stack([x[where == j].mean(0) for j in range(4 if n_rare else 3)])
    return z, x, truth, LumpDecoder(centres[:len(images)], images)


def test_one_type_in_two_lumps_is_merged():
    rng = np.random.default_rng(0)
    z, x, truth, f = _split_map(rng, second_is_a_type=False)
    dens = find_clusters(z, resolution=128)
    assert dens.n_clusters == 3  # the density sees three lumps
    merged = find_clusters(z, resolution=128, decoder=f, data=x)
    assert merged.n_clusters == 2
    assert adjusted_rand_score(truth, merged.labels) == pytest.approx(1.0)
    # the separation of the two lumps of A is small, that of A and B large
    sep = decoder_separation(z, decoder=f, data=x, labels=dens.labels)
    lumps = [np.bincount(dens.labels[(truth == 0) & (z[:, 1] < 0.4)]).argmax(),
             np.bincount(dens.labels[(truth == 0) & (z[:, 1] > 0.4)]).argmax()]
    other = np.bincount(dens.labels[truth == 2]).argmax()
    assert sep[lumps[0], lumps[1]] < 4.0
    assert sep[lumps[0], other] > 50.0 and sep[lumps[1], other] > 50.0


def test_two_real_types_on_the_same_map_stay_apart_and_a_rare_type_survives():
    rng = np.random.default_rng(1)
    z, x, truth, f = _split_map(rng, second_is_a_type=True, n_rare=20)
    merged = find_clusters(z, resolution=128, decoder=f, data=x)
    assert merged.n_clusters == 4
    assert adjusted_rand_score(truth, merged.labels) > 0.99
    # a looser threshold than the default would merge them: the answer is the threshold's
    assert find_clusters(z, resolution=128, decoder=f, data=x, separation=40.0).n_clusters < 4


def test_merge_result_is_consistent():
    rng = np.random.default_rng(2)
    z, x, truth, f = _split_map(rng, second_is_a_type=False)
    dens = find_clusters(z, resolution=128)
    merged = merge_by_decoder(dens, z, decoder=f, data=x.reshape(len(z), 4, 10))  # item shape kept
    counts = np.bincount(merged.labels)
    assert np.all(np.diff(counts) <= 0)  # 0 = largest
    assert merged.modes.shape == (merged.n_clusters, 2)
    # every grid node keeps the merged cluster of its basin: items' labels follow their node
    from vocalatent.analysis.clusters import nearest_node

    assert np.array_equal(merged.grid_labels[nearest_node(z, 128)], merged.labels)
    with pytest.raises(ParameterError, match="decoder and data"):
        find_clusters(z, resolution=128, decoder=f)
    with pytest.raises(ParameterError, match="values per item"):
        merge_by_decoder(dens, z, decoder=f, data=x[:, :10])


def _arc_map(rng, *, n=150, second_type=False):
    """One type whose continuum of variation (``s`` uniform over 6 widths along ``v``) a map
    lays out as four lumps in a row, holding 1, 2, 2 and 1 widths of it; with
    ``second_type``, a distinct type B as one more lump beside the row."""
    a, b, v = rng.normal(0, 1, (3, D))
    v /= np.linalg.norm(v)
    s = rng.uniform(0, 6, 6 * n)
    piece = np.digitize(s, [1.0, 3.0, 5.0])
    x = a + SPREAD * s[:, None] * v
    where, truth = piece, np.zeros(s.size, int)
    if second_type:
        x = np.concatenate([x, b + SPREAD * rng.uniform(0, 1, (n, 1)) * v])
        where, truth = np.r_[piece, np.full(n, 4)], np.r_[truth, np.ones(n, int)]
    x = x + NOISE * rng.standard_normal(x.shape)
    centres = np.array([[0.12, 0.3], [0.32, 0.3], [0.52, 0.3], [0.72, 0.3], [0.4, 0.75]])
    spread = np.array([0.015, 0.025, 0.025, 0.015, 0.015])[where]
    z = wrap(centres[where] + spread[:, None] * rng.standard_normal((where.size, 2)))
    images = np.stack([x[where == j].mean(0) for j in range(where.max() + 1)])
    return z, x, truth, LumpDecoder(centres[:len(images)], images)


def test_pieces_of_one_continuum_are_joined_by_single_linkage_and_the_continuum_test():
    rng = np.random.default_rng(0)
    z, x, truth, f = _arc_map(rng, second_type=True)
    dens = find_clusters(z, resolution=128)
    assert dens.n_clusters == 5  # four pieces of the arc and type B
    sep = decoder_separation(z, decoder=f, data=x, labels=dens.labels)
    arc = [int(np.bincount(dens.labels[(truth == 0) & (np.abs(z[:, 0] - c) < 0.05)]).argmax())
           for c in (0.12, 0.32, 0.52, 0.72)]
    # neighbours along the arc are close (an end and its neighbour: medians 1.5 widths apart,
    # about 4 sds of the end piece; the two middle pieces: 2 widths, 2.7 sds), the two ends
    # are not (5 widths apart)
    assert all(sep[p, q] < 5.0 for p, q in zip(arc[:-1], arc[1:]))
    assert sep[arc[0], arc[-1]] > 10.0
    single = merge_by_decoder(dens, z, decoder=f, data=x, linkage="single")
    assert single.n_clusters == 2
    assert adjusted_rand_score(truth, single.labels) == pytest.approx(1.0)
    # without the continuum test the centroid rule joins the middle pieces first and then
    # compares each end with that block (medians 2.5 widths apart, 6.8 sds of the end): an
    # end stays apart
    centroid = merge_by_decoder(dens, z, decoder=f, data=x, continuum_separation=6.0)
    assert centroid.n_clusters >= 3
    assert adjusted_rand_score(truth, centroid.labels) < 0.95
    # with it (the default) the end and the block fill the space between their medians
    # (one mode along the decoder's direction), so the end is joined: the two types
    default = merge_by_decoder(dens, z, decoder=f, data=x)
    assert default.n_clusters == 2
    assert adjusted_rand_score(truth, default.labels) == pytest.approx(1.0)
    # find_clusters passes the linkage on
    assert find_clusters(z, resolution=128, decoder=f, data=x, linkage="single").n_clusters == 2
    with pytest.raises(ParameterError, match="linkage"):
        merge_by_decoder(dens, z, decoder=f, data=x, linkage="complete")


def _dip_reference(values, groups):
    """projection_dip by the exact (unbinned) float64 KDE on a fine grid between the medians."""
    v = np.asarray(values, float)
    m1, m2 = sorted((np.median(v[groups]), np.median(v[~groups])))
    h = 1.06 * v.std() * v.size ** -0.2
    x = np.linspace(m1, m2, 4001)
    f = np.exp(-0.5 * ((x[:, None] - v[None, :]) / h) ** 2).sum(1)
    j = int(np.argmin(f))
    return f[j] / min(f[:j + 1].max(), f[j:].max())


def test_projection_dip_known_answers_and_brute_force_reference():
    rng = np.random.default_rng(5)
    # two normal modes 8 sds apart: a deep gap (the pooled bandwidth, 1.1 sds here, smooths
    # each mode to sd 1.5, so the midpoint keeps 2 exp(-0.5 (4 / 1.5)^2) = 0.06 of a peak)
    v = np.r_[rng.normal(0, 1, 400), rng.normal(8, 1, 400)]
    g = np.arange(800) < 400
    assert 0.02 < projection_dip(v, g) < 0.1
    # one uniform range cut into a narrow and a wide piece: the separation index is large
    # (medians 3 narrow widths apart, ~8 sds of the narrow piece) but it is one mode
    u = rng.uniform(0, 6, 1200)
    narrow = u < 1.0
    assert separation_index(u, narrow) > 7.0
    assert projection_dip(u, narrow) > 0.8
    # one normal split at its median
    w = rng.normal(0, 1, 1000)
    assert projection_dip(w, w < np.median(w)) == pytest.approx(1.0, abs=0.02)
    # the binned estimate agrees with the exact KDE on mixtures of every depth
    for gap in (2.0, 3.0, 4.0, 5.0):
        v = np.r_[rng.normal(0, 1, 300), rng.normal(gap, 0.7, 150)]
        g = np.arange(450) < 300
        assert projection_dip(v, g) == pytest.approx(_dip_reference(v, g), abs=0.02)
    with pytest.raises(ParameterError, match="2 or more"):
        projection_dip(v[:3], np.array([True, False, False]))


def test_continuum_test_keeps_two_types_apart_and_joins_one_continuum():
    """Two clusters at the same separation index (~8, between the thresholds 6 and 10): two
    narrow types stay apart (their data leave a gap), the narrow end of one type's uniform
    continuum is joined to the rest (its data fill the space between the medians)."""
    rng = np.random.default_rng(11)
    a, v = rng.normal(0, 1, (2, D))
    v /= np.linalg.norm(v)
    z = wrap(np.r_[np.array([0.2, 0.5]) + 0.015 * rng.standard_normal((100, 2)),
                   np.array([0.6, 0.5]) + 0.03 * rng.standard_normal((500, 2))])
    lumps = np.r_[np.zeros(100, int), np.ones(500, int)]
    centres = np.array([[0.2, 0.5], [0.6, 0.5]])
    cases = {"two types": np.r_[rng.normal(0, 1, 100), rng.normal(8.5, 1, 500)],
             "one continuum": np.r_[rng.uniform(0, 1, 100), rng.uniform(1, 6, 500)] * 2.7}
    for name, s in cases.items():
        x = a + SPREAD * s[:, None] * v + NOISE * rng.standard_normal((600, D))
        images = np.stack([x[lumps == j].mean(0) for j in range(2)])
        f = LumpDecoder(centres, images)
        dens = find_clusters(z, resolution=128)
        assert dens.n_clusters == 2, name
        sep = decoder_separation(z, decoder=f, data=x, labels=dens.labels)[0, 1]
        assert 6.5 < sep < 9.5, (name, sep)
        merged = merge_by_decoder(dens, z, decoder=f, data=x)
        assert merged.n_clusters == (2 if name == "two types" else 1), name
        # switched off (continuum_separation at or below separation, 0 too), both stay apart
        for off in (6.0, 0.0):
            assert merge_by_decoder(dens, z, decoder=f, data=x, continuum_separation=off).n_clusters == 2
    with pytest.raises(ParameterError, match="continuum_dip"):
        merge_by_decoder(dens, z, decoder=f, data=x, continuum_dip=1.5)


def test_separation_index_known_answers():
    rng = np.random.default_rng(3)
    n = 20000
    g = np.arange(2 * n) < n
    v = np.r_[rng.normal(0, 1, n), rng.normal(4, 1, n)]
    assert separation_index(v, g) == pytest.approx(4.0, abs=0.08)
    # the tighter group is the yardstick: 3 / min(1, 2)
    v = np.r_[rng.normal(0, 1, n), rng.normal(3, 2, n)]
    assert separation_index(v, g) == pytest.approx(3.0, abs=0.08)
    assert separation_index(v, ~g) == pytest.approx(3.0, abs=0.08)  # symmetric
    # robust: 5 % of wild items in one group barely move it
    v = np.r_[rng.normal(0, 1, n), rng.normal(4, 1, n)]
    v[:n // 20] = 50.0
    assert separation_index(v, g) == pytest.approx(4.0, abs=0.4)
    with pytest.raises(ParameterError, match="2 or more"):
        separation_index([0.0, 1.0, 2.0], [True, False, False])


def test_accessor_clusters_with_a_model_merge_the_lumps():
    import xarray as xr

    import vocalatent.accessor  # noqa: F401  (registers ds.vl)

    rng = np.random.default_rng(0)
    z, x, truth, f = _split_map(rng, second_is_a_type=False)

    class Model:  # anything with mean_function()
        def mean_function(self):
            return f

    ds = xr.Dataset({"embedding": (("item", "latent"), z)})
    plain = ds.vl.clusters(resolution=128)
    merged = ds.vl.clusters(resolution=128, model=Model(), data=x)
    assert plain.sizes["cluster_id"] == 3 and merged.sizes["cluster_id"] == 2
    assert adjusted_rand_score(truth, merged["cluster"].values) == pytest.approx(1.0)
    assert merged["cluster"].attrs["decoder_merge"] == 1 and plain["cluster"].attrs["decoder_merge"] == 0
    assert merged["cluster"].attrs["separation"] == pytest.approx(6.0)
    assert merged["cluster"].attrs["linkage"] == "centroid" and merged["cluster"].attrs["excess_mass"] == 1
    assert merged["cluster"].attrs["continuum_separation"] == pytest.approx(10.0)
    assert merged["cluster"].attrs["continuum_dip"] == pytest.approx(0.5)
    assert merged["cluster"].attrs["decoder_dip"] == pytest.approx(1.5)
    assert "decoder_dip" not in plain["cluster"].attrs
    other = ds.vl.clusters(resolution=128, model=Model(), data=x, linkage="single", excess_mass=False,
                           continuum_separation=6.0)
    assert other["cluster"].attrs["linkage"] == "single" and other["cluster"].attrs["excess_mass"] == 0
    assert other["cluster"].attrs["continuum_separation"] == pytest.approx(6.0)
    assert adjusted_rand_score(truth, other["cluster"].values) == pytest.approx(1.0)


def _two_lumps_with_a_thin_gap(seed=1, n=60, radius=0.1, centres=(0.3, 0.6), n_gap=6):
    """Two broad uniform discs of ``n`` items and ``n_gap`` items scattered in the gap between
    them: the shape of the song test's failure (issue of session 10), a density dip that is
    real but, at this size, within 2.5 noise sds of the pass. ``side``: 0 left, 1 right."""
    rng = np.random.default_rng(seed)
    parts = []
    for c in centres:
        a, r = rng.uniform(0, 2 * np.pi, n), radius * np.sqrt(rng.uniform(0, 1, n))
        parts.append(np.c_[c + r * np.cos(a), 0.5 + r * np.sin(a)])
    gap = np.c_[rng.uniform(centres[0] + radius, centres[1] - radius, n_gap),
                0.5 + rng.normal(0, 0.03, n_gap)]
    z = wrap(np.concatenate(parts + [gap]))
    side = (z[:, 0] > np.mean(centres)).astype(int)
    return z, side, np.array([[centres[0], 0.5], [centres[1], 0.5]])


def test_a_borderline_dip_is_a_border_when_the_decoder_sees_two_types():
    z, side, centres = _two_lumps_with_a_thin_gap()
    # the setting: the density alone joins the two lumps at the default 2.5 sds, though the
    # dip is at least 1.5 noise sds deep (1.5 keeps them apart)
    assert adjusted_rand_score(side, find_clusters(z, resolution=64).labels) < 0.1
    assert adjusted_rand_score(side, find_clusters(z, resolution=64, significance=1.5).labels) > 0.9
    rng = np.random.default_rng(0)
    a, b, v = rng.normal(0, 1, (3, D))
    v /= np.linalg.norm(v)
    spread = SPREAD * rng.standard_normal((len(z), 1)) * v + NOISE * rng.standard_normal((len(z), D))
    # two types: the left items are a's, the right ones b's
    x2 = np.where(side[:, None] == 0, a, b) + spread
    f2 = LumpDecoder(centres, [a, b])
    two = find_clusters(z, resolution=64, decoder=f2, data=x2)
    assert two.n_clusters == 2 and adjusted_rand_score(side, two.labels) > 0.9
    # one type whose within-type variation the map lays out from left to right: its two sides
    # differ along v by much less than their spread, so the dip alone decides (merged)
    x1 = a + 0.5 * SPREAD * (2 * side[:, None] - 1) * v + spread
    f1 = LumpDecoder(centres, [x1[side == 0].mean(0), x1[side == 1].mean(0)])
    one = find_clusters(z, resolution=64, decoder=f1, data=x1)
    assert one.n_clusters == 1
    # without the decoder's say on the dip (decoder_dip=None) or when the dip is shallower than
    # decoder_dip, the two types are one cluster again, as before the rule
    for dd in (None, 2.45):
        assert find_clusters(z, resolution=64, decoder=f2, data=x2, decoder_dip=dd).n_clusters == 1
    with pytest.raises(ParameterError, match="decoder_dip"):
        find_clusters(z, resolution=64, decoder=f2, data=x2, decoder_dip=-1.0)
