"""Exact chunked negative binomial kernel: float64 reference, gradients, block memory bound."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats as st
import torch

from vocalatent._utils import ParameterError
from vocalatent.nn import negbin
from vocalatent.nn.negbin import negbin_log_prob, negbin_log_prob_matrix, plan_blocks


def _inputs(B=9, m=6, D=13, *, dtype=torch.float64, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    log_rho = torch.log_softmax(torch.randn(m, D, generator=g, dtype=dtype) * 1.5, dim=1)
    log_l = torch.randn(B, generator=g, dtype=dtype) * 0.5 + np.log(40.0)
    log_theta = torch.randn(D, generator=g, dtype=dtype)
    # counts drawn from the model at a random point, so they are plausible
    mu = torch.exp(log_l[:, None] + log_rho[torch.randint(0, m, (B,), generator=g)])
    x = torch.poisson(mu, generator=g)
    if requires_grad:
        for t in (log_rho, log_l, log_theta):
            t.requires_grad_(True)
    return x, log_rho, log_l, log_theta


def _scipy_reference(x, log_rho, log_l, log_theta):
    x, log_rho, log_l, log_theta = (t.detach().double().numpy() for t in (x, log_rho, log_l, log_theta))
    mu = np.exp(log_l[:, None, None] + log_rho[None, :, :])          # [B, m, D]
    theta = np.exp(log_theta)[None, None, :]
    # scipy's nbinom(n, p): n successes, P(x) = C(x+n-1, x) p^n (1-p)^x, mean n(1-p)/p
    return st.nbinom.logpmf(x[:, None, :], theta, theta / (theta + mu)).sum(axis=-1)


@pytest.mark.parametrize("chunk_size", [1, 7, 50, 10_000])
def test_matches_scipy_float64(chunk_size):
    x, log_rho, log_l, log_theta = _inputs()
    out = negbin_log_prob_matrix(x, log_rho, log_l, log_theta, chunk_size=chunk_size)
    ref = _scipy_reference(x, log_rho, log_l, log_theta)
    assert out.shape == (9, 6) and out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-9)


def test_float32_close_to_reference():
    x, log_rho, log_l, log_theta = _inputs(B=32, m=20, D=50, seed=1)
    ref = _scipy_reference(x, log_rho, log_l, log_theta)
    out = negbin_log_prob_matrix(x.float(), log_rho.float(), log_l.float(), log_theta.float(),
                                 chunk_size=500)
    np.testing.assert_allclose(out.numpy(), ref, rtol=2e-5, atol=2e-3)


def test_large_theta_tends_to_poisson():
    x, log_rho, log_l, _ = _inputs(seed=2)
    log_theta = torch.full((13,), 16.0, dtype=torch.float64)     # theta = 8.9e6
    out = negbin_log_prob_matrix(x, log_rho, log_l, log_theta)
    mu = torch.exp(log_l[:, None, None] + log_rho[None])
    pois = torch.distributions.Poisson(mu).log_prob(x[:, None, :]).sum(-1)
    np.testing.assert_allclose(out.numpy(), pois.numpy(), rtol=1e-6, atol=5e-3)
    assert not np.allclose(negbin_log_prob_matrix(x, log_rho, log_l, log_theta - 14).numpy(),
                           pois.numpy(), atol=0.5)


def test_elementwise_log_prob_matches_scipy():
    x = torch.tensor([0.0, 1.0, 5.0, 30.0], dtype=torch.float64)
    log_mu = torch.log(torch.tensor([0.5, 2.0, 5.0, 10.0], dtype=torch.float64))
    log_theta = torch.log(torch.tensor([0.3, 1.0, 4.0, 100.0], dtype=torch.float64))
    th, mu = log_theta.exp().numpy(), log_mu.exp().numpy()
    ref = st.nbinom.logpmf(x.numpy(), th, th / (th + mu))
    np.testing.assert_allclose(negbin_log_prob(x, log_mu, log_theta).numpy(), ref, rtol=1e-12)


def test_gradcheck_all_inputs():
    x, log_rho, log_l, log_theta = _inputs(B=4, m=3, D=5, requires_grad=True, seed=3)
    x = x.clone().requires_grad_(True)      # gradient w.r.t. x exists (lgamma etc.)

    def f(x_, r, l_, t):
        return negbin_log_prob_matrix(x_, r, l_, t, chunk_size=7)

    assert torch.autograd.gradcheck(f, (x, log_rho, log_l, log_theta), eps=1e-6, atol=1e-6)


def test_gradients_independent_of_chunking():
    grads = []
    for chunk in (3, 10_000):
        x, log_rho, log_l, log_theta = _inputs(requires_grad=True, seed=4)
        w = torch.linspace(-1, 1, 9 * 6, dtype=torch.float64).reshape(9, 6)
        (negbin_log_prob_matrix(x, log_rho, log_l, log_theta, chunk_size=chunk) * w).sum().backward()
        grads.append([t.grad.clone() for t in (log_rho, log_l, log_theta)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_plan_blocks_respects_budget():
    for B, m, D, chunk in [(512, 610, 2000, 2**22), (7, 5, 3, 1), (100, 1000, 50, 999),
                           (3, 2, 10_000, 4096)]:
        b, c, d = plan_blocks(B, m, D, chunk)
        assert 1 <= b <= B and 1 <= c <= m and 1 <= d <= D
        assert b * c * d <= max(chunk, 1)
    assert plan_blocks(10, 10, 10, 10_000) == (10, 10, 10)
    with pytest.raises(ParameterError, match="chunk_size"):
        plan_blocks(2, 2, 2, 0)


def test_no_block_tensor_exceeds_chunk(monkeypatch):
    """Every B x m x D intermediate created in forward and backward has <= chunk_size elements."""
    sizes = []
    real_addcmul = torch.addcmul

    def spy(*args, **kwargs):
        out = real_addcmul(*args, **kwargs)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(negbin.torch, "addcmul", spy)
    x, log_rho, log_l, log_theta = _inputs(B=40, m=30, D=25, requires_grad=True, seed=5)
    for chunk in (500, 5000):
        sizes.clear()
        out = negbin_log_prob_matrix(x, log_rho, log_l, log_theta, chunk_size=chunk)
        out.sum().backward()
        assert sizes and max(sizes) <= chunk
        assert sum(sizes) == 2 * 40 * 30 * 25       # every triple once forward, once backward
    # the autograd graph keeps no B*m*D tensor: everything saved for backward is input-sized
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        negbin_log_prob_matrix(x, log_rho, log_l, log_theta, chunk_size=500)
    assert saved and max(saved) <= max(40 * 30, 30 * 25, 40 * 25)


def test_shape_errors():
    x, log_rho, log_l, log_theta = _inputs()
    with pytest.raises(ParameterError, match="log_rho has 12"):
        negbin_log_prob_matrix(x, log_rho[:, :12], log_l, log_theta)
    with pytest.raises(ParameterError, match=r"log_size_factor must have shape \(9,\)"):
        negbin_log_prob_matrix(x, log_rho, log_l[:3], log_theta)
    with pytest.raises(ParameterError, match=r"log_theta must have shape \(13,\)"):
        negbin_log_prob_matrix(x, log_rho, log_l, log_theta[None])


@pytest.mark.gpu
def test_peak_cuda_memory_bounded_by_chunk():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    dev = torch.device("cuda")
    B, m, D = 512, 610, 2000
    g = torch.Generator(device=dev).manual_seed(0)
    log_rho = torch.log_softmax(torch.randn(m, D, device=dev, generator=g), 1).requires_grad_()
    log_l = torch.full((B,), 7.0, device=dev)
    log_theta = torch.zeros(D, device=dev, requires_grad=True)
    x = torch.poisson(torch.full((B, D), 0.5, device=dev), generator=g)
    peaks = {}
    for chunk in (2**20, 2**24):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        negbin_log_prob_matrix(x, log_rho, log_l, log_theta, chunk_size=chunk).sum().backward()
        torch.cuda.synchronize()
        peaks[chunk] = torch.cuda.max_memory_allocated() - base
        log_rho.grad = log_theta.grad = None
    full = B * m * D * 4
    # a few block tensors plus O(B m + m D), far below one full B x m x D float32 tensor
    assert peaks[2**20] < 8 * 2**20 * 4 + 16 * (B * m + m * D) * 4
    assert peaks[2**20] < full / 20
    assert peaks[2**20] < peaks[2**24]
