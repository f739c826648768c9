"""The QLVM's math: decoder + likelihood, the lattice estimate of log p(x), and streaming
posterior statistics. No training loop, no data handling (see :mod:`vocalatent.model`).

For items ``x_i`` and lattice points ``z_j = frac(L_j + Δ)``, ``j = 1..m``:

    log p̂(x_i) = logsumexp_j log p(x_i | f(z_j)) − log m

The ``− log m`` is part of the estimate (it is the lattice rule's weight 1/m).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..lattice import to_gaussian


class QLVMModule(nn.Module):
    """Decoder and likelihood of a QLVM, with the prior's map from the unit torus.

    Parameters
    ----------
    decoder : nn.Module
        Maps ``(m, d)`` to likelihood parameters ``(m, P, D)``.
    likelihood : Likelihood
    latent_dim : int
    prior : {"uniform", "gaussian"}
        ``"uniform"``: z on the torus [0,1)^d (with a periodic decoder); ``"gaussian"``: lattice
        points are pushed through the inverse normal CDF before decoding.
    """

    def __init__(self, decoder: nn.Module, likelihood: nn.Module, latent_dim: int,
                 prior: str = "uniform"):
        super().__init__()
        self.decoder = decoder
        self.likelihood = likelihood
        self.latent_dim = latent_dim
        self.prior = prior

    def params(self, u: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters ``(m, P, D)`` at unit-torus points ``u`` ``(m, d)``."""
        z = to_gaussian(u) if self.prior == "gaussian" else u
        out = self.decoder(z)
        return out.float()

    def mean(self, u: torch.Tensor) -> torch.Tensor:
        """Decoded mean ``(m, D)`` in data space at unit-torus points ``u``."""
        return self.likelihood.mean(self.params(u))

    def log_lik_matrix(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``log p(x_i | z_j)`` for all pairs: ``(B, m)``."""
        return self.likelihood.log_prob_matrix(x, self.params(u))

    def log_marginal(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The lattice estimate ``log p̂(x_i)`` (B,), all lattice points in one block."""
        ll = self.log_lik_matrix(x, u)
        return torch.logsumexp(ll, dim=1) - math.log(u.shape[0])


class PosteriorAccumulator:
    """Streaming statistics of the lattice posterior ``w_ij ∝ exp(ll_ij)`` over point chunks.

    Feed ``update(ll, u, rows)`` with ``ll`` of shape ``(b, c)`` for the items ``rows`` and the
    chunk's unit-torus points ``u`` ``(c, d)``, for any number of chunks (and shifts), then call
    ``add_count(c)`` once per chunk; memory is O(B * d) whatever the total number of points.
    Gives the running logsumexp (for log p̂), the effective sample size of the posterior
    (:meth:`ess`), the posterior circular
    mean and mean resultant length per latent dimension, the MAP point, and the posterior
    entropy.
    """

    def __init__(self, n_items: int, latent_dim: int, device, *, stats: bool = True):
        kw = dict(device=device, dtype=torch.float64)
        self.m = torch.full((n_items,), -math.inf, **kw)   # running max
        self.s = torch.zeros(n_items, **kw)                # sum exp(ll - m)
        self.s2 = torch.zeros(n_items, **kw)               # sum exp(2 (ll - m))
        self.count = 0
        self.stats = stats
        if stats:
            self.cos = torch.zeros(n_items, latent_dim, **kw)
            self.sin = torch.zeros(n_items, latent_dim, **kw)
            self.t = torch.zeros(n_items, **kw)            # sum exp(ll - m) (ll - m)
            self.best = torch.full((n_items,), -math.inf, **kw)
            self.map = torch.zeros(n_items, latent_dim, **kw)

    def update(self, ll: torch.Tensor, u: torch.Tensor, rows: slice = slice(None)) -> None:
        """Add a chunk: ``ll`` (b, c) for the items ``rows`` and the chunk's points ``u`` (c, d)."""
        ll = ll.detach().to(torch.float64)
        m_old = self.m[rows]
        cmax = ll.max(dim=1).values
        new_m = torch.maximum(m_old, cmax)
        seen = torch.isfinite(m_old)
        scale = torch.where(seen, torch.exp(m_old - new_m), torch.zeros_like(new_m))
        e = torch.exp(ll - new_m[:, None])
        if self.stats:
            delta = torch.where(seen, m_old - new_m, torch.zeros_like(new_m))
            s_old = self.s[rows]
            self.t[rows] = scale * (self.t[rows] + delta * s_old) + (e * (ll - new_m[:, None])).sum(1)
            u64 = u.detach().to(torch.float64)
            ang = 2 * math.pi * u64
            self.cos[rows] = scale[:, None] * self.cos[rows] + e @ torch.cos(ang)
            self.sin[rows] = scale[:, None] * self.sin[rows] + e @ torch.sin(ang)
            best = self.best[rows]
            better = cmax > best
            if bool(better.any()):
                arg = ll.argmax(dim=1)
                mp = self.map[rows]
                mp[better] = u64[arg[better]]
                self.map[rows] = mp
                self.best[rows] = torch.where(better, cmax, best)
        self.s[rows] = scale * self.s[rows] + e.sum(1)
        self.s2[rows] = scale * scale * self.s2[rows] + (e * e).sum(1)
        self.m[rows] = new_m

    def add_count(self, n_points: int) -> None:
        """Record that ``n_points`` more lattice points have been fed (for the − log m term)."""
        self.count += n_points

    def log_marginal(self) -> torch.Tensor:
        """``logsumexp_j ll_ij − log(total points)`` (B,), float64."""
        return self.m + torch.log(self.s) - math.log(self.count)

    def ess(self) -> torch.Tensor:
        """Effective sample size ``(sum_j w_ij)^2 / sum_j w_ij^2`` of each item's posterior (B,):
        1 when all the weight sits on one point, the number of points when it is uniform."""
        return self.s * self.s / self.s2

    def state(self) -> dict:
        """The running sums as float64 NumPy arrays (``max``, ``sum``, ``sum_sq``, ``count``), for
        pooling accumulators with :func:`vocalatent.nn.estimate.pool_shifts`."""
        return {"max": self.m.cpu().numpy(), "sum": self.s.cpu().numpy(),
                "sum_sq": self.s2.cpu().numpy(), "count": self.count}

    def circular_mean(self) -> torch.Tensor:
        """Posterior circular mean per latent dim, in [0, 1) (B, d)."""
        ang = torch.atan2(self.sin, self.cos) / (2 * math.pi)
        return torch.remainder(ang, 1.0)

    def resultant_length(self) -> torch.Tensor:
        """Mean resultant length per latent dim, in [0, 1] (1 = all mass at one angle)."""
        return torch.sqrt(self.cos**2 + self.sin**2) / self.s[:, None]

    def entropy(self) -> torch.Tensor:
        """Posterior entropy in nats over the points seen (B,)."""
        return torch.log(self.s) - self.t / self.s
