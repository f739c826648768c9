"""The lattice estimate of log p(x) converges at the defaults, and says so when it does not.

Issue 11: a data-derived variance floor keeps the default posterior wider than the lattice;
per-item diagnostics (ESS, spread over shifts, converged) come with every estimate; the
adaptive evaluation lattice grows m until the estimate settles.
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import pytest
import torch

from vocalatent import lattice as L
from vocalatent.baselines import IWAE, VAE
from vocalatent.model import QLVM
from vocalatent.nn import estimate
from vocalatent.nn.likelihoods import FLOOR_RELATIVE, LEGACY_MIN_SIGMA, Gaussian, variance_floor
from vocalatent.nn.qlvm import PosteriorAccumulator


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X = (load_digits().data / 16.0).astype(np.float32)
    idx = np.random.default_rng(1).permutation(len(X))
    return X[idx[:1500]], X[idx[1500:]]


@pytest.fixture(scope="module")
def digits_2d(digits):
    """The issue's setting: 2-D, m = 610, 30 epochs, every other setting at its default."""
    tr, _ = digits
    return QLVM(latent_dim=2, n_lattice=610, max_epochs=30, random_state=0, device="cpu",
                verbose=False).fit(tr)


# ------------------------------------------------------------------------------ pure math
def test_variance_floor_from_quantisation_scale_and_nothing():
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 17, size=(300, 40)) / 16.0          # 17 grey levels, step 1/16
    f = variance_floor(grid)
    assert f["rule"] == "quantisation"
    assert f["quantisation_step"] == pytest.approx(1 / 16)
    assert f["sigma"] == pytest.approx(1 / 16 / math.sqrt(12))
    cont = rng.normal(0, 2.0, size=(400, 30))                    # continuous, sd 2
    f = variance_floor(cont)
    assert f["rule"] == "relative"
    assert f["sigma"] == pytest.approx(FLOOR_RELATIVE * np.sqrt(cont.var(0).mean()))
    assert f["sigma"] == pytest.approx(FLOOR_RELATIVE * 2.0, rel=0.1)
    f = variance_floor(np.full((50, 5), 0.3))                    # no scale at all
    assert f["sigma"] == LEGACY_MIN_SIGMA and f["rule"] == "legacy"


def test_gaussian_floor_auto_is_set_up_stored_and_respects_fixed_sigma():
    rng = np.random.default_rng(1)
    x = (rng.integers(0, 17, size=(200, 12)) / 16.0).astype(np.float32)
    x[:, 0] = 0.0                                                 # a constant feature
    like = Gaussian(12)
    like.setup(x)
    floor = 1 / 16 / math.sqrt(12)
    assert like.min_sigma == pytest.approx(floor, rel=1e-6)
    s = like.sigmas().detach().numpy()
    assert s.min() >= floor * (1 - 1e-6)                          # the constant feature too
    assert s[0] == pytest.approx(2 * floor, rel=1e-5)
    # stored in the state dict, so a loaded model scores as it was fitted
    other = Gaussian(12)
    other.load_state_dict(like.state_dict())
    assert other.min_sigma == pytest.approx(like.min_sigma)
    # a checkpoint from before the floor was stored gets the old fixed floor
    legacy = {k: v for k, v in like.state_dict().items() if k != "floor"}
    old = Gaussian(12)
    old.load_state_dict(legacy)
    assert old.min_sigma == pytest.approx(LEGACY_MIN_SIGMA)
    # a fixed sigma is the user's: the floor does not move it
    fixed = Gaussian(12, variance="fixed", sigma=0.01)
    fixed.setup(x)
    np.testing.assert_allclose(fixed.sigmas().numpy(), 0.01, rtol=1e-5)


