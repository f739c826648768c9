"""Every B x m likelihood kernel against a float64 per-pair brute force (scipy.stats)."""

import numpy as np
import pytest
import torch
from scipy import stats

from vocalatent import DataError
from vocalatent.nn.likelihoods import Bernoulli, Gaussian, Multinomial, Poisson, make_likelihood

B, M, D = 7, 5, 11


def _pairs(like, x, params):
    # brute force: every (i, j) pair through log_prob_pairs (B*m rows)
    xi = x.repeat_interleave(params.shape[0], 0)
    pj = params.repeat(x.shape[0], 1, 1)
    return like.log_prob_pairs(xi, pj).reshape(x.shape[0], params.shape[0])


def test_gaussian_feature_variance_matches_scipy(rng):
    like = Gaussian(D, variance="feature", sigma=0.2).double()
    x = torch.as_tensor(rng.random((B, D)))
    like.setup(x.numpy())
    like.raw_sigma.data = torch.as_tensor(rng.normal(-2, 0.3, D))
    params = torch.as_tensor(rng.random((M, 1, D)))
    got = like.log_prob_matrix(x, params).detach().numpy()
    s = (np.exp(like.raw_sigma.detach().numpy()) + like.min_sigma)
    ref = np.array([[stats.norm.logpdf(x[i].numpy(), params[j, 0].numpy(), s).sum() for j in range(M)]
                    for i in range(B)])
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(_pairs(like, x, params).detach().numpy(), ref, rtol=1e-10, atol=1e-8)


def test_gaussian_decoded_variance_matches_scipy(rng):
    like = Gaussian(D, variance="decoded").double()
    x = torch.as_tensor(rng.random((B, D)))
    params = torch.as_tensor(np.stack([rng.random((M, D)), rng.normal(size=(M, D))], 1))
    got = like.log_prob_matrix(x, params).numpy()
    s = np.log1p(np.exp(params[:, 1].numpy())) + like.min_sigma
    ref = np.array([[stats.norm.logpdf(x[i].numpy(), params[j, 0].numpy(), s[j]).sum() for j in range(M)]
                    for i in range(B)])
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-8)


def test_gaussian_float32_accuracy_with_centering(rng):
    # spectrogram-like data: D = 4096, values in [0, 1], small sigma; float32 vs float64
    d = 4096
    x64 = rng.random((16, d))
    mu64 = np.clip(x64[:8] + rng.normal(0, 0.02, (8, d)), 0, 1)
    like32 = Gaussian(d, variance="fixed", sigma=0.05)
    like32.setup(x64.astype(np.float32))
    like64 = Gaussian(d, variance="fixed", sigma=0.05).double()
    like64.setup(x64)
    got = like32.log_prob_matrix(torch.as_tensor(x64, dtype=torch.float32),
                                 torch.as_tensor(mu64[:, None], dtype=torch.float32)).double().numpy()
    ref = like64.log_prob_matrix(torch.as_tensor(x64), torch.as_tensor(mu64[:, None])).numpy()
    # absolute error in nats, on values of magnitude ~1e5
    assert np.max(np.abs(got - ref)) < 0.5
    assert np.max(np.abs((got - got.max(1, keepdims=True)) - (ref - ref.max(1, keepdims=True)))) < 0.5


def test_bernoulli_matches_scipy(rng):
    like = Bernoulli()
    x = torch.as_tensor((rng.random((B, D)) > 0.5).astype(float))
    params = torch.as_tensor(rng.normal(size=(M, 1, D)))
    got = like.log_prob_matrix(x, params).numpy()
    p = 1 / (1 + np.exp(-params[:, 0].numpy()))
    ref = np.array([[stats.bernoulli.logpmf(x[i].numpy(), p[j]).sum() for j in range(M)] for i in range(B)])
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    np.testing.assert_allclose(_pairs(like, x, params).numpy(), ref, rtol=1e-10)


