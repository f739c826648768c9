"""CUDA checks of the QLVM engine: CPU/CUDA agreement, bf16, kernel memory, device errors.

Every test here is marked ``gpu`` and skipped where CUDA is absent; run them with
``python -m pytest -m gpu tests/test_gpu.py`` (``benchmarks/gpu_check.sh`` does). They import
only the engine (vocalatent.model, vocalatent.nn, vocalatent.lattice) so that they run on a GPU
machine without the audio and data layers' dependencies.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vocalatent import ParameterError
from vocalatent.model import QLVM
from vocalatent.nn.likelihoods import Bernoulli, Gaussian, Multinomial, Poisson

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

GIB = 2**30


def _ring(n, *, seed=0, d_out=12, noise=0.05):
    """Points on a circle pushed through a random smooth map into [0, 1]-ish features."""
    rng = np.random.default_rng(seed)
    theta = rng.random(n)
    basis = np.stack([np.cos(2 * np.pi * theta), np.sin(2 * np.pi * theta)], 1)
    W = rng.normal(size=(2, d_out))
    x = 0.5 + 0.2 * basis @ W + 0.03 * np.sin(2 * np.pi * basis @ W) + noise * rng.normal(size=(n, d_out))
    return x.astype(np.float32), theta


def _blobs(n, size=16, *, seed=0):
    """Small images: one Gaussian blob at a random position, plus noise, in [0, 1]."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(3, size - 3, (n, 2, 1, 1))
    ii, jj = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    img = np.exp(-((ii - c[:, 0]) ** 2 + (jj - c[:, 1]) ** 2) / 8.0)
    return np.clip(img + 0.05 * rng.random((n, size, size)), 0, 1).astype(np.float32)


def _model(device, **kw):
    opts = dict(n_lattice=233, batch_size=128, max_epochs=3, random_state=0, verbose=False,
                decoder_options=dict(hidden=(32, 32)), device=device)
    opts.update(kw)
    return QLVM(2, **opts)


def _circ_dist(a, b):
    d = np.abs(a - b) % 1.0
    return np.minimum(d, 1 - d)


def test_fit_on_cuda_matches_cpu():
    X, _ = _ring(512)
    cpu = _model("cpu").fit(X)
    gpu = _model("cuda").fit(X)
    assert gpu.device_.type == "cuda"
    assert next(gpu.module_.parameters()).is_cuda
    h_cpu = np.array(cpu.history_["train_log_likelihood"])
    h_gpu = np.array(gpu.history_["train_log_likelihood"])
    # Same seed, same shifts, same batches: the trajectories differ only by float32 rounding.
    np.testing.assert_allclose(h_gpu, h_cpu, rtol=1e-4, atol=1e-3)
    s_cpu = cpu.score_samples(X[:128], n_lattice=2584, n_shifts=2)
    s_gpu = gpu.score_samples(X[:128], n_lattice=2584, n_shifts=2)
    np.testing.assert_allclose(s_gpu, s_cpu, rtol=1e-3, atol=1e-2)
    e_cpu = cpu.transform_dataset(X[:128], n_lattice=2584, n_shifts=2)
    e_gpu = gpu.transform_dataset(X[:128], n_lattice=2584, n_shifts=2)
    assert np.median(_circ_dist(e_gpu["embedding"].values, e_cpu["embedding"].values)) < 1e-3


def test_one_model_scores_the_same_on_both_devices(tmp_path):
    X, _ = _ring(300, seed=1)
    cpu = _model("cpu").fit(X)
    path = cpu.save(tmp_path / "m.pt")
    gpu = QLVM.load(path, device="cuda")
    assert gpu.device_.type == "cuda"
    kw = dict(n_lattice=6765, n_shifts=3, random_state=7)
    np.testing.assert_allclose(gpu.score_samples(X, **kw), cpu.score_samples(X, **kw), rtol=1e-5, atol=1e-4)
    t_cpu, t_gpu = cpu.transform_dataset(X, **kw), gpu.transform_dataset(X, **kw)
    assert _circ_dist(t_gpu["embedding"].values, t_cpu["embedding"].values).max() < 1e-4
    np.testing.assert_allclose(t_gpu["spread"].values, t_cpu["spread"].values, atol=1e-5)
    w_cpu, pts_cpu = cpu.posterior(X[:50], n_lattice=987, shift=[0.3, 0.6])
    w_gpu, pts_gpu = gpu.posterior(X[:50], n_lattice=987, shift=[0.3, 0.6])
    np.testing.assert_array_equal(pts_gpu, pts_cpu)
    np.testing.assert_allclose(w_gpu, w_cpu, atol=1e-5)
    z = np.random.default_rng(0).random((40, 2))
    np.testing.assert_allclose(gpu.decode(z), cpu.decode(z), atol=1e-5)
    # and back: a checkpoint written from the CUDA model loads on CPU with the same scores
    back = QLVM.load(gpu.save(tmp_path / "g.pt"), device="cpu")
    np.testing.assert_allclose(back.score_samples(X, **kw), cpu.score_samples(X, **kw), rtol=1e-6, atol=1e-5)


