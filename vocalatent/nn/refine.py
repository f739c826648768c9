"""Local refinement of the lattice estimate for items whose posterior is narrower than any
affordable global lattice (pure torch; :meth:`vocalatent.model.LatentModel.evaluate` drives it).

With D = 16,384 spectrogram pixels the posterior over a 2-D torus can be ~0.002 wide: a global
lattice would need ~10^6 points to put a few of them inside it. Instead, for such an item:

1. a pilot (its own random shift) gives the best global lattice point; a few Newton steps on
   ``log p(x | z)`` refine the mode and the Hessian ``H`` there gives the posterior's axes ``R``
   and standard deviations ``s_k = 1/sqrt(-lambda_k)`` (Laplace's approximation, used only to
   place a box, never as the estimate);
2. the box ``B = {c + R ((t - 1/2) * h) : t in [0, 1)^d}`` with sides ``h_k = 2 * box_sd * s_k``
   gets its own randomly shifted rank-1 lattice ``t_l`` of ``m_l`` points, at growing sizes
   :data:`REFINE_SIZES` until two consecutive sizes agree;
3. per shift, the estimate is the stratified rule

       p̂(x) = (1/m) sum_{j : z_j not in B} p(x | z_j)  +  vol(B) (1/m_l) sum_l p(x | z(t_l))

   — the global lattice outside the box plus the box's own lattice inside it. For a box fixed
   in advance (the pilot's shift is independent of the estimate's) both terms are unbiased, so
   ``p̂`` is an unbiased estimate of ``p(x)`` whatever the box; the box only decides how small
   the error is. The same diagnostics apply (ESS of the combined weights, spread over shifts).

The box lives in the prior's own coordinates: the unit torus for the QLVM (uniform prior,
periodic), and R^d for a standard normal prior (the VAE/IWAE baselines), where the integrand is
``p(x | z) N(z; 0, I)`` and the global lattice's points are mapped by the inverse normal CDF
without the clip of :func:`vocalatent.lattice.to_gaussian` (:func:`to_latent`). A box in the
unit cube of a Gaussian prior could not reach the items whose posterior sits in the prior's
tails (|z| > 3.7, beyond the clip), which were the baselines' never-converging items.

Boxes are used only where they fit: the Hessian negative definite and every side at most
``max_side`` (:data:`MAX_SIDE`: a quarter of the torus; 12 prior standard deviations in R^d).
"""

from __future__ import annotations

import itertools
import math

import torch

__all__ = ["BOX_SD", "MAX_SIDE", "NEWTON_STEPS", "REFINE_SIZES", "WeightSum", "box_points", "in_box",
           "laplace_box", "log_prior", "refine_sizes", "to_latent"]


def box_points(t: torch.Tensor, center: torch.Tensor, rot: torch.Tensor, sides: torch.Tensor) -> torch.Tensor:
    """Map points ``t`` of the unit cube (m, d) into the box: ``center + ((t - 1/2) * sides) R^T``."""
    return center + ((t - 0.5) * sides) @ rot.T


def in_box(u: torch.Tensor, center: torch.Tensor, rot: torch.Tensor, sides: torch.Tensor, *,
           periodic: bool) -> torch.Tensor:
    """Which of the points ``u`` (m, d) lie in the box (on the torus when ``periodic``)."""
    off = u - center
    if periodic:
        off = off - torch.round(off)
    t = (off @ rot) / sides + 0.5
    return ((t >= 0) & (t < 1)).all(dim=1)


#: Half-side of a refinement box, in posterior standard deviations (Laplace's approximation).
BOX_SD = 6.0
#: Largest side of a box per prior: a quarter of the torus (so a box never wraps onto
#: itself), 12 prior standard deviations in R^d (a posterior that wide needs no box).
MAX_SIDE = {"uniform": 0.25, "gaussian": 12.0}
#: Newton steps from the best lattice point: more for the Gaussian prior, whose far-tail
#: posteriors start from a lattice point up to ~1 prior sd away from their mode.
NEWTON_STEPS = {"uniform": 3, "gaussian": 8}
#: The inverse normal CDF of a refinement clips only at this (|z| <= 7.9).
LATENT_CLIP = 1e-15


def to_latent(u: torch.Tensor, prior: str) -> torch.Tensor:
    """Points ``u`` of the unit cube (float64) in the prior's coordinates: ``u`` itself on the
    torus, ``ndtri(u)`` (clipped only at :data:`LATENT_CLIP`) for a Gaussian prior."""
    if prior == "uniform":
        return u
    return torch.special.ndtri(u.to(torch.float64).clamp(LATENT_CLIP, 1 - LATENT_CLIP))


def log_prior(w: torch.Tensor, prior: str) -> torch.Tensor:
    """Log prior density at points ``w`` (m, d) of the prior's coordinates (0 on the torus)."""
    if prior == "uniform":
        return torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    w = w.to(torch.float64)
    return -0.5 * (w * w).sum(dim=1) - 0.5 * w.shape[1] * math.log(2 * math.pi)