def test_poisson_matches_scipy(rng):
    like = Poisson()
    x = torch.as_tensor(rng.poisson(3, (B, D)).astype(float))
    params = torch.as_tensor(rng.normal(1, 0.5, (M, 1, D)))
    got = like.log_prob_matrix(x, params).numpy()
    lam = np.exp(params[:, 0].numpy())
    ref = np.array([[stats.poisson.logpmf(x[i].numpy(), lam[j]).sum() for j in range(M)] for i in range(B)])
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    np.testing.assert_allclose(_pairs(like, x, params).numpy(), ref, rtol=1e-10)


def test_poisson_offset_matches_scipy(rng):
    like = Poisson(offset=True)
    x = torch.as_tensor(rng.poisson(3, (B, D)).astype(float))
    params = torch.as_tensor(rng.normal(size=(M, 1, D)))
    got = like.log_prob_matrix(x, params).numpy()
    rho = np.exp(params[:, 0].numpy()); rho /= rho.sum(1, keepdims=True)
    lib = x.numpy().sum(1)
    ref = np.array([[stats.poisson.logpmf(x[i].numpy(), lib[i] * rho[j]).sum() for j in range(M)]
                    for i in range(B)])
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    np.testing.assert_allclose(_pairs(like, x, params).numpy(), ref, rtol=1e-10)


def test_multinomial_matches_scipy(rng):
    like = Multinomial()
    x = rng.poisson(3, (B, D)).astype(float)
    params = torch.as_tensor(rng.normal(size=(M, 1, D)))
    got = like.log_prob_matrix(torch.as_tensor(x), params).numpy()
    rho = np.exp(params[:, 0].numpy()); rho /= rho.sum(1, keepdims=True)
    ref = np.array([[stats.multinomial.logpmf(x[i], x[i].sum(), rho[j]) for j in range(M)] for i in range(B)])
    np.testing.assert_allclose(got, ref, rtol=1e-9)


@pytest.mark.parametrize("name, bad, message", [
    ("bernoulli", np.array([[0.0, 0.5]]), "binary"),
    ("poisson", np.array([[1.0, -1.0]]), "non-negative"),
    ("multinomial", np.array([[1.0, 2.5]]), "integer"),
    ("poisson_offset", np.array([[0.3, 2.0]]), "integer"),
])
def test_support_errors(name, bad, message):
    with pytest.raises(DataError, match=message):
        make_likelihood(name, 2).check_data(bad)


def test_kernel_never_builds_b_m_d(rng):
    # the kernel's autograd graph holds O(B*m + m*D) tensors: check the largest saved tensor
    d, b, m = 2048, 64, 96
    like = Gaussian(d)
    x = torch.as_tensor(rng.random((b, d)), dtype=torch.float32)
    params = torch.tensor(rng.random((m, 1, d)), dtype=torch.float32, requires_grad=True)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = like.log_prob_matrix(x, params)
    out.sum().backward()
    assert max(sizes) <= max(b, m) * d


def test_shared_variance_kernel_gradients_match_autograd(rng):
    # the hand-written backward against plain autograd of the same formula, float64
    from vocalatent.nn.likelihoods import _SharedVarianceKernel

    monkey = pytest.MonkeyPatch()
    monkey.setattr(_SharedVarianceKernel, "ROWS", 3)  # several row blocks, one partial
    xc = torch.as_tensor(rng.normal(size=(6, 9)))
    center = torch.as_tensor(rng.normal(size=9))
    mu = torch.tensor(rng.normal(size=(7, 9)), requires_grad=True)
    log_s = torch.tensor(rng.normal(-1, 0.2, 9), requires_grad=True)
    assert torch.autograd.gradcheck(_SharedVarianceKernel.apply, (xc, mu, center, log_s))
    g = torch.as_tensor(rng.normal(size=(6, 7)))
    out = _SharedVarianceKernel.apply(xc, mu, center, log_s)
    d_mu, d_ls = torch.autograd.grad(out, (mu, log_s), g)
    iv = torch.exp(-2 * log_s)
    ref = -0.5 * (((xc[:, None, :] - (mu - center)[None]) ** 2) * iv).sum(-1) - log_s.sum()
    r_mu, r_ls = torch.autograd.grad(ref, (mu, log_s), g)
    torch.testing.assert_close(out, ref.detach())
    torch.testing.assert_close(d_mu, r_mu)
    torch.testing.assert_close(d_ls, r_ls)
    monkey.undo()
