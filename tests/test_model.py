"""The QLVM estimator: correctness against brute force, API contract, persistence, errors."""

import copy
import math

import h5py
import numpy as np
import pytest
import torch

from vocalatent import DataError, NotFittedError, ParameterError
from vocalatent.model import QLVM


def _ring_data(n, rng, d_out=12, noise=0.05):
    theta = rng.random(n)
    basis = np.stack([np.cos(2 * np.pi * theta), np.sin(2 * np.pi * theta)], 1)
    W = rng.normal(size=(2, d_out))
    x = 0.5 + 0.2 * basis @ W + 0.03 * np.sin(2 * np.pi * basis @ W) + noise * rng.normal(size=(n, d_out))
    return x.astype(np.float32), theta


def _tiny(**kw):
    opts = dict(max_epochs=2, batch_size=64, random_state=0, verbose=False, device="cpu",
                decoder_options=dict(hidden=(16, 16)))
    opts.update(kw)
    return QLVM(**opts)


@pytest.fixture(scope="module")
def small_model():
    rng = np.random.default_rng(0)
    X, _ = _ring_data(200, rng, d_out=3, noise=0.2)
    model = _tiny(latent_dim=2, max_epochs=3, n_lattice=89).fit(X)
    return model, X


def _grid_log_marginal(model, X, n_grid=512):
    """float64 midpoint-rule integral over the torus (the decoder is smooth and periodic)."""
    module = copy.deepcopy(model.module_).double().cpu()
    g = (np.arange(n_grid) + 0.5) / n_grid
    zz = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    x = torch.as_tensor(X, dtype=torch.float64)
    with torch.no_grad():
        ll = torch.cat([module.log_lik_matrix(x, torch.as_tensor(zz[i:i + 65536]))
                        for i in range(0, len(zz), 65536)], 1)
    return (torch.logsumexp(ll, 1) - math.log(len(zz))).numpy()


def test_estimator_matches_float64_grid_integral(small_model):
    model, X = small_model
    ref = _grid_log_marginal(model, X[:20])
    got = model.score_samples(X[:20], n_lattice=10946, n_shifts=4)
    assert np.max(np.abs(got - ref)) < 1e-3


def test_lattice_has_far_lower_variance_than_monte_carlo(small_model):
    model, X = small_model
    x = torch.as_tensor(X[:20])
    lat = np.stack([model.score_samples(X[:20], n_lattice=610, n_shifts=1, random_state=s) for s in range(12)])
    rng = torch.Generator().manual_seed(0)
    mc = []
    with torch.no_grad():
        for _ in range(12):
            u = torch.rand(610, 2, generator=rng)
            mc.append((torch.logsumexp(model.module_.log_lik_matrix(x, u), 1) - math.log(610)).numpy())
    var_lat, var_mc = lat.var(0).mean(), np.stack(mc).var(0).mean()
    assert var_lat * 100 < var_mc


def test_estimate_includes_minus_log_m(small_model):
    model, X = small_model
    # a single shifted lattice: the estimate is logsumexp(ll) - log m, computed by hand here
    w, pts = model.posterior(X[:5], n_lattice=233, shift=[0.1, 0.2])
    with torch.no_grad():
        ll = model.module_.log_lik_matrix(torch.as_tensor(X[:5]), torch.as_tensor(pts, dtype=torch.float32))
    by_hand = (torch.logsumexp(ll.double(), 1) - math.log(233)).numpy()
    res = model._stream(model._data(X[:5]), 233, 1, seed=0)
    # same lattice size, different shift: close but the -log m term must be there (no +log m offset)
    assert np.all(np.abs(res["log_likelihood"] - by_hand) < 0.5)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-12)


def test_transform_dataset_contents(small_model):
    model, X = small_model
    ds = model.transform_dataset(X[:30], n_lattice=610, n_shifts=2, coords={"source": [f"f{i % 3}.wav" for i in range(30)]})
    assert ds.sizes == {"item": 30, "latent": 2}
    for var in ("embedding", "map_point", "spread", "posterior_entropy", "log_likelihood"):
        assert var in ds
    emb = ds.embedding.values
    assert np.all((emb >= 0) & (emb < 1))
    assert np.all((ds.spread.values >= 0) & (ds.spread.values <= 1))
    assert list(ds.source.values[:3]) == ["f0.wav", "f1.wav", "f2.wav"]
    # the embedding is the posterior circular mean: recompute from the explicit posterior
    w, pts = model.posterior(X[:30], n_lattice=610, shift=[0.0, 0.0])
    ang = 2 * np.pi * pts
    circ = np.mod(np.arctan2(w @ np.sin(ang), w @ np.cos(ang)) / (2 * np.pi), 1)
    diff = np.abs(np.angle(np.exp(2j * np.pi * (circ - emb))))
    # different shifts/lattice unions: agree to within the posterior's own spread
    assert np.median(diff) < 0.05