def test_accumulator_ess_and_pooling_match_float64_reference():
    rng = np.random.default_rng(2)
    n_items, m, shifts, d = 7, 300, 3, 2
    ll = [rng.normal(0, 30, size=(n_items, m)) - 500 for _ in range(shifts)]   # sharp and offset
    accs = []
    for s in range(shifts):
        acc = PosteriorAccumulator(n_items, d, "cpu", stats=False)
        for c0 in range(0, m, 64):                                 # streamed in chunks
            acc.update(torch.as_tensor(ll[s][:, c0:c0 + 64], dtype=torch.float32),
                       torch.zeros(min(64, m - c0), d))
            acc.add_count(min(64, m - c0))
        accs.append(acc)
    ll32 = [np.asarray(torch.as_tensor(a, dtype=torch.float32), dtype=np.float64) for a in ll]

    def ess_ref(a):
        w = np.exp(a - a.max(1, keepdims=True))
        return w.sum(1) ** 2 / (w * w).sum(1)

    for s in range(shifts):
        np.testing.assert_allclose(accs[s].ess().numpy(), ess_ref(ll32[s]), rtol=1e-9)
    pooled = estimate.pool_shifts([a.state() for a in accs])
    allll = np.concatenate(ll32, axis=1)
    ref = np.log(np.exp(allll - allll.max(1, keepdims=True)).sum(1)) + allll.max(1) - math.log(shifts * m)
    np.testing.assert_allclose(pooled["log_likelihood"], ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pooled["ess"], ess_ref(allll), rtol=1e-9)


def test_item_diagnostics_criterion():
    per_shift = np.array([[1.0, 1.0, 5.0, 2.0], [1.01, 1.0, -5.0, 2.0]])
    ess_shift = np.array([[10.0, 1.2, 10.0, 3.0], [12.0, 1.1, 10.0, 3.0]])
    diag = estimate.item_diagnostics(per_shift, ess_shift, ess_shift.sum(0))
    # item 0 fine; item 1 collapsed onto one point (ESS ~ 1); item 2 shifts disagree; item 3 fine
    assert diag["converged"].tolist() == [True, False, False, True]
    one = estimate.item_diagnostics(per_shift[:1], ess_shift[:1], ess_shift[0])
    assert one["converged"].tolist() == [True, False, True, True] and np.isnan(one["shift_sd"]).all()


def test_lattice_sequences():
    assert L.lattice_sequence(2, start=610) == [987, 2584, 6765, 17711, 46368, 121393]
    assert all(n in L.FIBONACCI for n in L.lattice_sequence(2))
    assert L.lattice_sequence(3) == sorted(L.KOROBOV_3D)
    one = L.lattice_sequence(1, start=200)
    assert one[0] == 256 and all(b == 2 * a for a, b in zip(one, one[1:]))
    assert L.lattice_sequence(2, start=10**7) == [121393]


def test_adaptive_lattice_stops_at_tolerance_and_at_the_budget():
    truth = 10.0
    calls = []

    def score(m):                                    # error ~ 100 / m: settles as m grows
        calls.append(m)
        return {"log_likelihood": np.full(5, truth - 100.0 / m), "converged_fraction": 1.0}

    res = estimate.adaptive_lattice(score, [100, 200, 400, 800, 1600, 3200], tol=0.1, max_seconds=None)
    # changes 0.5, 0.25, 0.125, 0.0625 -> stops at 1600
    assert res["n_lattice"] == 1600 and res["tol_met"] and res["stopped_by"] == "tolerance"
    assert res["change"] == pytest.approx(0.0625) and calls == [100, 200, 400, 800, 1600]
    # never stop on agreement while items are unconverged
    res = estimate.adaptive_lattice(lambda m: {"log_likelihood": np.ones(3), "converged_fraction": 0.5},
                                    [10, 20, 40], tol=0.1, max_seconds=None, min_converged=0.99)
    assert res["n_lattice"] == 40 and res["stopped_by"] == "largest lattice"
    # a zero budget: one size, tolerance not met
    res = estimate.adaptive_lattice(score, [100, 200], tol=0.1, max_seconds=0.0)
    assert res["n_lattice"] == 100 and not res["tol_met"] and res["stopped_by"] == "time budget"


# ------------------------------------------------------------------------------ the digits
def test_digits_default_estimate_converged_at_2584_and_10946(digits, digits_2d):
    _, te = digits
    a = digits_2d.score_samples(te, n_lattice=2584, n_shifts=4)
    b, diag = digits_2d.score_samples(te, n_lattice=10946, n_shifts=4, return_diagnostics=True)
    assert np.isfinite(a).all()
    assert abs(b.mean() - a.mean()) < 0.1
    assert diag["converged"].mean() >= 0.99 and np.median(diag["ess"]) > 10
    # the floor is the digits' quantisation noise (17 grey levels)
    assert digits_2d.module_.likelihood.min_sigma == pytest.approx(1 / 16 / math.sqrt(12), rel=1e-5)
    assert digits_2d.training_ess_ > 2


