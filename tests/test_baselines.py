"""VAE / IWAE baselines: bounds against a linear-Gaussian model whose log p(x) is known in closed
form, the shared QMC yardstick, persistence, and small fits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from vocalatent._utils import DataError, NotFittedError, ParameterError
from vocalatent.baselines import (IWAE, VAE, GaussianEncoder, kl_to_standard_normal,
                                  log_importance_weights, posterior_log_prob, sample_posterior)
from vocalatent.model import QLVM
from vocalatent.nn.likelihoods import make_likelihood
from vocalatent.nn.qlvm import QLVMModule

SIGMA = 0.5


class LinearDecoder(nn.Module):
    """z (m, d) -> W z + b as (m, 1, D)."""

    def __init__(self, W, b):
        super().__init__()
        self.W = nn.Parameter(torch.as_tensor(W))
        self.b = nn.Parameter(torch.as_tensor(b))

    def forward(self, z):
        return (z @ self.W.T + self.b)[:, None, :]


class ExactPosterior(nn.Module):
    """The exact posterior of the linear-Gaussian model, as (loc, scale, factor).

    Sigma_post = (I + W^T W / s^2)^-1 is split into c I + U U^T with c below its smallest
    eigenvalue, so a rank-d factor represents it exactly; ``diagonal=True`` needs W^T W
    diagonal and returns factor None."""

    def __init__(self, W, b, sigma, *, diagonal=False, loc_offset=0.0, scale_factor=1.0):
        super().__init__()
        W = np.asarray(W, dtype=np.float64)
        d = W.shape[1]
        cov = np.linalg.inv(np.eye(d) + W.T @ W / sigma**2)
        self.register_buffer("gain", torch.as_tensor(cov @ W.T / sigma**2))
        self.register_buffer("b", torch.as_tensor(np.asarray(b, dtype=np.float64)))
        if diagonal:
            assert np.allclose(cov, np.diag(np.diag(cov)))  # test set-up, not input validation
            self.register_buffer("scale", torch.as_tensor(np.sqrt(np.diag(cov)) * scale_factor))
            self.factor = None
        else:
            c = 0.5 * np.linalg.eigvalsh(cov).min()
            self.register_buffer("scale", torch.full((d,), math.sqrt(c) * scale_factor, dtype=torch.float64))
            self.register_buffer("factor", torch.as_tensor(np.linalg.cholesky(cov - c * np.eye(d)) * scale_factor))
        self.loc_offset = loc_offset

    def forward(self, x):
        loc = (x - self.b) @ self.gain.T + self.loc_offset
        scale = self.scale.to(x.dtype).expand(x.shape[0], -1)
        factor = None if self.factor is None else self.factor.to(x.dtype).expand(x.shape[0], -1, -1)
        return loc, scale, factor


def closed_form_log_px(x, W, b, sigma):
    """log N(x; b, W W^T + sigma^2 I) in float64."""
    x = np.asarray(x, dtype=np.float64)
    cov = W @ W.T + sigma**2 * np.eye(W.shape[0])
    diff = x - b
    sol = np.linalg.solve(cov, diff.T).T
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (diff * sol).sum(1) - 0.5 * logdet - 0.5 * W.shape[0] * math.log(2 * math.pi)


def linear_module(W, b, dtype=torch.float64):
    like = make_likelihood("gaussian", W.shape[0], variance="fixed", sigma=SIGMA)
    return QLVMModule(LinearDecoder(W, b), like, W.shape[1], prior="gaussian").to(dtype)


@pytest.fixture
def linear_model(rng):
    W = rng.normal(size=(4, 2)) * 0.8
    b = rng.normal(size=4) * 0.3
    # latents in the bulk of the prior: for items far in its tails the posterior sits in a thin
    # corner of the unit square and the lattice needs many more points (docs/baselines.md)
    z = rng.uniform(-1.5, 1.5, size=(30, 2))
    x = z @ W.T + b + SIGMA * rng.normal(size=(30, 4))
    return W, b, x


# ------------------------------------------------------------------------ pure math, float64
def test_exact_posterior_weights_equal_log_px(linear_model):
    """With q = the true posterior, every log-weight is log p(x): the ELBO, and IWAE-k with its
    -log k term, all equal the closed form."""
    W, b, x = linear_model
    module = linear_module(W, b)
    xt = torch.as_tensor(x)
    truth = closed_form_log_px(x, W, b, SIGMA)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        lw = log_importance_weights(module, ExactPosterior(W, b, SIGMA), xt, 7, generator=gen)
    assert lw.shape == (7, 30)
    np.testing.assert_allclose(lw.numpy(), np.broadcast_to(truth, (7, 30)), atol=1e-10)
    iwae = (torch.logsumexp(lw, 0) - math.log(7)).numpy()
    np.testing.assert_allclose(iwae, truth, atol=1e-10)


def test_exact_posterior_diagonal(rng):
    Q, _ = np.linalg.qr(rng.normal(size=(4, 2)))
    W = Q * np.array([1.5, 0.4])          # orthogonal columns: diagonal posterior covariance
    b = np.zeros(4)
    x = rng.normal(size=(10, 4))
    with torch.no_grad():
        lw = log_importance_weights(linear_module(W, b), ExactPosterior(W, b, SIGMA, diagonal=True),
                                    torch.as_tensor(x), 5, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(lw.numpy(), np.broadcast_to(closed_form_log_px(x, W, b, SIGMA), (5, 10)),
                               atol=1e-10)


def test_bounds_ordered_and_iwae_tightens_with_k(linear_model):
    """For an imperfect encoder: ELBO <= IWAE-k <= log p(x), IWAE-k increasing in k (means over
    many independent draws, compared beyond 4 standard errors)."""
    W, b, x = linear_model
    module = linear_module(W, b)
    enc = ExactPosterior(W, b, SIGMA, loc_offset=0.4, scale_factor=1.8)
    xt = torch.as_tensor(x)
    truth = closed_form_log_px(x, W, b, SIGMA).mean()
    gen = torch.Generator().manual_seed(2)
    means, ses = {}, {}
    for k in (1, 4, 16, 64):
        reps = 4096 // k
        with torch.no_grad():
            lw = log_importance_weights(module, enc, xt, k * reps, generator=gen).reshape(reps, k, -1)
        per_rep = (torch.logsumexp(lw, 1) - math.log(k)).mean(1).numpy()   # (reps,)
        means[k], ses[k] = per_rep.mean(), per_rep.std(ddof=1) / math.sqrt(reps)
    ks = sorted(means)
    for k_lo, k_hi in zip(ks[:-1], ks[1:]):
        assert means[k_hi] - means[k_lo] > 4 * math.hypot(ses[k_hi], ses[k_lo]), means
    assert means[64] < truth + 4 * ses[64]
    assert truth - means[1] > 3 * (truth - means[64]) > 0           # gap shrinks with k
    # the closed-form-KL ELBO agrees with the mean log-weight (same expectation)
    from vocalatent.baselines import _analytic_elbo

    with torch.no_grad():
        ana = _analytic_elbo(module, enc, xt, 4096, generator=gen).mean().item()
    assert abs(ana - means[1]) < 4 * ses[1]


def test_low_rank_density_and_kl_match_torch(rng):
    B, d, r = 5, 3, 2
    loc = torch.as_tensor(rng.normal(size=(B, d)))
    scale = torch.as_tensor(rng.uniform(0.3, 1.2, size=(B, d)))
    factor = torch.as_tensor(rng.normal(size=(B, d, r)) * 0.7)
    cov = torch.diag_embed(scale**2) + factor @ factor.transpose(1, 2)
    mvn = torch.distributions.MultivariateNormal(loc, covariance_matrix=cov)
    z = sample_posterior(loc, scale, factor, 6, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(posterior_log_prob(z, loc, scale, factor).numpy(), mvn.log_prob(z).numpy(),
                               rtol=1e-10, atol=1e-10)
    std = torch.distributions.MultivariateNormal(torch.zeros(d, dtype=torch.float64),
                                                 covariance_matrix=torch.eye(d, dtype=torch.float64))
    np.testing.assert_allclose(kl_to_standard_normal(loc, scale, factor).numpy(),
                               torch.distributions.kl_divergence(mvn, std).numpy(), rtol=1e-10)
    np.testing.assert_allclose(
        kl_to_standard_normal(loc, scale, None).numpy(),
        torch.distributions.kl_divergence(
            torch.distributions.MultivariateNormal(loc, covariance_matrix=torch.diag_embed(scale**2)), std).numpy(),
        rtol=1e-10)
    # samples have the stated covariance
    zs = sample_posterior(loc[:1], scale[:1], factor[:1], 200000, generator=torch.Generator().manual_seed(4))
    emp = np.cov(zs[:, 0].numpy().T)
    np.testing.assert_allclose(emp, cov[0].numpy(), atol=0.03)


# ------------------------------------------------------------------------ estimators
def _tiny_vae(cls=VAE, **kw):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    opts = dict(likelihood_options={"variance": "fixed", "sigma": SIGMA}, decoder="mlp",
                decoder_options={"hidden": (16,)}, encoder_hidden=(16,), max_epochs=1,
                batch_size=32, random_state=0, verbose=False, device="cpu")
    opts.update(kw)
    return cls(2, **opts).fit(X)


def test_qmc_score_matches_closed_form_for_linear_decoder(linear_model):
    """The VAE's decoder scored by the lattice through the inverse normal CDF gives the exact
    log p(x) of a linear-Gaussian decoder (float32 model, 4 x 6765 points)."""
    W, b, x = linear_model
    model = _tiny_vae()
    model.module_ = linear_module(W, b, torch.float32)
    got = model.score_samples(x.astype(np.float32), n_lattice=6765, n_shifts=4)
    truth = closed_form_log_px(x, W, b, SIGMA)
    assert np.abs(got - truth).max() < 1e-2
    ev = model.evaluate(x.astype(np.float32), n_lattice=6765, n_shifts=4)
    assert abs(ev["log_likelihood"] - truth.mean()) < 1e-2
    # the exact encoder makes every bound equal log p(x); the streamed IWAE bound is chunked
    model.encoder_ = ExactPosterior(W, b, SIGMA).float()
    model.memory_budget_mb = 0.01          # forces one item and one sample per chunk
    np.testing.assert_allclose(model.iwae_bound(x.astype(np.float32), k=10), truth, atol=2e-3)
    model.memory_budget_mb = 512.0
    # ELBO: Monte Carlo reconstruction term (standard error about 0.01 for the mean)
    assert abs(model.elbo(x.astype(np.float32), n_samples=1000).mean() - truth.mean()) < 0.04
    ev = model.evaluate(x.astype(np.float32), n_lattice=2584, n_shifts=2, n_bound_samples=1000)
    assert abs(ev["bound_gap"]) < 0.04 and ev["bound_name"] == "elbo"


def test_iwae_training_bound_has_minus_log_k(linear_model):
    W, b, x = linear_model
    model = _tiny_vae(IWAE, k=9)
    model.module_ = linear_module(W, b, torch.float64)
    model.encoder_ = ExactPosterior(W, b, SIGMA)
    with torch.no_grad():
        bound = model._training_bound(torch.as_tensor(x), torch.Generator().manual_seed(0))
    np.testing.assert_allclose(bound.numpy(), closed_form_log_px(x, W, b, SIGMA), atol=1e-9)


def test_fit_improves_bound_and_beats_it_with_qmc(rng):
    """A small fit on data from a 1-D curve raises the ELBO; the decoder's QMC log p(x) is at
    least its ELBO (up to noise)."""
    t = rng.uniform(-2, 2, size=300)
    X = np.stack([np.sin(t), np.cos(1.5 * t), t / 2, t**2 / 4], 1) + 0.05 * rng.normal(size=(300, 4))
    X = X.astype(np.float32)
    for cls, kw in ((VAE, {}), (IWAE, {"k": 4, "covariance_rank": 1})):
        model = cls(2, decoder="mlp", decoder_options={"hidden": (32, 32)}, encoder_hidden=(32,),
                    max_epochs=10, batch_size=50, lr=3e-3, random_state=1, verbose=False,
                    device="cpu", **kw).fit(X[:200], validation=X[200:250])
        hist = model.history_
        assert set(hist) == {"epoch", "train_bound", "val_bound", "seconds"}
        assert hist["train_bound"][-1] > hist["train_bound"][0] + 1.0
        ev = model.evaluate(X[250:], n_lattice=2584, n_shifts=3)
        assert ev["log_likelihood"] > ev["training_bound"] - 0.05, ev
        assert ev["log_likelihood"] > ev["elbo"] - 0.05
        ds = model.transform_dataset(X[250:360], score=False)
        loc, _ = model.encode(X[250:360])
        np.testing.assert_array_equal(ds["embedding"].values, loc)
        assert "log_likelihood" not in ds
        emb = model.transform(X[250:360])
        assert isinstance(emb, np.ndarray) and emb.shape == (50, 2)
        np.testing.assert_array_equal(emb, loc)


def test_save_load_round_trip(tmp_path):
    model = _tiny_vae(IWAE, k=3, covariance_rank=1)
    X = np.random.default_rng(5).normal(size=(12, 4)).astype(np.float32)
    path = model.save(tmp_path / "iwae.pt")
    back = IWAE.load(path, device="cpu")
    expected = {**model.get_params(), "random_state": model.seed_, "device": "cpu"}
    got = back.get_params()
    # the checkpoint records the decoder's resolved sizes (a superset of what was asked for)
    resolved = json.loads(json.dumps(got.pop("decoder_options")))
    asked = json.loads(json.dumps(expected.pop("decoder_options") or {}))
    assert all(resolved[k] == v for k, v in asked.items())
    assert got.pop("decoder") == model.decoder_kind_
    expected.pop("decoder")
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)
    np.testing.assert_array_equal(back.score_samples(X, n_lattice=987), model.score_samples(X, n_lattice=987))
    np.testing.assert_array_equal(back.iwae_bound(X, 5, random_state=1), model.iwae_bound(X, 5, random_state=1))
    np.testing.assert_array_equal(back.encode(X)[0], model.encode(X)[0])
    np.testing.assert_array_equal(back.decode([[0.1, -0.3]]), model.decode([[0.1, -0.3]]))
    np.testing.assert_equal(back.history_, {k: [float(v) for v in vals] for k, vals in model.history_.items()})
    with pytest.raises(DataError, match="IWAE.load"):
        VAE.load(path)
    with pytest.raises(DataError, match="checkpoint"):
        QLVM.load(path)
    with pytest.raises(DataError, match="no such model file"):
        VAE.load(tmp_path / "missing.pt")


def test_conv_encoder_on_spectrogram_items(rng):
    X = rng.uniform(size=(40, 16, 12)).astype(np.float32)
    model = VAE(2, encoder="auto", decoder="mlp", decoder_options={"hidden": (16,)},
                encoder_hidden=(16,), max_epochs=1, random_state=0, verbose=False, device="cpu").fit(X)
    assert model.encoder_kind_ == "conv"
    assert model.decode(np.zeros((3, 2))).shape == (3, 16, 12)
    f = model.mean_function()
    z = torch.zeros(2, 2, requires_grad=True)
    f(z).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    with pytest.raises(DataError, match="shape"):
        model.encode(rng.uniform(size=(3, 12, 16)).astype(np.float32))


def test_encoder_standardises_inputs():
    enc = GaussianEncoder(3, 2, hidden=(8,))
    x = np.array([[1.0, 10.0, 5.0], [3.0, 14.0, 5.0]])
    enc.setup(x)
    np.testing.assert_allclose(enc.shift.numpy(), [2.0, 12.0, 5.0])
    np.testing.assert_allclose(float(enc.inv_scale), 1 / math.sqrt((1 + 1 + 4 + 4) / 6), rtol=1e-6)


@pytest.mark.parametrize("kw, match", [({"covariance_rank": -1}, "covariance_rank"),
                                        ({"encoder": "rnn"}, "encoder"),
                                        ({"encoder_hidden": ()}, "encoder_hidden"),
                                        ({"k": 0}, "k must be")])
def test_bad_parameters(kw, match):
    cls = IWAE if "k" in kw else VAE
    with pytest.raises(ParameterError, match=match):
        cls(2, verbose=False, **kw).fit(np.zeros((10, 3), dtype=np.float32))


def test_not_fitted():
    with pytest.raises(NotFittedError):
        VAE().elbo(np.zeros((2, 3)))