def laplace_box(loglik, z0: torch.Tensor, *, box_sd: float | None = None, newton_steps: int = 3,
                max_side: float = 0.25, unit_cube: bool = False):
    """Place a box around the mode of ``loglik`` near ``z0`` (Laplace's approximation).

    Parameters
    ----------
    loglik : callable
        ``loglik(z) -> scalar`` for a float64 point ``z`` (d,), differentiable twice.
    z0 : torch.Tensor [shape=(d,)]
        Start (the best lattice point of the pilot).
    box_sd : float or None
        Half-side of the box in posterior standard deviations (default :data:`BOX_SD`).
    newton_steps : int
        Newton steps from ``z0`` (a step is kept only when it raises ``loglik``).
    max_side : float
        Largest side accepted (in torus units).
    unit_cube : bool
        Require the box to lie in [1e-4, 1 - 1e-4]^d (a Gaussian prior's unit cube is not
        periodic).

    Returns
    -------
    box : tuple or None
        ``(center, rot, sides)`` as float64 tensors, or None where no box fits.
    """
    box_sd = BOX_SD if box_sd is None else float(box_sd)
    z = z0.detach().to(torch.float64).clone()
    f = float(loglik(z).detach())
    if not math.isfinite(f):
        return None

    def curvature(z):
        H = torch.autograd.functional.hessian(loglik, z)
        lam, vec = torch.linalg.eigh(-0.5 * (H + H.T))
        ok = bool(torch.isfinite(lam).all()) and bool((lam > 0).all())
        return lam, vec, ok

    for _ in range(newton_steps):
        zr = z.clone().requires_grad_(True)
        g = torch.autograd.grad(loglik(zr), zr)[0]
        lam, vec, ok = curvature(z)
        if not ok:
            return None
        step = vec @ ((vec.T @ g) / lam)
        moved = False
        for _ in range(4):
            cand = z + step
            fc = float(loglik(cand).detach())
            if math.isfinite(fc) and fc > f:
                z, f, moved = cand, fc, True
                break
            step = step / 2
        if not moved:
            break
    lam, vec, ok = curvature(z)
    if not ok:
        return None
    sides = 2 * box_sd / torch.sqrt(lam)
    if not bool((sides <= max_side).all()):
        return None
    if unit_cube:
        d = len(z)
        corners = torch.tensor(list(itertools.product((0.0, 1.0), repeat=d)), dtype=torch.float64)
        pts = box_points(corners, z, vec, sides)
        if not bool(((pts > 1e-4) & (pts < 1 - 1e-4)).all()):
            return None
    return z, vec, sides


#: Local lattice sizes of the refinement per latent dimension, ~4x apart: an item is taken at
#: the first two consecutive sizes whose estimates agree within ``MAX_SHIFT_SD`` nats and
#: meet the criterion at the larger (its estimate), climbing further only while they do not.
#: In 2-D, 55 and 233 points give the README job's syllables within 0.002 nats/item of 233
#: and 987 (min ESS 20) at a quarter of the decoder passes (docs/method.md section 7.3).
REFINE_SIZES = {1: (64, 256, 1024), 2: (55, 233, 987, 4181), 3: (251, 1021, 4093)}


def refine_sizes(latent_dim: int) -> tuple:
    """The local sizes of :data:`REFINE_SIZES` for ``latent_dim`` (a plain ~4x ladder above 3-D)."""
    return tuple(REFINE_SIZES.get(int(latent_dim), (256, 1024, 4096)))


class WeightSum:
    """Running ``max``, ``sum exp(logw - max)`` and ``sum exp(2 (logw - max))`` per item over
    chunks of log-weights that may be ``-inf`` (points excluded by a box)."""

    def __init__(self, n_items: int, device):
        kw = dict(device=device, dtype=torch.float64)
        self.m = torch.full((n_items,), -math.inf, **kw)
        self.s = torch.zeros(n_items, **kw)
        self.s2 = torch.zeros(n_items, **kw)

    def update(self, logw: torch.Tensor, rows) -> None:
        logw = logw.to(torch.float64)
        new = torch.maximum(self.m[rows], logw.max(dim=1).values)
        safe = torch.where(torch.isfinite(new), new, torch.zeros_like(new))
        scale = torch.exp(self.m[rows] - safe)
        e = torch.exp(logw - safe[:, None])
        self.s[rows] = scale * self.s[rows] + e.sum(1)
        self.s2[rows] = scale * scale * self.s2[rows] + (e * e).sum(1)
        self.m[rows] = new

    def log_total(self) -> torch.Tensor:
        """``log sum_j w_j`` (the weights carry their rule's 1/m and volume already)."""
        return self.m + torch.log(self.s)

    def ess(self) -> torch.Tensor:
        return self.s * self.s / self.s2

    def copy(self) -> "WeightSum":
        """An independent copy of the running sums."""
        other = WeightSum.__new__(WeightSum)
        other.m, other.s, other.s2 = self.m.clone(), self.s.clone(), self.s2.clone()
        return other

    def state(self) -> dict:
        """As :meth:`PosteriorAccumulator.state`, with ``count`` 1 (the weights are normalised)."""
        return {"max": self.m.cpu().numpy(), "sum": self.s.cpu().numpy(), "sum_sq": self.s2.cpu().numpy(),
                "count": 1}