def test_transform_is_the_dataset_embedding_as_ndarray(small_model):
    model, X = small_model
    ds = model.transform_dataset(X[:20], n_lattice=610, n_shifts=2, random_state=5)
    emb = model.transform(X[:20], n_lattice=610, n_shifts=2, random_state=5)
    assert isinstance(emb, np.ndarray) and emb.shape == (20, 2) and emb.dtype == np.float64
    np.testing.assert_array_equal(emb, ds.embedding.values)


def test_streaming_chunks_do_not_change_results(small_model):
    model, X = small_model
    a = model.score_samples(X[:50], n_lattice=987, n_shifts=2)
    m2 = copy.copy(model)
    m2.memory_budget_mb = 0.01  # forces many lattice chunks and item blocks
    b = m2.score_samples(X[:50], n_lattice=987, n_shifts=2)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    ea = model.transform_dataset(X[:50], n_lattice=987, n_shifts=2)
    eb = m2.transform_dataset(X[:50], n_lattice=987, n_shifts=2)
    np.testing.assert_allclose(ea.embedding.values, eb.embedding.values, atol=1e-6)
    np.testing.assert_allclose(ea.posterior_entropy.values, eb.posterior_entropy.values, atol=1e-6)


def test_posterior_entropy_matches_explicit(small_model):
    model, X = small_model
    w, _ = model.posterior(X[:10], n_lattice=610, shift=[0.3, 0.7])
    explicit = -(w * np.log(np.where(w > 0, w, 1))).sum(1)
    ds = model.transform_dataset(X[:10], n_lattice=610, n_shifts=1)
    assert np.all(explicit > 0) and np.all(ds.posterior_entropy.values > 0)
    assert np.allclose(ds.posterior_entropy.values, explicit, rtol=0.2)


def test_save_load_round_trip(tmp_path, small_model):
    model, X = small_model
    path = model.save(tmp_path / "m.pt")
    loaded = QLVM.load(path, device=model.device_)
    np.testing.assert_array_equal(model.score_samples(X[:10]), loaded.score_samples(X[:10]))
    np.testing.assert_array_equal(model.decode([[0.1, 0.2]]), loaded.decode([[0.1, 0.2]]))
    for key, values in model.history_.items():
        np.testing.assert_array_equal(loaded.history_[key], values)
    with pytest.raises(DataError, match="trained on items of shape"):
        loaded.transform_dataset(np.zeros((4, 7), np.float32))


def test_load_rejects_garbage_and_missing(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="bad.pt"):
        QLVM.load(bad)
    with pytest.raises(DataError, match="no such model file"):
        QLVM.load(tmp_path / "missing.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not a vocalatent.QLVM"):
        QLVM.load(tmp_path / "other.pt")


def test_same_seed_same_embedding_on_cpu():
    rng = np.random.default_rng(1)
    X, _ = _ring_data(120, rng)
    a = _tiny(latent_dim=1, random_state=7).fit(X).transform_dataset(X).embedding.values
    b = _tiny(latent_dim=1, random_state=7).fit(X).transform_dataset(X).embedding.values
    c = _tiny(latent_dim=1, random_state=8).fit(X).transform_dataset(X).embedding.values
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_global_rng_untouched():
    rng = np.random.default_rng(1)
    X, _ = _ring_data(50, rng)
    torch.manual_seed(123)
    np.random.seed(5)
    expected_t, expected_n = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(5)
    _tiny(latent_dim=1, random_state=3).fit(X)
    np.testing.assert_array_equal(torch.rand(3), expected_t)
    np.testing.assert_array_equal(np.random.rand(3), expected_n)


def test_lazy_hdf5_input_matches_numpy(tmp_path):
    rng = np.random.default_rng(2)
    X, _ = _ring_data(150, rng)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = X
    with h5py.File(tmp_path / "x.h5", "r") as f:
        lazy = _tiny(latent_dim=1, random_state=4).fit(f["x"])
        s_lazy = lazy.score_samples(f["x"])
    eager = _tiny(latent_dim=1, random_state=4).fit(X)
    np.testing.assert_allclose(s_lazy, eager.score_samples(X), rtol=1e-5)


