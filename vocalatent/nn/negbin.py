"""Exact negative binomial log-likelihood matrix with a per-item size factor, in chunks.

For counts ``x_ik`` of item ``i`` (a cell) and feature ``k`` (a gene), decoded proportions
``rho_jk`` of lattice point ``j`` (rows sum to 1), a size factor ``l_i`` and a per-feature
inverse dispersion ``theta_k``::

    x_ik ~ NB(mean = l_i rho_jk, inverse dispersion theta_k)       (variance mu + mu^2 / theta)

    log p(x_i | z_j) = sum_k [ lgamma(x_ik + theta_k) - lgamma(theta_k) - lgamma(x_ik + 1)
                               + theta_k log theta_k + x_ik log l_i ]                 (i alone)
                       + sum_k x_ik log rho_jk                                        (a GEMM)
                       - sum_k (theta_k + x_ik) log(theta_k + l_i rho_jk)             (coupled)

The last term couples ``i`` and ``j`` inside the logarithm, so unlike the Poisson and
multinomial kernels it does not reduce to matrix products: it costs O(B * m * D) elementwise
operations (log, exp) rather than ~2 B m D flops of a GEMM, i.e. 10-50x the time of the
multinomial kernel on the same shapes. Use it for modest D (a few thousand highly variable
genes) and moderate m.
"""

from __future__ import annotations

import torch

from .._utils import ParameterError, check_positive
from .base import Likelihood, check_counts

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_CHUNK_SIZE_CUDA", "NegativeBinomial", "negbin_log_prob",
           "negbin_log_prob_matrix", "plan_blocks"]

#: Default largest number of (item, point, feature) triples evaluated at once on CPU (16 MiB
#: of float32 per block tensor).
DEFAULT_CHUNK_SIZE = 2**22

#: Default on CUDA, where small blocks are bound by kernel launches: measured on an H200 with
#: B=512, m=610, D=2000 (float32, forward + backward), 2**22 took 79 ms, 2**24 19 ms with a
#: 203 MiB peak, 2**26 15 ms with 789 MiB; the multinomial GEMM took 0.45 ms.
DEFAULT_CHUNK_SIZE_CUDA = 2**24