def test_evaluate_auto_reports_lattice_and_convergence(digits, digits_2d, caplog):
    _, te = digits
    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        ev = digits_2d.evaluate(te)
    assert ev["tol_met"] and ev["stopped_by"] == "tolerance" and ev["converged_fraction"] >= 0.99
    assert ev["n_lattice"] in L.lattice_sequence(2) and ev["history"][-1][0] == ev["n_lattice"]
    assert abs(ev["history"][-1][1] - ev["history"][-2][1]) < 0.05
    fixed = digits_2d.evaluate(te, n_lattice=10946, n_shifts=ev["n_shifts"])
    assert abs(fixed["log_likelihood"] - ev["log_likelihood"]) < 0.1
    line = estimate.convergence_summary(ev)
    assert "converged for 100.0 % of items" in line or "converged for 99." in line
    assert f"m = {ev['n_lattice']:,}" in line
    assert not [r for r in caplog.records if "converged" in r.getMessage()]


def test_unresolvable_model_is_flagged(digits, digits_2d, caplog):
    """sigma forced tiny: every posterior collapses onto one lattice point, and every output
    says so (the same items are converged under the fitted model)."""
    _, te = digits
    sharp = copy.deepcopy(digits_2d)
    like = sharp.module_.likelihood
    with torch.no_grad():
        like.floor.fill_(1e-4)
        like.raw_sigma.fill_(math.log(1e-3))
    items = te[:40]
    _, good = digits_2d.score_samples(items, n_lattice=2584, return_diagnostics=True)
    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        _, bad = sharp.score_samples(items, n_lattice=2584, return_diagnostics=True)
        ev = sharp.evaluate(items, n_lattice=2584, refine=False)
        ds = sharp.transform_dataset(items, n_lattice=2584, refine=False)
    assert good["converged"].all()
    assert not bad["converged"].any()
    assert np.median(bad["min_ess"]) < 1.5 and np.median(bad["shift_sd"]) > 1.0
    assert ev["converged_fraction"] == 0.0 and ev["n_not_converged"] == 40
    assert not ds["converged"].values.any() and "ESS" in ds.attrs["convergence_criterion"]
    assert "refined" not in ds
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "converged for 0.0 % of items at m = 2,584" in msgs and "variance floor" in msgs
    # with the refinement (the default) the same items are resolved in local boxes
    ds = sharp.transform_dataset(items, n_lattice=2584)
    assert ds["refined"].values.all() and ds["converged"].values.all() and ds.attrs["refined_items"] == 40


def test_refinement_that_cannot_converge_keeps_the_flags_honest(digits, digits_2d, monkeypatch):
    """Local lattices of 1 and 2 points cannot resolve a box; a Hessian that fails leaves no box:
    both stay flagged unconverged (the estimate is still replaced where a box was placed)."""
    from vocalatent.nn import refine

    _, te = digits
    sharp = copy.deepcopy(digits_2d)
    with torch.no_grad():
        sharp.module_.likelihood.floor.fill_(1e-4)
        sharp.module_.likelihood.raw_sigma.fill_(math.log(1e-3))
    items = te[:12]
    monkeypatch.setitem(refine.REFINE_SIZES, 2, (1, 2))
    ds = sharp.transform_dataset(items, n_lattice=2584, n_shifts=2)
    assert ds["refined"].values.all() and not ds["converged"].values.any()
    assert ds.attrs["converged_fraction"] == 0.0 and ds.attrs["refine_sizes"] == "[1, 2]"
    monkeypatch.setitem(refine.REFINE_SIZES, 2, (55, 233, 987, 4181))
    real = refine.laplace_box
    calls = []

    def fails_on_odd_items(*args, **kwargs):
        calls.append(1)
        return None if len(calls) % 2 else real(*args, **kwargs)

    monkeypatch.setattr(refine, "laplace_box", fails_on_odd_items)
    ds = sharp.transform_dataset(items, n_lattice=2584, n_shifts=2)
    boxed = np.arange(12) % 2 == 1
    # the items without a box are scored again on larger global lattices (6,765 and 17,711),
    # which cannot resolve these posteriors either
    assert ds["refined"].values.all()
    np.testing.assert_array_equal(ds["converged"].values, boxed)
    assert ds.attrs["converged_fraction"] == 0.5