def test_validation_early_stopping_and_history():
    rng = np.random.default_rng(3)
    X, _ = _ring_data(200, rng)
    model = _tiny(latent_dim=1, max_epochs=30, patience=2, lr=0.05).fit(X, validation=0.25)
    h = model.history_
    assert len(h["epoch"]) == len(h["train_log_likelihood"]) == len(h["val_log_likelihood"])
    assert np.all(np.isfinite(h["val_log_likelihood"]))
    assert model.best_val_log_likelihood_ == pytest.approx(max(h["val_log_likelihood"]))


def test_conv_decoder_on_image_items():
    rng = np.random.default_rng(4)
    X = rng.random((40, 16, 24)).astype(np.float32)
    model = _tiny(latent_dim=2, n_lattice=55, decoder_options=dict(base_channels=8, hidden=16)).fit(X)
    assert model.decoder_kind_ == "conv"
    assert model.decode([[0.5, 0.5]]).shape == (1, 16, 24)
    assert model.score_samples(X[:3], n_lattice=89, n_shifts=1).shape == (3,)


@pytest.mark.parametrize("likelihood, data", [
    ("bernoulli", lambda r: (r.random((60, 10)) > 0.5).astype(np.float32)),
    ("poisson", lambda r: r.poisson(2, (60, 10)).astype(np.float32)),
    ("multinomial", lambda r: r.poisson(5, (60, 10)).astype(np.float32)),
])
def test_count_and_binary_likelihoods_train(likelihood, data):
    X = data(np.random.default_rng(5))
    model = _tiny(latent_dim=1, likelihood=likelihood, max_epochs=5, lr=1e-2).fit(X)
    h = model.history_["train_log_likelihood"]
    assert h[-1] > h[0]


def test_ring_recovered_up_to_rotation_and_reflection():
    rng = np.random.default_rng(0)
    X, theta = _ring_data(500, rng)
    model = QLVM(1, max_epochs=60, batch_size=32, lr=3e-3, random_state=0, verbose=False, device="cpu").fit(X)
    emb = model.transform_dataset(X, n_shifts=2).embedding.values[:, 0]
    best = max(abs(np.mean(np.exp(2j * np.pi * (s * emb - theta)))) for s in (1, -1))
    assert best >= 0.95


@pytest.mark.parametrize("bad, message", [
    (np.array([[1.0, np.nan]], np.float32), "NaN"),
    (np.array([[1.0, np.inf]], np.float32), "infinite"),
    (np.zeros((0, 4), np.float32), "empty"),
    (np.zeros(5, np.float32), "2-D"),
    (np.zeros((2, 2, 2, 2), np.float32), "2-D"),
])
def test_bad_input_errors(bad, message):
    with pytest.raises(DataError, match=message):
        _tiny(latent_dim=1).fit(bad)


def test_bad_parameters_and_unfitted():
    X = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    with pytest.raises(ParameterError, match="likelihood must be one of"):
        QLVM(likelihood="gauss").fit(X)
    with pytest.raises(ParameterError, match="batch_size"):
        QLVM(batch_size=0).fit(X)
    with pytest.raises(NotFittedError, match="not fitted"):
        QLVM().transform_dataset(X)
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="CUDA is not available"):
            QLVM(device="cuda", max_epochs=1).fit(X)


def test_lazy_nan_detected_with_position(tmp_path):
    X = np.random.default_rng(0).random((30, 3)).astype(np.float32)
    X[17, 1] = np.nan
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = X
    with h5py.File(tmp_path / "x.h5", "r") as f:
        with pytest.raises(DataError, match="NaN"):
            _tiny(latent_dim=1).fit(f["x"])


def test_aggregate_posterior_is_the_mean_of_item_posteriors(small_model):
    model, X = small_model
    w, pts = model.posterior(X[:40], n_lattice=233, shift=[0.2, 0.4])
    agg, pts2 = model.aggregate_posterior(X[:40], n_lattice=233, shift=[0.2, 0.4])
    np.testing.assert_allclose(agg, w.mean(0), atol=1e-12)
    np.testing.assert_array_equal(pts, pts2)


def test_restarts_keep_the_best_validation_fit_and_unfold_a_hard_ring():
    from vocalatent.analysis.torus import circular_correlation

    # a ring pushed through a strongly nonlinear map: single 1-D fits often fold
    rng = np.random.default_rng(0)
    theta = rng.random(600)
    W = rng.normal(size=(4, 20))
    feat = np.stack([np.cos(2 * np.pi * theta), np.sin(2 * np.pi * theta),
                     np.cos(4 * np.pi * theta), np.sin(4 * np.pi * theta)], 1)
    X = (np.tanh(feat @ W) * 0.5 + 0.5 + 0.03 * rng.normal(size=(600, 20))).astype(np.float32)
    opts = dict(max_epochs=100, batch_size=32, lr=3e-3, random_state=0, verbose=False, device="cpu")
    single = QLVM(1, **opts).fit(X, validation=0.2)
    multi = QLVM(1, n_restarts=4, **opts).fit(X, validation=0.2)
    assert len(multi.restart_scores_) == 4
    assert multi.restart_scores_[0] == pytest.approx(single.restart_scores_[0])
    assert multi.best_val_log_likelihood_ == pytest.approx(max(multi.restart_scores_))
    corr = lambda m: circular_correlation(m.transform_dataset(X, n_shifts=1).embedding.values, theta[:, None])
    assert corr(multi) >= 0.95