def test_same_seed_same_embedding_on_cuda():
    X, _ = _ring(400, seed=2)
    a = _model("cuda").fit(X).transform_dataset(X, n_lattice=987, n_shifts=2)
    b = _model("cuda").fit(X).transform_dataset(X, n_lattice=987, n_shifts=2)
    assert _circ_dist(a["embedding"].values, b["embedding"].values).max() < 1e-4


def test_streaming_chunks_on_cuda_do_not_change_results():
    X, _ = _ring(300, seed=3)
    model = _model("cuda").fit(X)
    kw = dict(n_lattice=4181, n_shifts=2, random_state=3)
    whole = model.score_samples(X, **kw)
    model.memory_budget_mb = 0.05  # ~270 lattice points and 6 items per block
    np.testing.assert_allclose(model.score_samples(X, **kw), whole, atol=1e-4)


def test_bf16_precision_path():
    X = _blobs(512)
    model = QLVM(2, decoder="conv", n_lattice=233, batch_size=64, max_epochs=4, precision="bf16",
                 device="cuda", random_state=0, verbose=False, decoder_options=dict(base_channels=16))
    model.fit(X)
    hist = np.array(model.history_["train_log_likelihood"])
    assert np.all(np.isfinite(hist)) and hist[-1] > hist[0]
    dtypes = []
    hook = model.module_.decoder.conv.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
    try:
        s_bf16 = model.score_samples(X[:128], n_lattice=987, n_shifts=2, random_state=0)
    finally:
        hook.remove()
    assert dtypes and all(dt == torch.bfloat16 for dt in dtypes)
    model.precision = "32"
    s_32 = model.score_samples(X[:128], n_lattice=987, n_shifts=2, random_state=0)
    assert np.all(np.isfinite(s_bf16))
    # bf16 decoded means carry ~3 significant digits: allow 0.05 nats per pixel on average.
    assert np.mean(np.abs(s_bf16 - s_32)) < 0.05 * X[0].size


def _peak_step(like, x, params, extra=()):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    ll = like.log_prob_matrix(x, params)
    loss = -(torch.logsumexp(ll, 1) - math.log(params.shape[0])).mean()
    loss.backward()
    torch.cuda.synchronize()
    assert params.grad is not None and all(p.grad is not None for p in extra)
    return torch.cuda.max_memory_allocated() - base, ll.detach()


def test_gaussian_kernel_step_memory_on_cuda_under_1gb():
    B, m, D = 256, 610, 16384
    dev = torch.device("cuda")
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(B, D, generator=g)
    mu = (0.5 + 0.2 * torch.randn(m, 1, D, generator=g)).clamp(0, 1)
    like = Gaussian(D)
    like.setup(x.numpy())
    like.to(dev)
    xd, params = x.to(dev), mu.to(dev).requires_grad_(True)
    peak, ll = _peak_step(like, xd, params, extra=(like.raw_sigma,))
    assert peak < 1 * GIB, f"peak {peak / 2**20:.0f} MiB beyond inputs"
    assert peak < 0.25 * B * m * D * 4  # far below what a B x m x D tensor would need
    # spot-check values against a float64 per-pair computation on CPU
    s = torch.exp(like.raw_sigma.detach().cpu().double()) + like.min_sigma
    rows, cols = slice(0, 4), slice(0, 32)
    xr, mr = x[rows].double(), mu[cols, 0].double()
    ref = (-0.5 * (((xr[:, None] - mr[None]) / s) ** 2).sum(-1) - torch.log(s).sum()
           - 0.5 * D * math.log(2 * math.pi))
    np.testing.assert_allclose(ll[rows, cols].cpu().double().numpy(), ref.numpy(), rtol=1e-5)


@pytest.mark.parametrize("like", [Bernoulli(), Poisson(), Poisson(offset=True), Multinomial()],
                         ids=["bernoulli", "poisson", "poisson_offset", "multinomial"])
def test_count_kernels_step_memory_on_cuda_under_1gb(like):
    B, m, D = 256, 610, 16384
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    if isinstance(like, Bernoulli):
        x = (torch.rand(B, D, device=dev, generator=g) < 0.3).float()
    else:
        x = torch.poisson(torch.full((B, D), 0.5, device=dev), generator=g)
    params = (0.3 * torch.randn(m, 1, D, device=dev, generator=g)).requires_grad_(True)
    like.to(dev)
    peak, ll = _peak_step(like, x, params)
    assert peak < 1 * GIB, f"peak {peak / 2**20:.0f} MiB beyond inputs"
    assert torch.isfinite(ll).all()


def test_device_errors():
    X, _ = _ring(64)
    bad = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match=bad):
        QLVM(2, device=bad, max_epochs=1, verbose=False).fit(X)
    with pytest.raises(ParameterError, match="device"):
        QLVM(2, device="gpu", max_epochs=1, verbose=False).fit(X)


def test_cuda_tensor_input_is_accepted():
    X, _ = _ring(256, seed=4)
    Xt = torch.as_tensor(X, device="cuda")
    model = _model("cuda", max_epochs=2).fit(Xt)
    np.testing.assert_allclose(model.score_samples(Xt, n_lattice=987, n_shifts=1, random_state=0),
                               model.score_samples(X, n_lattice=987, n_shifts=1, random_state=0), atol=1e-5)