def test_items_no_box_fits_are_scored_on_larger_global_lattices(digits, digits_fixed_sigma, monkeypatch):
    """Where Laplace's box cannot be placed (broad or two-mode posteriors: MNIST's QLVM at
    m = 987 has 16 such items), the refinement scores the item alone on the next lattice sizes;
    with no box at all, the sigma = 0.1 items unconverged at m = 2,584 converge there and equal
    m = 121,393."""
    from vocalatent.nn import refine

    _, te = digits
    m = digits_fixed_sigma
    items = te[:120]
    monkeypatch.setattr(refine, "laplace_box", lambda *a, **k: None)
    plain, dp = m.score_samples(items, n_lattice=2584, n_shifts=2, return_diagnostics=True)
    ll, dg = m.score_samples(items, n_lattice=2584, n_shifts=2, return_diagnostics=True, refine=True)
    todo = ~dp["converged"]
    assert todo.sum() >= 20 and dg["converged"].all()
    np.testing.assert_array_equal(dg["refined"], todo)
    assert (dg["refine_m"] == 0).all()
    fine = m._stream(m._data(items), 121393, 2, seed=21)
    np.testing.assert_allclose(ll[todo], fine["log_likelihood"][todo], atol=0.05)
    np.testing.assert_array_equal(ll[~todo], plain[~todo])


def test_embedding_carries_diagnostics(digits, digits_2d, tmp_path):
    from vocalatent.embedding import read_embedding, write_embedding

    _, te = digits
    ds = digits_2d.transform_dataset(te[:30], n_lattice=2584, n_shifts=2)
    assert ds["converged"].dtype == bool and ds["converged"].values.all()
    assert (ds["ess"].values > 1).all() and (ds["shift_sd"].values < 0.1).all()
    assert ds.attrs["converged_fraction"] == 1.0
    back = read_embedding(write_embedding(ds, tmp_path / "e.nc"))
    np.testing.assert_array_equal(back["converged"].values, ds["converged"].values)
    np.testing.assert_allclose(back["ess"].values, ds["ess"].values)


def test_training_check_warns_on_collapse(digits, caplog):
    tr, _ = digits
    with caplog.at_level(logging.WARNING, logger="vocalatent"):
        m = QLVM(latent_dim=2, n_lattice=610, max_epochs=8, random_state=0, device="cpu", verbose=False,
                 likelihood_options={"min_sigma": 1e-3}).fit(tr[:600])
    assert m.training_ess_ < 1.5
    msg = [r.getMessage() for r in caplog.records if "collapsed" in r.getMessage()]
    assert msg and "larger n_lattice" in msg[0] and "variance floor" in msg[0]


def test_baselines_share_the_floor(digits):
    tr, _ = digits
    floors = []
    for cls in (QLVM, VAE, IWAE):
        kw = {"n_lattice": 144} if cls is QLVM else {}
        m = cls(latent_dim=2, max_epochs=1, random_state=0, device="cpu", verbose=False, **kw).fit(tr[:300])
        floors.append(m.module_.likelihood.min_sigma)
    assert floors[0] == pytest.approx(1 / 16 / math.sqrt(12), rel=1e-5)
    assert floors[0] == floors[1] == floors[2]


@pytest.mark.parametrize("d,n_train,sizes", [(1, 256, (1024, 8192)), (3, 1021, (2039, 8191))])
def test_one_and_three_dimensional_estimates_converge(digits, d, n_train, sizes):
    tr, te = digits
    m = QLVM(latent_dim=d, n_lattice=n_train, max_epochs=15, random_state=0, device="cpu",
             verbose=False).fit(tr)
    a = m.score_samples(te[:150], n_lattice=sizes[0], n_shifts=2)
    b, diag = m.score_samples(te[:150], n_lattice=sizes[1], n_shifts=2, return_diagnostics=True)
    assert abs(b.mean() - a.mean()) < 0.1
    assert diag["converged"].mean() >= 0.99


