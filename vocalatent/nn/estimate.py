"""How far to trust a lattice estimate of log p(x): per-item diagnostics, the convergence
criterion, the adaptive evaluation lattice and the training-time resolution check.

Pure NumPy on the running sums of :class:`~vocalatent.nn.qlvm.PosteriorAccumulator`; no
model, no data handling (:mod:`vocalatent.model` streams the chunks and calls these).

For one item, lattice points ``z_j`` and weights ``w_j = p(x | z_j)``:

- the effective sample size ``ESS = (sum_j w_j)^2 / sum_j w_j^2`` of the lattice posterior,
  per random shift and pooled over the shifts: 1 when one point carries all the weight (the
  posterior is narrower than the lattice spacing and the estimate is that point's likelihood,
  not an integral), the number of points when the posterior is flat;
- the spread (standard deviation) of the per-shift estimates ``log p̂_s(x)``: each shift is an
  independent unbiased estimate of ``p(x)``, so their spread measures the integration error
  directly.

An item is *converged* when its per-shift estimates agree to within :data:`MAX_SHIFT_SD`
nats and every shift's posterior has an ESS of at least :data:`MIN_ESS`; with a single shift
only the ESS condition can be checked. docs/method.md gives the measurements behind both
numbers.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import numpy as np

__all__ = ["DEFAULT_TOL", "MAX_SHIFT_SD", "MIN_CONVERGED_FRACTION", "MIN_ESS", "adaptive_lattice", "advice",
           "convergence_summary", "criterion_text", "item_diagnostics", "needs_warning", "pool_shifts",
           "training_resolution_message"]

logger = logging.getLogger(__name__)

#: Smallest per-shift ESS of a converged item.
MIN_ESS = 2.0
#: Largest standard deviation (nats) of a converged item's per-shift estimates.
MAX_SHIFT_SD = 0.1
#: Default tolerance of the adaptive evaluation lattice: nats per item between two sizes.
DEFAULT_TOL = 0.05
#: Below this fraction of converged items a held-out figure is reported with a warning.
MIN_CONVERGED_FRACTION = 0.99


def criterion_text() -> str:
    """The convergence criterion in words (stored with every result that uses it)."""
    return (f"per-shift estimates within {MAX_SHIFT_SD:g} nats (standard deviation over shifts) "
            f"and lattice-posterior ESS >= {MIN_ESS:g} on every shift")


def pool_shifts(states: list[dict]) -> dict:
    """Pool the running sums of one accumulator per shift into the union rule.

    Parameters
    ----------
    states : list of dict
        :meth:`PosteriorAccumulator.state` of each shift (same items).

    Returns
    -------
    pooled : dict
        ``log_likelihood`` (N,): ``logsumexp`` over all ``S * m`` points minus
        ``log(S * m)``; ``ess`` (N,): the pooled effective sample size.
    """
    mx = np.max([st["max"] for st in states], axis=0)
    total = sum(st["sum"] * np.exp(st["max"] - mx) for st in states)
    total_sq = sum(st["sum_sq"] * np.exp(2 * (st["max"] - mx)) for st in states)
    count = sum(st["count"] for st in states)
    return {"log_likelihood": mx + np.log(total) - math.log(count), "ess": total * total / total_sq}


def item_diagnostics(per_shift: np.ndarray, ess_per_shift: np.ndarray, ess: np.ndarray) -> dict:
    """Per-item spread, ESS and the converged flag.

    Parameters
    ----------
    per_shift : np.ndarray [shape=(S, N)]
        Per-shift estimates ``log p̂_s(x_i)`` in nats.
    ess_per_shift : np.ndarray [shape=(S, N)]
        Per-shift effective sample sizes.
    ess : np.ndarray [shape=(N,)]
        Pooled effective sample size.

    Returns
    -------
    diagnostics : dict
        ``ess`` (N,) pooled, ``ess_per_shift`` (S, N), ``min_ess`` (N,) the smallest per-shift
        ESS, ``shift_sd`` (N,) the standard deviation of the per-shift estimates (NaN with one
        shift), ``converged`` (N,) bool.
    """
    per_shift = np.asarray(per_shift, dtype=np.float64)
    ess_per_shift = np.asarray(ess_per_shift, dtype=np.float64)
    min_ess = ess_per_shift.min(axis=0)
    if per_shift.shape[0] > 1:
        sd = per_shift.std(axis=0, ddof=1)
        converged = (sd <= MAX_SHIFT_SD) & (min_ess >= MIN_ESS)
    else:
        sd = np.full(per_shift.shape[1], np.nan)
        converged = min_ess >= MIN_ESS
    converged &= np.isfinite(per_shift).all(axis=0)
    return {"ess": np.asarray(ess, dtype=np.float64), "ess_per_shift": ess_per_shift, "min_ess": min_ess,
            "shift_sd": sd, "converged": converged}


def adaptive_lattice(score: Callable[[int], dict], sizes, *, tol: float = DEFAULT_TOL,
                     max_seconds: float | None = 300.0, min_converged: float = 0.0,
                     give_up: Callable[[dict], bool] | None = None) -> dict:
    """Grow the lattice along ``sizes`` until the mean estimate settles.

    Parameters
    ----------
    score : callable
        ``score(m) -> result`` with ``result["log_likelihood"]`` the per-item estimates at
        lattice size ``m`` (same items and shifts for every ``m``).
    sizes : sequence of int
        Increasing lattice sizes (:func:`vocalatent.lattice.lattice_sequence`).
    tol : float
        Stop when the mean estimate per item changes by less than ``tol`` nats between two
        consecutive sizes.
    max_seconds : float or None
        Time budget: a size is not started when the time it is expected to take (the last
        size's time scaled by the ratio of sizes) would exceed what is left.
    min_converged : float
        Also require ``result["converged_fraction"] >= min_converged`` to stop (two
        unresolved sizes can agree by chance; measured on the digits, docs/method.md).
    give_up : callable or None
        ``give_up(result) -> bool``, asked from the second size on: stop growing (``stopped_by``
        ``"give up"``) when a larger lattice is not the remedy (the caller refines instead).

    Returns
    -------
    result : dict
        The last size's result, plus ``n_lattice``, ``tol``, ``tol_met`` (the last change was
        below ``tol``), ``stopped_by``
        (``"tolerance"``, ``"time budget"`` or ``"largest lattice"``), ``change`` (nats per item
        between the last two sizes; NaN after one) and ``history`` (``[m, mean, seconds]`` per
        size).
    """
    sizes = [int(m) for m in sizes]
    t_start = time.perf_counter()
    history, res, prev, last_t, stopped = [], None, None, None, "largest lattice"
    change = math.nan
    for i, m in enumerate(sizes):
        if res is not None and max_seconds is not None:
            expected = last_t * m / history[-1][0]
            if time.perf_counter() - t_start + expected > max_seconds:
                stopped = "time budget"
                break
        t0 = time.perf_counter()
        res = score(m)
        last_t = time.perf_counter() - t0
        mean = float(np.mean(res["log_likelihood"]))
        history.append([m, mean, last_t])
        if prev is not None:
            change = mean - prev
            if abs(change) < tol and res.get("converged_fraction", 1.0) >= min_converged:
                stopped = "tolerance"
                break
            if give_up is not None and give_up(res):
                stopped = "give up"
                break
        prev = mean
    out = dict(res)
    out.update(n_lattice=history[-1][0], tol=float(tol), tol_met=bool(abs(change) < tol),
               stopped_by=stopped, change=float(change), history=history)
    return out


def convergence_summary(result: dict, *, label: str = "held-out log p(x)") -> str:
    """One line: the estimate, its convergence and the lattice it was taken at.

    ``result`` is what :meth:`~vocalatent.model.QLVM.evaluate` returns.
    """
    frac = result.get("converged_fraction", math.nan)
    se = result.get("stderr", math.nan)
    pm = f" ± {se:,.2f}" if se == se else ""
    line = (f"{label} = {result['log_likelihood']:,.2f}{pm} nats/item "
            f"(converged for {100 * frac:.1f} % of items at m = {int(result['n_lattice']):,}")
    if result.get("refined_items"):
        sizes = result["refine_sizes"]
        top = int(result.get("refine_m_max") or sizes[1])
        line += (f"; {result['refined_items']} item(s) refined locally, "
                 f"m_local = {sizes[0]:,} vs {sizes[1]:,}" + (f" up to {top:,}" if top > sizes[1] else ""))
    if "tol" in result:
        change = result.get("change", math.nan)
        if change == change:
            line += f"; change from the previous size {change:+.3f} nats/item"
        line += ", tolerance met" if result.get("tol_met") else f", tolerance {result['tol']:g} nats NOT met"
    return line + ")"


def needs_warning(result: dict) -> bool:
    """True when a result should be reported with a warning (too few items converged, or
    the adaptive lattice stopped before its tolerance)."""
    return (not result.get("converged_fraction", 0.0) >= MIN_CONVERGED_FRACTION) or (
        "tol_met" in result and not result["tol_met"])


def advice(result: dict, *, floor: float | None = None) -> str:
    """What to do about an unconverged estimate, in one sentence."""
    hint = (f"raise the variance floor (likelihood_options={{'min_sigma': ...}}, now {floor:.3g}; the default "
            f"'auto' derives one from the data)" if floor else "use a likelihood with more noise")
    return (f"the lattice does not resolve the posterior of {100 * (1 - result.get('converged_fraction', 0)):.1f} % "
            f"of the items at m = {int(result['n_lattice']):,}: {hint}, or score with a larger lattice "
            f"(n_lattice=...), or train with a larger n_lattice so the model stays within what its "
            f"lattice integrates")


def training_resolution_message(ess: np.ndarray, n_lattice: int, *, floor: float | None = None,
                                collapsed_ess: float = 1.5, max_fraction: float = 0.5) -> str | None:
    """The training-time check: a warning text when the training lattice's posterior has
    collapsed onto one point for most items, else None.

    Parameters
    ----------
    ess : np.ndarray
        Per-item ESS of the training-lattice posterior (one shift) on a sample of training items.
    n_lattice : int
        The training lattice size.
    floor : float or None
        The Gaussian variance floor, when there is one (named in the advice).
    collapsed_ess, max_fraction : float
        An item is collapsed when its ESS is below ``collapsed_ess``; warn when more than
        ``max_fraction`` of the items are.
    """
    ess = np.asarray(ess, dtype=np.float64)
    frac = float(np.mean(ess < collapsed_ess))
    if frac <= max_fraction:
        return None
    knob = (f"a higher variance floor (likelihood_options={{'min_sigma': ...}}, now {floor:.3g})"
            if floor else "a likelihood with more noise (a variance floor, a larger sigma)")
    return (f"the training lattice's posterior has collapsed onto one point (ESS < {collapsed_ess:g}) "
            f"for {100 * frac:.0f} % of the items (median ESS {np.median(ess):.2f} of m = {n_lattice:,}): "
            f"the model is sharper than its integrator resolves, so training optimised a loose lattice "
            f"estimate of log p(x). Use a larger n_lattice or {knob}; with thousands of informative "
            f"features neither may suffice (the posterior is that sharp). evaluate() and transform() "
            f"refine such items locally (score_samples(refine=True) too), so the held-out figure and "
            f"the positions they report are checked for convergence (docs/method.md section 7.3); the "
            f"training estimate is not.")