def test_top_level_entry_points():
    import vocalatent
    from vocalatent.workflow import embed

    assert vocalatent.QLVM is QLVM and vocalatent.embed is embed
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        vocalatent.nope


def test_one_progress_bar_per_fit(monkeypatch, caplog):
    """One visible bar for the whole fit (all restarts, all epochs); validation scoring shows none."""
    import io

    import vocalatent.model as vm

    made = []
    real = vm.progress

    def spy(*args, **kwargs):
        bar = real(*args, file=io.StringIO(), **kwargs)
        made.append((kwargs.get("desc"), not bar.disable, kwargs.get("total"), bar))
        return bar

    monkeypatch.delenv("VOCALATENT_NO_PROGRESS", raising=False)
    caplog.set_level("INFO", logger="vocalatent")  # bars show at INFO (the CLI's default)
    monkeypatch.setattr(vm, "progress", spy)
    X = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    QLVM(latent_dim=1, n_lattice=16, max_epochs=4, n_restarts=2, batch_size=30, device="cpu",
         decoder_options={"hidden": [8]}, random_state=0, verbose=True).fit(X, validation=X[:20])
    shown = [m for m in made if m[1]]
    assert [(d, t) for d, _, t, _ in shown] == [("QLVM fit", 8)]
    assert shown[0][3].n == 8  # advanced once per epoch of every restart


def test_latent_dim_above_three_warns(caplog):
    X = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    with caplog.at_level("WARNING", logger="vocalatent"):
        QLVM(latent_dim=4, n_lattice=64, max_epochs=1, device="cpu", verbose=False,
             decoder_options={"hidden": [8]}).fit(X)
    assert "latent_dim=4" in caplog.text and "exponentially" in caplog.text


def test_channels_last_conv_decoder_matches_the_default_order(tmp_path):
    from vocalatent.nn.decoders import ConvDecoder

    z = torch.rand(17, 2)
    decs, seen = [], {}
    for flag in (False, True, "auto"):
        torch.manual_seed(3)
        dec = ConvDecoder(2, (24, 20), n_params=2, base_channels=8, channels_last=flag)
        dec.conv[0].register_forward_pre_hook(
            lambda mod, args, flag=flag: seen.__setitem__(
                flag, args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous()))
        decs.append(dec)
    outs = [d(z) for d in decs]
    for out in outs:
        out.square().sum().backward()
    assert seen == {False: False, True: True, "auto": True}        # "auto": NHWC on CPU
    for dec, out in zip(decs[1:], outs[1:]):
        np.testing.assert_allclose(out.detach(), outs[0].detach(), rtol=1e-5, atol=1e-6)
        for p0, p1 in zip(decs[0].parameters(), dec.parameters()):
            np.testing.assert_allclose(p1.grad, p0.grad, rtol=1e-4, atol=1e-6)
    with pytest.raises(ParameterError, match="channels_last"):
        ConvDecoder(2, (24, 20), channels_last="yes")
    # inside torch.func.vmap (the Jacobian map) the decoder falls back to NCHW, same values
    from vocalatent.analysis.jacobian import jacobian_norm_grid

    grids = [np.asarray(jacobian_norm_grid(lambda u, d=d: d(u)[:, 0], latent_dim=2, resolution=6))
             for d in (decs[0], decs[2])]
    np.testing.assert_allclose(grids[1], grids[0], rtol=1e-5)
    # the option travels in the checkpoint
    X = np.random.default_rng(0).random((40, 24, 20)).astype(np.float32)
    m = QLVM(2, decoder="conv", n_lattice=34, max_epochs=2, random_state=0, verbose=False, device="cpu",
             decoder_options={"channels_last": False, "base_channels": 8}).fit(X)
    loaded = QLVM.load(m.save(tmp_path / "cl.pt"), device="cpu")
    assert loaded.module_.decoder.channels_last is False
    np.testing.assert_array_equal(loaded.decode([[0.3, 0.6]]), m.decode([[0.3, 0.6]]))