@pytest.mark.slow
def test_paper_ordering_at_defaults(digits):
    """2-D QLVM > 2-D IWAE > 2-D VAE on held-out log p(x), same default decoder, epochs and
    batch size, each gap more than 3 paired standard errors, every estimate converged."""
    from sklearn.datasets import load_digits

    X = (load_digits().data / 16.0).astype(np.float32)
    idx = np.random.default_rng(3).permutation(len(X))
    tr, te = X[idx[:1500]], X[idx[1500:]]
    kw = dict(latent_dim=2, max_epochs=60, random_state=0, device="cpu", verbose=False)
    per_item, ev = {}, {}
    for name, cls in (("QLVM", QLVM), ("IWAE", IWAE), ("VAE", VAE)):
        model = cls(**kw).fit(tr)
        ev[name] = model.evaluate(te, n_lattice="auto", n_shifts=2)
        per_item[name], diag = model.score_samples(te, n_lattice=ev[name]["n_lattice"], n_shifts=2,
                                                   return_diagnostics=True, refine=True)
        # every item converged: the baselines' tail items, which the clipped lattice map never
        # resolved, are integrated in R^d by the refinement (docs/method.md section 7.4)
        assert ev[name]["tol_met"] and ev[name]["converged_fraction"] == 1.0, (name, ev[name])
        assert diag["converged"].all(), name
    for hi, lo in (("QLVM", "IWAE"), ("IWAE", "VAE")):
        diff = per_item[hi] - per_item[lo]
        se = diff.std(ddof=1) / math.sqrt(len(diff))
        assert diff.mean() > 3 * se, (hi, lo, diff.mean(), se)


# ------------------------------------------------------------------------------ local refinement
def test_box_points_round_trip_and_membership():
    from vocalatent.nn.refine import box_points, in_box

    rng = np.random.default_rng(4)
    ang = 0.7
    R = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]], dtype=torch.float64)
    c = torch.tensor([0.98, 0.03], dtype=torch.float64)           # the box crosses the seam
    h = torch.tensor([0.1, 0.02], dtype=torch.float64)
    t = torch.as_tensor(rng.random((500, 2)))
    u = box_points(t, c, R, h)
    u_torus = u - torch.floor(u)
    assert in_box(u_torus, c, R, h, periodic=True).all()
    assert not in_box(u_torus, c, R, h, periodic=False).all()      # without wrapping, the seam cuts it
    far = torch.as_tensor(rng.random((2000, 2)))
    inside = in_box(far, c, R, h, periodic=True).double().mean()
    assert abs(float(inside) - 0.1 * 0.02) < 0.004                   # the box's area


def test_laplace_box_on_a_gaussian_is_exact():
    from vocalatent.nn.refine import laplace_box

    mu = torch.tensor([0.4, 0.6], dtype=torch.float64)
    cov = torch.tensor([[4e-6, 3e-6], [3e-6, 9e-6]], dtype=torch.float64)
    prec = torch.linalg.inv(cov)

    def loglik(z):
        r = z - mu
        return -0.5 * r @ prec @ r

    box = laplace_box(loglik, mu + 0.003, box_sd=6.0)
    c, R, h = box
    torch.testing.assert_close(c, mu, atol=1e-9, rtol=0)
    sd = torch.sqrt(torch.linalg.eigvalsh(cov))
    torch.testing.assert_close(torch.sort(h).values, 12 * sd, rtol=1e-6, atol=0)
    assert laplace_box(lambda z: (z * z).sum(), mu) is None          # no maximum: no box
    assert laplace_box(lambda z: -((z - mu) ** 2).sum(), mu) is None  # too broad for a box


@pytest.fixture(scope="module")
def digits_fixed_sigma(digits):
    """sigma fixed at 0.1: sharper posteriors than the default learns (a third of the test items
    unconverged at m = 2,584)."""
    tr, _ = digits
    return QLVM(latent_dim=2, n_lattice=610, max_epochs=30, random_state=0, device="cpu", verbose=False,
                likelihood_options={"variance": "fixed", "sigma": 0.1}).fit(tr)