def plan_blocks(B: int, m: int, D: int, chunk_size: int) -> tuple[int, int, int]:
    """Block sizes ``(b, c, d)`` over items, lattice points and features with b*c*d <= chunk_size.

    Whole feature rows are preferred (one reduction per block), then whole lattice chunks,
    then items. A block never has fewer than one element per axis, so ``chunk_size`` below
    1 is rejected.
    """
    check_positive("chunk_size", chunk_size, integer=True)
    d = min(D, chunk_size)
    c = min(m, max(1, chunk_size // d))
    b = min(B, max(1, chunk_size // (c * d)))
    return b, c, d


def _blocks(B: int, m: int, D: int, b: int, c: int, d: int):
    for i0 in range(0, B, b):
        for j0 in range(0, m, c):
            for k0 in range(0, D, d):
                yield slice(i0, i0 + b), slice(j0, j0 + c), slice(k0, k0 + d)


class _CoupledTerm(torch.autograd.Function):
    """C_ij = sum_k (theta_k + x_ik) log(theta_k + l_i rho_jk), blockwise, with blockwise backward.

    Nothing of size B*m*D is kept between forward and backward: the backward pass recomputes
    each block's ``theta + l rho`` and accumulates the exact gradients::

        dC/drho_jk = sum_i g_ij (theta_k + x_ik) l_i / A_ijk          A = theta + l rho
        dC/dl_i    = sum_jk g_ij (theta_k + x_ik) rho_jk / A_ijk
        dC/dtheta_k = sum_ij g_ij [log A_ijk + (theta_k + x_ik) / A_ijk]
        dC/dx_ik   = sum_j g_ij log A_ijk
    """

    @staticmethod
    def forward(ctx, x, size_factor, rho, theta, block):
        B, D = x.shape
        m = rho.shape[0]
        out = x.new_zeros((B, m))
        w = x + theta                                                       # [B, D]
        for si, sj, sk in _blocks(B, m, D, *block):
            A = torch.addcmul(theta[sk], size_factor[si, None, None], rho[None, sj, sk])
            out[si, sj] += torch.einsum("bd,bcd->bc", w[si, sk], A.log_())
        ctx.save_for_backward(x, size_factor, rho, theta)
        ctx.block = block
        return out

    @staticmethod
    def backward(ctx, g):
        x, size_factor, rho, theta = ctx.saved_tensors
        need_x, need_l, need_rho, need_theta = ctx.needs_input_grad[:4]
        B, D = x.shape
        m = rho.shape[0]
        gx = torch.zeros_like(x) if need_x else None
        gl = torch.zeros_like(size_factor) if need_l else None
        grho = torch.zeros_like(rho) if need_rho else None
        gtheta = torch.zeros_like(theta) if need_theta else None
        w = x + theta
        for si, sj, sk in _blocks(B, m, D, *ctx.block):
            g_b = g[si, sj]                                                 # [b, c]
            A = torch.addcmul(theta[sk], size_factor[si, None, None], rho[None, sj, sk])
            if need_x or need_theta:
                logA = torch.log(A)
                glog = torch.einsum("bc,bcd->bd", g_b, logA)                 # [b, d]
                if need_x:
                    gx[si, sk] += glog
                if need_theta:
                    gtheta[sk] += glog.sum(0)
                del logA
            R = torch.reciprocal_(A).mul_(w[si, None, sk]).mul_(g_b[:, :, None])   # g (theta+x)/A
            if need_rho:
                grho[sj, sk] += torch.einsum("bcd,b->cd", R, size_factor[si])
            if need_l:
                gl[si] += torch.einsum("bcd,cd->b", R, rho[sj, sk])
            if need_theta:
                gtheta[sk] += R.sum(dim=(0, 1))
        return gx, gl, grho, gtheta, None


def negbin_log_prob(x: torch.Tensor, log_mu: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """Elementwise NB log-pmf log p(x | mean exp(log_mu), inverse dispersion exp(log_theta)).

    Parameters
    ----------
    x : torch.Tensor [shape=(..., D), >= 0, integer-valued]
    log_mu : torch.Tensor [broadcastable with x]
        Log of the mean.
    log_theta : torch.Tensor [shape=(D,) or broadcastable]
        Log of the inverse dispersion (theta -> inf is the Poisson limit).

    Returns
    -------
    torch.Tensor [broadcast shape]
    """
    theta = torch.exp(log_theta)
    log_theta_plus_mu = torch.logaddexp(log_theta, log_mu)
    return (torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1)
            + theta * (log_theta - log_theta_plus_mu) + x * (log_mu - log_theta_plus_mu))


def negbin_log_prob_matrix(x: torch.Tensor, log_rho: torch.Tensor, log_size_factor: torch.Tensor,
                           log_theta: torch.Tensor, *, chunk_size: int | None = None
                           ) -> torch.Tensor:
    """Exact (B, m) matrix of NB log-likelihoods log p(x_i | rho_j, l_i, theta), computed in chunks.

    ``x_ik ~ NB(mean = l_i rho_jk, inverse dispersion theta_k)``. The terms that depend on
    ``i`` alone and the ``x @ log_rho.T`` term are computed as in the GEMM kernels; the term
    ``sum_k (theta_k + x_ik) log(theta_k + l_i rho_jk)`` couples ``i`` and ``j`` inside the
    log and is evaluated exactly over blocks of ``b`` items x ``c`` points x ``d`` features
    with ``b * c * d <= chunk_size`` (see :func:`plan_blocks`). The cost is O(B * m * D)
    elementwise operations: unlike the Poisson/multinomial kernels this does **not** factor
    into GEMMs.

    Memory: the coupled term is a custom autograd function whose forward and backward both
    loop over the blocks; nothing of size B*m*D is stored between them (backward recomputes
    ``theta + l rho`` per block). Peak extra memory is about three block tensors of
    ``chunk_size`` elements plus O(B*m + m*D), whatever B, m and D. Gradients are exact and
    flow to every floating input (``log_rho``, ``log_size_factor``, ``log_theta``, and ``x``
    if it requires grad); double backward is not supported.

    Parameters
    ----------
    x : torch.Tensor [shape=(B, D), >= 0, integer-valued counts]
    log_rho : torch.Tensor [shape=(m, D), finite]
        Log proportions of the decoded lattice points; each row's logsumexp is 0 (e.g. a
        ``log_softmax`` output). Rows that do not sum to 1 are used as they are.
    log_size_factor : torch.Tensor [shape=(B,)]
        Log of each item's size factor ``l_i`` (e.g. log library size), so that the mean is
        ``l_i rho_jk``.
    log_theta : torch.Tensor [shape=(D,)]
        Log of the per-feature inverse dispersion.
    chunk_size : int > 0 or None
        Largest number of (item, point, feature) triples evaluated at once. None: 2**22 on
        CPU (16 MiB per float32 block tensor), 2**24 on CUDA (64 MiB; smaller blocks are
        bound by kernel launches).

    Returns
    -------
    torch.Tensor [shape=(B, m)], the dtype and device of ``x``
    """
    if x.ndim != 2 or log_rho.ndim != 2:
        raise ParameterError(f"x must be (B, D) and log_rho (m, D); got shapes {tuple(x.shape)} "
                             f"and {tuple(log_rho.shape)}")
    B, D = x.shape
    m = log_rho.shape[0]
    if log_rho.shape[1] != D:
        raise ParameterError(f"x has D={D} features but log_rho has {log_rho.shape[1]}")
    if tuple(log_size_factor.shape) != (B,):
        raise ParameterError(f"log_size_factor must have shape ({B},); got {tuple(log_size_factor.shape)}")
    if tuple(log_theta.shape) != (D,):
        raise ParameterError(f"log_theta must have shape ({D},); got {tuple(log_theta.shape)}")
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE_CUDA if x.is_cuda else DEFAULT_CHUNK_SIZE
    b, c, d = plan_blocks(B, m, D, chunk_size)

    theta = torch.exp(log_theta)
    per_item = (torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1)
                + theta * log_theta).sum(dim=1) + x.sum(dim=1) * log_size_factor      # [B]
    out = per_item[:, None] + x @ log_rho.T                                              # [B, m]

    rho = torch.exp(log_rho)                                                             # [m, D]
    size_factor = torch.exp(log_size_factor)                                             # [B]
    return out - _CoupledTerm.apply(x, size_factor, rho, theta, (b, c, d))


# --------------------------------------------------------------------------------------------
# The likelihood object (the contract of vocalatent.nn.likelihoods.Likelihood)
# --------------------------------------------------------------------------------------------
class NegativeBinomial(Likelihood):
    """Negative binomial counts with a per-item size factor and a learned per-feature dispersion.

    ``x_ik ~ NB(mean = l_i rho_jk, inverse dispersion theta_k)`` with ``rho_j =
    softmax(decoder output)`` (one output channel per feature, ``n_params = 1``), the size
    factor ``l_i = sum_k x_ik`` (the item's total count, as in the Poisson-with-offset model)
    and ``theta_k = exp(log_theta_k)`` learned, shared over the latent space. The variance is
    ``mu + mu^2 / theta``: large theta is the Poisson limit.

    Cost: this kernel does **not** factor into GEMMs (see :func:`negbin_log_prob_matrix`):
    O(B m D) elementwise logs, 30-200x the multinomial kernel. Use it for a few thousand
    highly variable genes and moderate lattice sizes, preferably on a GPU; the multinomial
    likelihood is the fast default.

    Parameters
    ----------
    n_features : int > 0
        D, the number of features (genes).
    theta : float > 0
        Initial inverse dispersion of every feature (default 10: moderate overdispersion).
    learn_theta : bool
        Learn ``log_theta`` (default) or keep it fixed.
    chunk_size : int > 0 or None
        Block size of the coupled term (see :func:`negbin_log_prob_matrix`).
    """

    name = "negbin"
    n_params = 1

    def __init__(self, n_features: int, *, theta: float = 10.0, learn_theta: bool = True,
                 chunk_size: int | None = None):
        super().__init__()
        check_positive("n_features", n_features, integer=True)
        check_positive("theta", theta)
        if chunk_size is not None:
            check_positive("chunk_size", chunk_size, integer=True)
        self.chunk_size = chunk_size
        init = torch.full((int(n_features),), float(torch.log(torch.tensor(float(theta)))))
        if learn_theta:
            self.log_theta = torch.nn.Parameter(init)
        else:
            self.register_buffer("log_theta", init)

    def check_data(self, x) -> None:
        check_counts(x, "negative binomial")

    @staticmethod
    def _log_size(x: torch.Tensor) -> torch.Tensor:
        return torch.log(x.sum(1).clamp_min(1.0))

    def log_prob_matrix(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        log_rho = torch.log_softmax(params[:, 0], dim=1)
        return negbin_log_prob_matrix(x, log_rho, self._log_size(x), self.log_theta,
                                      chunk_size=self.chunk_size)

    def log_prob_pairs(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        log_rho = torch.log_softmax(params[:, 0], dim=1)
        log_mu = log_rho + self._log_size(x)[:, None]
        return negbin_log_prob(x, log_mu, self.log_theta).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """Decoded proportions ``rho_j`` [shape=(m, D)], rows sum to 1."""
        return torch.softmax(params[:, 0], dim=1)

    def extra_repr(self) -> str:
        return f"n_features={self.log_theta.numel()}, chunk_size={self.chunk_size}"
