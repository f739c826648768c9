"""Observation models p(x | z) as B x m matrix kernels built from GEMMs.

For a batch of ``B`` items of dimension ``D`` and ``m`` decoded lattice points, every
likelihood here returns the ``(B, m)`` matrix of ``log p(x_i | z_j)`` without ever forming a
``B x m x D`` tensor: each one is a sum of matrix products ``x @ a_j^T`` and terms that depend
on ``i`` alone or on ``j`` alone. Memory is O(B*m + m*D), and the time is that of the GEMMs.

A likelihood is an ``nn.Module`` (it may hold learned parameters, e.g. per-feature variances)
with

- ``n_params``: how many decoder output channels it needs per feature;
- ``log_prob_matrix(x, params) -> (B, m)``: all pairs;
- ``log_prob_pairs(x, params) -> (B,)``: item ``i`` with decoded point ``i`` (for VAEs and
  for brute-force references);
- ``mean(params) -> (m, D)``: the decoded mean in data space;
- ``check_data(x)``: raise :class:`~vocalatent.DataError` when ``x`` is outside the support.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._utils import DataError, ParameterError, check_option
from .base import Likelihood, check_counts
from .negbin import NegativeBinomial

__all__ = ["Bernoulli", "FLOOR_RELATIVE", "Gaussian", "LEGACY_MIN_SIGMA", "LIKELIHOODS", "Likelihood",
           "Multinomial", "NegativeBinomial", "Poisson", "make_likelihood", "variance_floor"]

_LOG_2PI = math.log(2 * math.pi)

#: The data-derived variance floor's relative part: no feature's standard deviation may fall
#: below this fraction of the data's pooled per-feature standard deviation (docs/method.md).
FLOOR_RELATIVE = 0.05

#: The absolute floor vocalatent used before the data-derived one (and still uses when the data
#: give no scale at all); also the floor of checkpoints written before the floor was stored.
LEGACY_MIN_SIGMA = 1e-3

#: A sample with at most this many distinct values is treated as quantised.
_MAX_LEVELS = 4096


def variance_floor(x_sample, *, relative: float = FLOOR_RELATIVE) -> dict:
    """The Gaussian likelihood's default floor on standard deviations, from the data.

    The floor is the larger of two resolutions of the data, in data units:

    - the quantisation noise ``q / sqrt(12)`` when the values lie on a grid of step ``q``
      (at most 4096 distinct values in the sample: 8-bit images, the digits' 17 grey levels,
      integer counts); a narrower Gaussian models the rounding, not the data;
    - ``relative`` times the pooled standard deviation ``sqrt(mean_k var_k)``: no feature may be
      modelled as more than ``1 / relative`` times more precise than the typical feature varies.
      Without it, features that are (nearly) constant in training get standard deviations of a
      few thousandths, the posterior of any item that differs there collapses onto one lattice
      point, and the lattice estimate of log p(x) stops converging (docs/method.md has the
      measurements).

    Parameters
    ----------
    x_sample : array-like [shape=(N, D)]
        A sample of the training data.
    relative : float > 0
        See above.

    Returns
    -------
    floor : dict
        ``sigma`` (the floor), ``quantisation_step`` (0 for continuous data), ``pooled_sd``,
        ``rule`` (which term set it: "quantisation", "relative" or "legacy").
    """
    x = np.asarray(x_sample, dtype=np.float64)
    x = x.reshape(len(x), -1)
    pooled = float(np.sqrt(np.mean(x.var(axis=0)))) if len(x) > 1 else 0.0
    step = 0.0
    levels = np.unique(x)
    if 1 < len(levels) <= _MAX_LEVELS:
        gaps = np.diff(levels)
        gaps = gaps[gaps > 1e-6 * (levels[-1] - levels[0])]
        step = float(gaps.min()) if len(gaps) else 0.0
    quant, rel = step / math.sqrt(12.0), relative * pooled
    scale = float(np.abs(x).max()) if x.size else 0.0
    if not max(quant, rel) > 1e-9 * max(scale, 1.0) or not math.isfinite(max(quant, rel)):
        return {"sigma": LEGACY_MIN_SIGMA, "quantisation_step": step, "pooled_sd": pooled, "rule": "legacy"}
    return {"sigma": float(max(quant, rel)), "quantisation_step": step, "pooled_sd": pooled,
            "rule": "quantisation" if quant >= rel else "relative"}


class _SharedVarianceKernel(torch.autograd.Function):
    """``log N(x_i | mu_j, diag s^2)`` up to ``- D/2 log 2 pi``, for all pairs, with a hand-written
    backward that needs one GEMM (autograd's needs two) and no m x D temporaries.

    Inputs: the centred data ``xc = x - c`` (B, D), the decoded means ``mu`` (m, D) (not
    centred), the centre ``c`` (D,) and ``log s`` (D,). With ``mc = mu - c`` and ``iv = s^-2``:

    forward ``-1/2 [ (xc^2 iv) 1^T - 2 (xc iv) mc^T + 1 ((mc^2) iv)^T ] - sum log s``;

    backward, for the upstream gradient ``g`` (B, m) with row sums ``r``, column sums ``c_g`` and
    ``P = g^T xc`` (m, D): ``d mu = (P - c_g mc) iv``,
    ``d iv = -1/2 r^T xc^2 + sum_j (P mc)_j - 1/2 c_g^T mc^2``, ``d log s = -2 iv d iv - sum(g)``.

    ``mc`` is formed a block of rows at a time and never saved, so neither pass allocates an
    m x D temporary beyond the gradient itself: on a CPU, fresh 10 MB buffers cost more in page
    faults than the arithmetic done on them.
    """

    ROWS = 128  # rows of mu per block on the CPU (the whole matrix at once on a GPU)

    @staticmethod
    def _blocks(m: int, device):
        step = m if device.type == "cuda" else _SharedVarianceKernel.ROWS
        return [(j0, min(m, j0 + step)) for j0 in range(0, m, max(1, step))]

    @staticmethod
    def forward(ctx, xc, mu, center, log_s):
        iv = torch.exp(-2 * log_s)
        xs = xc * iv
        out = torch.empty(xc.shape[0], mu.shape[0], dtype=xc.dtype, device=xc.device)
        for j0, j1 in _SharedVarianceKernel._blocks(mu.shape[0], xc.device):
            mc = mu[j0:j1] - center
            out[:, j0:j1] = xs @ mc.T - 0.5 * ((mc * mc) @ iv)[None, :]
        out -= 0.5 * (xs * xc).sum(1, keepdim=True) + log_s.sum()
        ctx.save_for_backward(xc, mu, center, iv)
        return out

    @staticmethod
    def backward(ctx, g):
        xc, mu, center, iv = ctx.saved_tensors
        need_mu, need_s = ctx.needs_input_grad[1], ctx.needs_input_grad[3]
        c_g = g.sum(0)
        d_mu = torch.empty_like(mu) if need_mu else None
        d_iv = -0.5 * (g.sum(1) @ (xc * xc)) if need_s else None
        for j0, j1 in _SharedVarianceKernel._blocks(mu.shape[0], xc.device):
            mc = mu[j0:j1] - center
            P = g[:, j0:j1].T @ xc                       # the one GEMM, a block of rows
            if need_s:
                d_iv += (P * mc).sum(0) - 0.5 * (c_g[j0:j1] @ (mc * mc))
            if need_mu:
                d_mu[j0:j1] = (P - c_g[j0:j1, None] * mc) * iv
        d_log_s = (-2 * iv * d_iv - g.sum()) if need_s else None
        return None, d_mu, None, d_log_s


class Gaussian(Likelihood):
    """Diagonal Gaussian ``x_k ~ N(mu_jk, s_k^2)`` (or ``s_jk^2`` when the variance is decoded).

    Parameters
    ----------
    n_features : int
        Data dimension D.
    variance : {"feature", "fixed", "decoded"}
        ``"feature"``: one learned variance per feature, shared over the latent space (default);
        ``"fixed"``: ``sigma**2`` for every feature; ``"decoded"``: the decoder outputs a
        log-variance per feature and point (two output channels).
    sigma : float > 0 or "auto"
        Initial (or fixed) standard deviation in data units. ``"auto"`` (default) starts each
        feature at its standard deviation in the training data: the posterior then starts
        broad, the decoder learns the global layout first, and folds of the map are rarer.
    min_sigma : float > 0 or "auto"
        Floor on every standard deviation (learned, decoded or fixed: ``sigma`` is the
        floor plus a learned excess). ``"auto"`` (default): derived from the training data by
        :func:`variance_floor` when the model is fitted (the larger of the data's quantisation
        noise and 5 % of its pooled standard deviation), stored with the model and reported as
        ``floor``. A floor keeps nearly constant features from collapsing to standard
        deviations of a few thousandths, which makes every posterior narrower than any
        affordable lattice and the estimate of log p(x) meaningless (docs/method.md).

    Notes
    -----
    ``log p = -1/2 [ (x^2/s^2) 1 - 2 (x/s^2) mu^T + 1 (mu^2/s^2)^T ] - sum log s - D/2 log 2 pi``.
    The three terms nearly cancel when ``x`` is close to ``mu``; to keep float32 accurate the
    data and the means are both centred on a per-feature constant ``c`` (the training mean),
    which leaves every log-likelihood unchanged in exact arithmetic.
    """

    name = "gaussian"

    def __init__(self, n_features: int, *, variance: str = "feature", sigma="auto",
                 min_sigma="auto"):
        super().__init__()
        check_option("variance", variance, ("feature", "fixed", "decoded"))
        if not (sigma == "auto" or (isinstance(sigma, (int, float)) and sigma > 0)):
            raise ParameterError(f"sigma must be 'auto' or > 0; got {sigma!r}")
        if not (min_sigma == "auto" or (isinstance(min_sigma, (int, float)) and min_sigma > 0)):
            raise ParameterError(f"min_sigma must be 'auto' or > 0; got {min_sigma!r}")
        self.variance = variance
        self.sigma = sigma
        self.min_sigma_option = min_sigma
        self.n_params = 2 if variance == "decoded" else 1
        start = LEGACY_MIN_SIGMA if min_sigma == "auto" else float(min_sigma)
        self.register_buffer("floor", torch.tensor(start, dtype=torch.float32))
        #: how the floor was chosen (set by :meth:`setup` for ``min_sigma="auto"``)
        self.floor_info = {"sigma": start, "rule": "auto (not set up)" if min_sigma == "auto" else "given"}
        init = self._raw(0.1 if sigma == "auto" else float(sigma))
        if variance == "feature":
            self.raw_sigma = nn.Parameter(torch.full((n_features,), init))
        else:
            self.register_buffer("raw_sigma", torch.full((n_features,), init))
        self.register_buffer("center", torch.zeros(n_features))

    @property
    def min_sigma(self) -> float:
        """The floor on standard deviations in data units (after :meth:`setup` for ``"auto"``)."""
        return float(self.floor)

    def _raw(self, sigma):
        floor = self.min_sigma
        return math.log(max(float(sigma) - floor, floor * 0.01))

    def setup(self, x_sample):
        x_sample = np.asarray(x_sample, dtype=np.float64)
        self.center.copy_(torch.as_tensor(x_sample.mean(axis=0), dtype=torch.float32))
        if self.min_sigma_option == "auto":
            self.floor_info = variance_floor(x_sample)
            floor = self.floor_info["sigma"]
            if self.variance == "fixed" and self.sigma != "auto":
                # a fixed sigma is the user's choice: the floor never changes it
                floor = min(floor, 0.5 * float(self.sigma))
            self.floor.fill_(floor)
            if self.sigma != "auto":
                value = float(self.sigma) if self.variance == "fixed" else max(float(self.sigma), 2 * floor)
                with torch.no_grad():
                    self.raw_sigma.fill_(self._raw(value))
        if self.sigma == "auto" and self.variance != "decoded":
            std = np.maximum(x_sample.std(axis=0), 2 * self.min_sigma)
            raw = np.log(std - self.min_sigma)
            with torch.no_grad():
                self.raw_sigma.copy_(torch.as_tensor(raw, dtype=torch.float32))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # checkpoints written before the floor was stored used the fixed min_sigma
        key = prefix + "floor"
        if key not in state_dict:
            legacy = LEGACY_MIN_SIGMA if self.min_sigma_option == "auto" else float(self.min_sigma_option)
            state_dict[key] = torch.tensor(legacy, dtype=torch.float32)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self.floor_info = {"sigma": self.min_sigma, "rule": "loaded"}

    def check_data(self, x):
        pass

    def sigmas(self, params=None) -> torch.Tensor:
        """The standard deviations in data units: (D,), or (m, D) for decoded variances."""
        return torch.exp(self._log_sigma(params))

    def _log_sigma(self, params):
        if self.variance == "decoded":
            return torch.log(F.softplus(params[:, 1]) + self.floor)  # (m, D)
        return torch.log(torch.exp(self.raw_sigma) + self.floor)  # (D,)

    def log_prob_matrix(self, x, params):
        mu = params[:, 0] - self.center
        xc = x - self.center
        log_s = self._log_sigma(params)
        inv_var = torch.exp(-2 * log_s)
        d = x.shape[1]
        if log_s.dim() == 1:
            return _SharedVarianceKernel.apply(xc, params[:, 0], self.center, log_s) - 0.5 * d * _LOG_2PI
        quad = ((xc * xc) @ inv_var.T - 2 * xc @ (mu * inv_var).T
                + (mu * mu * inv_var).sum(1)[None, :])
        return -0.5 * quad - log_s.sum(1)[None, :] - 0.5 * d * _LOG_2PI

    def log_prob_pairs(self, x, params):
        mu = params[:, 0]
        log_s = self._log_sigma(params)
        z = (x - mu) * torch.exp(-log_s)
        ls = log_s.sum() if log_s.dim() == 1 else log_s.sum(1)
        return -0.5 * (z * z).sum(1) - ls - 0.5 * x.shape[1] * _LOG_2PI

    def mean(self, params):
        return params[:, 0]


class Bernoulli(Likelihood):
    """Bernoulli with decoded logits ``l``: ``log p = x l^T - 1 softplus(l)^T``.

    Data must be 0/1 (binary images, presence/absence).
    """

    name = "bernoulli"

    def check_data(self, x):
        if not np.all((x == 0) | (x == 1)):
            bad = x[(x != 0) & (x != 1)]
            raise DataError(
                f"the Bernoulli likelihood needs binary data (0 or 1); found values such as "
                f"{bad[:3].tolist()} — binarize first (e.g. x > 0.5) or use likelihood='gaussian'"
            )

    def log_prob_matrix(self, x, params):
        logits = params[:, 0]
        return x @ logits.T - F.softplus(logits).sum(1)[None, :]

    def log_prob_pairs(self, x, params):
        logits = params[:, 0]
        return (x * logits - F.softplus(logits)).sum(1)

    def mean(self, params):
        return torch.sigmoid(params[:, 0])


class Poisson(Likelihood):
    """Poisson with decoded log-rates: ``log p = x log(lam)^T - 1 lam^T - sum_k log x_k!``.

    Parameters
    ----------
    offset : bool
        If True, rates are ``l_i * rho_jk`` with ``rho_j`` a decoded probability vector
        (log-softmax over features) and ``l_i = sum_k x_ik`` the item's total count (its size
        factor): the Poisson-with-offset model for UMI counts. It still factors into one GEMM.
    """

    name = "poisson"

    def __init__(self, *, offset: bool = False):
        super().__init__()
        self.offset = bool(offset)

    def check_data(self, x):
        check_counts(x, "Poisson")

    def _log_rate(self, params):
        raw = params[:, 0]
        return F.log_softmax(raw, dim=1) if self.offset else raw

    def log_prob_matrix(self, x, params):
        log_rate = self._log_rate(params)
        lg = torch.lgamma(x + 1).sum(1, keepdim=True)
        if self.offset:
            total = x.sum(1, keepdim=True)
            log_l = torch.log(total.clamp_min(1e-12))
            return x @ log_rate.T + total * log_l - total - lg
        return x @ log_rate.T - torch.exp(log_rate).sum(1)[None, :] - lg

    def log_prob_pairs(self, x, params):
        log_rate = self._log_rate(params)
        lg = torch.lgamma(x + 1).sum(1)
        if self.offset:
            total = x.sum(1)
            return (x * log_rate).sum(1) + total * torch.log(total.clamp_min(1e-12)) - total - lg
        return (x * log_rate - torch.exp(log_rate)).sum(1) - lg

    def mean(self, params):
        log_rate = self._log_rate(params)
        return torch.exp(log_rate)


class Multinomial(Likelihood):
    """Multinomial given each item's total count: ``x_i ~ Mult(n_i, rho_j)``.

    ``log p = x log(rho)^T + log n_i! - sum_k log x_ik!`` with ``rho_j = softmax(decoder)``;
    the decoded mean is the proportion vector ``rho_j``. Equivalent (up to a term in ``i``
    alone) to the Poisson-with-size-factor model, and the fast default for UMI counts.
    """

    name = "multinomial"

    def check_data(self, x):
        check_counts(x, "multinomial")

    def log_prob_matrix(self, x, params):
        log_rho = F.log_softmax(params[:, 0], dim=1)
        total = x.sum(1, keepdim=True)
        const = torch.lgamma(total + 1) - torch.lgamma(x + 1).sum(1, keepdim=True)
        return x @ log_rho.T + const

    def log_prob_pairs(self, x, params):
        log_rho = F.log_softmax(params[:, 0], dim=1)
        total = x.sum(1)
        return (x * log_rho).sum(1) + torch.lgamma(total + 1) - torch.lgamma(x + 1).sum(1)

    def mean(self, params):
        return torch.softmax(params[:, 0], dim=1)


LIKELIHOODS = ("gaussian", "bernoulli", "poisson", "poisson_offset", "multinomial", "negbin")


def make_likelihood(name: str, n_features: int, **options) -> Likelihood:
    """Build a likelihood by name: one of :data:`LIKELIHOODS`.

    ``options`` go to the class (e.g. ``variance`` and ``sigma`` for ``"gaussian"``).
    """
    check_option("likelihood", name, LIKELIHOODS)
    if name == "gaussian":
        return Gaussian(n_features, **options)
    if name == "bernoulli":
        return Bernoulli(**options)
    if name == "poisson":
        return Poisson(offset=False, **options)
    if name == "poisson_offset":
        return Poisson(offset=True, **options)
    if name == "multinomial":
        return Multinomial(**options)
    return NegativeBinomial(n_features, **options)