def test_refined_estimate_matches_the_converged_global_one(digits, digits_fixed_sigma):
    """sigma fixed at 0.1: at m = 2,584 a third of the items are unconverged; refining them
    gives the estimate the global lattice reaches only at m = 10,946 (where all converge)."""
    tr, te = digits
    m = digits_fixed_sigma
    items = te[:120]
    data = m._data(items)
    coarse = m._stream(data, 2584, 2, seed=11)
    fine = m._stream(data, 10946, 2, seed=12)
    assert coarse["converged"].mean() < 0.9 and fine["converged"].all()
    ref = m._refine_items(data, coarse, n_shifts=2, seed=13, tol=0.05)
    assert ref["refined_items"] > 0 and ref["converged"].mean() > coarse["converged"].mean()
    sel = ref["converged"] & ~coarse["converged"]
    np.testing.assert_allclose(ref["log_likelihood"][sel], fine["log_likelihood"][sel], atol=0.02)


def test_embedding_log_likelihood_is_refined_to_the_fine_reference(digits, digits_fixed_sigma, tmp_path):
    """The embedding's per-item log p(x): the items unconverged on its lattice (m = 2,584) are
    refined, flagged converged, and equal a 47x finer global lattice (m = 121,393, every item
    converged there) far more closely than the unrefined values."""
    from vocalatent.embedding import read_embedding, write_embedding

    _, te = digits
    m = digits_fixed_sigma
    items = te[:120]
    plain = m.transform_dataset(items, n_lattice=2584, n_shifts=2, refine=False)
    ds = m.transform_dataset(items, n_lattice=2584, n_shifts=2)
    fine = m._stream(m._data(items), 121393, 2, seed=21)
    assert fine["converged"].all()
    todo = ~plain["converged"].values
    assert todo.sum() >= 20
    np.testing.assert_array_equal(ds["refined"].values, todo)
    assert ds["converged"].values.all() and ds.attrs["converged_fraction"] == 1.0
    assert ds.attrs["refined_items"] == todo.sum() and ds.attrs["refine_sizes"] == "[55, 233, 987, 4181]"
    np.testing.assert_allclose(ds["log_likelihood"].values[todo], fine["log_likelihood"][todo], atol=0.02)
    err_refined = np.abs(ds["log_likelihood"].values[todo] - fine["log_likelihood"][todo]).mean()
    err_plain = np.abs(plain["log_likelihood"].values[todo] - fine["log_likelihood"][todo]).mean()
    assert err_refined < err_plain / 4, (err_refined, err_plain)
    # converged items are left as they were; the posterior statistics are the lattice's
    np.testing.assert_array_equal(ds["log_likelihood"].values[~todo], plain["log_likelihood"].values[~todo])
    np.testing.assert_array_equal(ds["embedding"].values, plain["embedding"].values)
    back = read_embedding(write_embedding(ds, tmp_path / "e.nc"))
    np.testing.assert_array_equal(back["refined"].values, todo)


def test_gaussian_prior_tail_items_are_integrated_exactly():
    """Items whose posterior lies in a standard normal prior's far tails (|z| > 3.7, beyond the
    clip of the lattice map) were the baselines' never-converging items: the clipped rule put
    their mass on the clip's boundary. The refinement's box in R^d gives the float64
    brute-force integral of p(x | z) N(z; 0, I) over a fine local grid."""
    from sklearn.datasets import load_digits

    X = (load_digits().data / 16.0).astype(np.float32)
    m = VAE(latent_dim=2, max_epochs=5, random_state=0, device="cpu", verbose=False).fit(X[:600])
    z0 = np.array([[-4.4, 0.6], [4.2, -4.1]])
    x = m.decode(z0).reshape(2, -1).astype(np.float32)
    like = m.module_.likelihood
    ev = m.evaluate(x, n_lattice=2584, n_shifts=2)
    ll, diag = m.score_samples(x, n_lattice=2584, n_shifts=2, refine=True, return_diagnostics=True)
    assert ev["converged_fraction"] == 1.0 and ev["refined_items"] == 2 and diag["refined"].all()
    for i in range(2):
        g1 = np.linspace(z0[i, 0] - 2.5, z0[i, 0] + 2.5, 2001)
        g2 = np.linspace(z0[i, 1] - 2.5, z0[i, 1] + 2.5, 2001)
        Z = np.stack(np.meshgrid(g1, g2, indexing="ij"), -1).reshape(-1, 2)
        with torch.no_grad():
            lp = torch.cat([like.log_prob_matrix(torch.as_tensor(x[i:i + 1]), m.module_.decoder(
                torch.as_tensor(Z[c:c + 200000], dtype=torch.float32)).float()).double()
                for c in range(0, len(Z), 200000)], 1).numpy()[0]
        lp = lp - 0.5 * (Z ** 2).sum(1) - math.log(2 * math.pi)
        edge = lp.reshape(2001, 2001)                               # the grid holds all the mass
        assert max(edge[0].max(), edge[-1].max(), edge[:, 0].max(), edge[:, -1].max()) < lp.max() - 30
        ref = np.logaddexp.reduce(lp) + math.log(g1[1] - g1[0]) + math.log(g2[1] - g2[0])
        assert abs(ll[i] - ref) < 1e-3, (i, ll[i], ref)
        # the clipped lattice map (lattice.to_gaussian) misses it by nats even at m = 121,393
        u = torch.as_tensor((L.lattice(121393, 2) + 0.37) % 1, dtype=torch.float32)
        with torch.no_grad():
            clipped = torch.logsumexp(like.log_prob_matrix(torch.as_tensor(x[i:i + 1]),
                                                           m.module_.params(u)).double(), 1) - math.log(len(u))
        assert ref - float(clipped) > 1.0


def test_evaluate_refines_a_collapsed_model(digits):
    """The old default floor (1e-3): the global lattice gives up, local boxes converge every item,
    and the two local sizes agree."""
    tr, te = digits
    m = QLVM(latent_dim=2, n_lattice=610, max_epochs=30, random_state=0, device="cpu", verbose=False,
             likelihood_options={"min_sigma": 1e-3}).fit(tr)
    items = te[:80]
    ev = m.evaluate(items, n_shifts=2)
    assert ev["stopped_by"].startswith("give up") and ev["refined_items"] == 80
    assert ev["converged_fraction"] == 1.0 and ev["tol_met"] and abs(ev["refine_change"]) < 0.05
    assert ev["refined_globally"] == 0 and ev["refine_m_max"] >= ev["refine_sizes"][1]
    plain = m.evaluate(items, n_shifts=2, refine=False, max_seconds=30)
    assert plain["converged_fraction"] == 0.0 and "refined_items" not in plain
    assert "refined locally" in estimate.convergence_summary(ev)


def test_workflow_rescores_a_cached_model_without_convergence(digits, tmp_path):
    """A model file whose held-out figure was never convergence-checked is scored again (the
    model itself is reused), and the summary line says how far it converged."""
    from vocalatent import workflow as wf
    from vocalatent.model import QLVM as Q

    tr, _ = digits
    cfg = wf.resolve(overrides={"model": {"max_epochs": 3, "n_lattice": 144, "latent_dim": 2}})
    model = wf.train(tr[:400], cfg, out_dir=tmp_path, device="cpu", seed=0, data_key="d", verbose=False)
    held = model.metadata_["heldout"]
    assert "converged_fraction" in held and held["n_lattice"] in L.lattice_sequence(2)
    old = Q.load(tmp_path / "model.pt")
    stale = {k: held[k] for k in ("log_likelihood", "stderr", "per_shift", "n_items", "n_lattice", "n_shifts")}
    old.save(tmp_path / "model.pt", metadata={**old.metadata_, "heldout": stale})
    again = wf.train(tr[:400], cfg, out_dir=tmp_path, device="cpu", seed=0, data_key="d", verbose=False)
    assert "converged_fraction" in again.metadata_["heldout"]
    assert Q.load(tmp_path / "model.pt").metadata_["heldout"]["converged_fraction"] == again.heldout_["converged_fraction"]
    torch.testing.assert_close(again.module_.state_dict()["likelihood.raw_sigma"],
                               old.module_.state_dict()["likelihood.raw_sigma"])
    assert "converged for" in estimate.convergence_summary(again.heldout_)
