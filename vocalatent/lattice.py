"""Rank-1 lattice rules on the unit torus [0, 1)^d, their figure of merit, and random shifts.

A rank-1 lattice with ``n`` points and generating vector ``g`` is the point set
``x_k = frac(k * g / n)``, ``k = 0, ..., n-1``. For smooth periodic integrands its integration
error decays much faster than plain Monte Carlo; a Cranley-Patterson random shift
``frac(x_k + Δ)``, ``Δ ~ U[0, 1)^d``, makes the rule unbiased.

Generators used by default:

- d = 1: the n points ``k / n`` (0 and 1 are the same point on the circle: never both).
- d = 2: Fibonacci lattices, ``n = F_k``, ``g = (1, F_{k-1})``.
- d = 3: Korobov lattices ``g = (1, a, a^2 mod n)`` with ``a`` chosen by exhaustive search on
  the P_2 criterion (table :data:`KOROBOV_3D`; the test suite recomputes it).
- any other (n, d): :func:`search_generator` (Korobov exhaustive search for small n,
  component-by-component construction otherwise).
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np
from scipy.special import ndtri

from ._utils import ParameterError, check_positive

logger = logging.getLogger(__name__)

FIBONACCI = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181,
             6765, 10946, 17711, 28657, 46368, 75025, 121393, 196418, 317811)

#: P_2-optimal Korobov parameters ``a`` for d = 3 (exhaustive search over all a coprime to n).
KOROBOV_3D = {1021: 94, 2039: 1386, 4093: 1884, 8191: 739}

#: Lattice sizes used when none is given, by device type and latent dimension:
#: ``(training m, evaluation m, evaluation shifts)``. The one table of these defaults: the
#: job, :data:`DEFAULT_N_TRAIN` / :data:`DEFAULT_N_EVAL`, the help texts and docs/config.md read
#: it. A training step decodes m points and costs ~6·B·m·D flops in the likelihood, so on a CPU
#: smaller lattices finish a 128 x 128 spectrogram map in minutes (docs/method.md).
AUTO_SIZES = {
    "cuda": {1: (256, 2048, 4), 2: (987, 6765, 4), 3: (2039, 8191, 4)},
    "cpu": {1: (128, 1024, 2), 2: (377, 2584, 2), 3: (1021, 4093, 2)},
}
#: Training lattice size per latent dimension when the device is not known (the CUDA row of
#: :data:`AUTO_SIZES`).
DEFAULT_N_TRAIN = {d: sizes[0] for d, sizes in AUTO_SIZES["cuda"].items()}
#: Evaluation lattice size per latent dimension when the device is not known (CUDA row).
DEFAULT_N_EVAL = {d: sizes[1] for d, sizes in AUTO_SIZES["cuda"].items()}

#: Most lattice points :func:`lattice` builds (2**22 points of 3 coordinates: 100 MB).
MAX_POINTS = 2 ** 22
#: Bound on the work of one generator search, in evaluations of the criterion's factor
#: (points x candidates x dimensions); larger searches use a random subset of candidates, so
#: a search takes seconds (docs/config.md, "Limits"). Every tabulated size is below it.
SEARCH_BUDGET = 5 * 10 ** 8
#: Bytes of one block of candidate rows in a search (the search's memory is a few blocks).
SEARCH_BLOCK_BYTES = 16 * 2 ** 20


def auto_sizes(latent_dim: int, device_type: str = "cuda") -> tuple[int, int, int]:
    """``(training m, evaluation m, evaluation shifts)`` for ``latent_dim`` on a device type
    (``"cuda"``, ``"cpu"``; others use the CPU row) from :data:`AUTO_SIZES`."""
    row = AUTO_SIZES["cuda" if device_type == "cuda" else "cpu"]
    if latent_dim not in row:
        raise ParameterError(f"latent_dim must be 1, 2 or 3 for automatic lattice sizes; got "
                             f"{latent_dim!r}")
    return row[latent_dim]

#: Clip range applied before the inverse normal CDF in :func:`to_gaussian`.
GAUSSIAN_CLIP = 1e-4


def rank1_lattice(n: int, generator) -> np.ndarray:
    """Points of the rank-1 lattice with ``n`` points and generating vector ``generator``.

    Parameters
    ----------
    n : int > 0
        Number of points.
    generator : sequence of int [shape=(d,)]
        Generating vector ``g``; entries are taken modulo ``n``.

    Returns
    -------
    points : np.ndarray [shape=(n, d), dtype=float64, range=[0, 1)]
        ``frac(k * g / n)`` for ``k = 0, ..., n-1``, computed exactly in integer arithmetic.
    """
    check_positive("n", n, integer=True)
    g = np.asarray(generator, dtype=np.int64).reshape(-1) % n
    k = np.arange(n, dtype=np.int64)[:, None]
    return ((k * g[None, :]) % n).astype(np.float64) / n


def fibonacci_generator(n: int) -> tuple[int, int]:
    """Generating vector ``(1, F_{k-1})`` of the 2-D Fibonacci lattice with ``n = F_k`` points."""
    if n not in FIBONACCI or n < 3:
        raise ParameterError(
            f"a Fibonacci lattice needs n to be a Fibonacci number >= 3 "
            f"(e.g. 610, 987, 1597, 2584, 4181, 6765, 10946); got n={n!r}"
        )
    i = FIBONACCI.index(n)
    return (1, FIBONACCI[i - 1])


def korobov_generator(n: int, a: int, d: int) -> tuple[int, ...]:
    """Korobov generating vector ``(1, a, a^2, ..., a^(d-1)) mod n``."""
    return tuple(pow(int(a), j, int(n)) for j in range(d))


def _bernoulli_poly(alpha: int, x: np.ndarray) -> np.ndarray:
    if alpha == 2:
        return x * x - x + 1.0 / 6.0
    if alpha == 4:
        return x**4 - 2 * x**3 + x**2 - 1.0 / 30.0
    raise ParameterError(f"alpha must be 2 or 4; got {alpha!r}")


def _p_alpha_factor(alpha: int, x: np.ndarray) -> np.ndarray:
    """1 + c_alpha * B_alpha(x): the one-dimensional factor of the P_alpha product."""
    c = -((-1.0) ** (alpha // 2)) * (2 * math.pi) ** alpha / math.factorial(alpha)
    return 1.0 + c * _bernoulli_poly(alpha, x)


def p_alpha(n: int, generator, *, alpha: int = 2) -> float:
    """The P_alpha figure of merit of a rank-1 lattice (smaller is better).

    ``P_alpha = -1 + (1/n) sum_k prod_j [1 - (-1)^(alpha/2) (2 pi)^alpha / alpha! B_alpha(x_kj)]``,
    the worst-case squared integration error in the weighted Korobov space of smoothness
    ``alpha / 2`` (Sloan & Joe, *Lattice Methods for Multiple Integration*, 1994).

    Parameters
    ----------
    n : int
        Number of lattice points.
    generator : sequence of int [shape=(d,)]
        Generating vector.
    alpha : {2, 4}
        Smoothness parameter.
    """
    pts = rank1_lattice(n, generator)
    return float(np.prod(_p_alpha_factor(alpha, pts), axis=1).mean() - 1.0)


def _coprime_candidates(n: int) -> np.ndarray:
    c = np.arange(1, n, dtype=np.int64)
    return c[np.gcd(c, n) == 1]


def search_generator(n: int, d: int, *, alpha: int = 2, method: str = "auto",
                     max_exhaustive: int = 20000) -> tuple[int, ...]:
    """Find a good generating vector for an ``n``-point rank-1 lattice in ``d`` dimensions.

    Parameters
    ----------
    n, d : int
        Number of points and dimension.
    alpha : {2, 4}
        Criterion P_alpha to minimise.
    method : {"auto", "korobov", "cbc"}
        ``"korobov"``: exhaustive search over Korobov vectors ``(1, a, a^2, ...)``, O(n^2 d);
        ``"cbc"``: component-by-component construction, O(n^2 d) too but one component at a time;
        ``"auto"``: Korobov when ``n <= max_exhaustive``, else CBC restricted to a random subset
        of candidates.

    Returns
    -------
    generator : tuple of int [shape=(d,)]
    """
    check_positive("n", n, integer=True)
    check_positive("d", d, integer=True)
    if d == 1:
        return (1,)
    if method not in ("auto", "korobov", "cbc"):
        raise ParameterError(f"method must be 'auto', 'korobov' or 'cbc'; got {method!r}")
    if n > MAX_POINTS:
        raise ParameterError(f"n must be <= {MAX_POINTS} lattice points; got {n}")
    cands = _coprime_candidates(n)
    k = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(n * 7919 + d)
    # bounded work: n points x candidates x d factor evaluations (a random subset beyond)
    max_cands = max(64, SEARCH_BUDGET // (n * d))
    if len(cands) > max_cands:
        cands = np.sort(rng.choice(cands, max_cands, replace=False))
    block = int(max(1, min(256, SEARCH_BLOCK_BYTES // (8 * n))))
    if method == "korobov" or (method == "auto" and n <= max_exhaustive):
        best_a, best = 1, np.inf
        for start in range(0, len(cands), block):
            a = cands[start:start + block]
            prod = np.ones((len(a), n))
            power = np.ones_like(a)
            for _ in range(d):
                prod *= _p_alpha_factor(alpha, ((k[None, :] * power[:, None]) % n) / n)
                power = (power * a) % n
            vals = prod.mean(axis=1) - 1.0
            i = int(np.argmin(vals))
            if vals[i] < best:
                best, best_a = float(vals[i]), int(a[i])
        return korobov_generator(n, best_a, d)
    # Component-by-component: fix g_1 = 1, then choose each next component greedily.
    if len(cands) > 4096:
        cands = np.sort(rng.choice(cands, 4096, replace=False))
    g = [1]
    running = _p_alpha_factor(alpha, k / n)
    for _ in range(1, d):
        best_c, best, best_fac = None, np.inf, None
        for start in range(0, len(cands), min(block, 128)):
            c = cands[start:start + min(block, 128)]
            fac = _p_alpha_factor(alpha, ((k[None, :] * c[:, None]) % n) / n)
            vals = (running[None, :] * fac).mean(axis=1)
            i = int(np.argmin(vals))
            if vals[i] < best:
                best, best_c, best_fac = float(vals[i]), int(c[i]), fac[i]
        g.append(best_c)
        running = running * best_fac
    return tuple(g)


@lru_cache(maxsize=64)
def default_generator(n: int, d: int) -> tuple[int, ...]:
    """The generating vector vocalatent uses for ``n`` points in ``d`` dimensions."""
    if d == 1:
        return (1,)
    if d == 2 and n in FIBONACCI and n >= 3:
        return fibonacci_generator(n)
    if d == 3 and n in KOROBOV_3D:
        return korobov_generator(n, KOROBOV_3D[n], 3)
    logger.info("searching a rank-1 lattice generator for n=%d, d=%d", n, d)
    return search_generator(n, d)


def lattice(n: int, d: int, *, generator=None) -> np.ndarray:
    """The default ``n``-point rank-1 lattice in ``d`` dimensions (see module docstring).

    Returns
    -------
    points : np.ndarray [shape=(n, d), dtype=float64, range=[0, 1)]
    """
    check_positive("n", n, integer=True)
    check_positive("d", d, integer=True)
    if n * d > 3 * MAX_POINTS:
        raise ParameterError(f"a lattice of n={n} points in d={d} dimensions exceeds "
                             f"{3 * MAX_POINTS} coordinates; use fewer points")
    if d > 3:
        logger.warning("latent_dim=%d > 3: the lattice size needed grows exponentially with d", d)
    g = default_generator(int(n), int(d)) if generator is None else generator
    if len(g) != d:
        raise ParameterError(f"generator must have length d={d}; got {tuple(g)!r}")
    return rank1_lattice(n, g)


def nearest_good_size(n: int, d: int) -> int:
    """The lattice size vocalatent prefers near ``n``: a Fibonacci number (d=2) or a table entry
    (d=3) when one is within a factor 1.3, else ``n`` itself."""
    table = FIBONACCI if d == 2 else tuple(KOROBOV_3D) if d == 3 else ()
    close = [t for t in table if t >= 3 and 1 / 1.3 <= t / n <= 1.3]
    return min(close, key=lambda t: abs(math.log(t / n))) if close else int(n)


#: Largest lattice the adaptive evaluation grows to, per latent dimension (3-D: the largest
#: tabulated Korobov lattice; larger ones need a generator search first).
MAX_N_EVAL = {1: 65536, 2: 121393, 3: 8191}


def lattice_sequence(d: int, *, start: int = 1, stop: int | None = None) -> list[int]:
    """Lattice sizes for growing an evaluation lattice, each about 2-2.6 times the last.

    - d = 1: ``256 * 2^k`` (the points k/n; each size contains the previous one);
    - d = 2: every other Fibonacci number (377, 987, 2584, 6765, 17711, 46368, 121393, ...);
    - d = 3: the Korobov table :data:`KOROBOV_3D` (1021, 2039, 4093, 8191);
    - d > 3: ``1024 * 2^k`` (generators found by :func:`search_generator`).

    Parameters
    ----------
    d : int
        Latent dimension.
    start : int
        The first size returned is the smallest one >= ``start`` (or the largest if none is).
    stop : int or None
        Largest size returned (default :data:`MAX_N_EVAL`, 2^20 for d > 3).

    Returns
    -------
    sizes : list of int, increasing
    """
    check_positive("d", d, integer=True)
    stop = int(stop if stop is not None else MAX_N_EVAL.get(d, 2**20))
    if d == 1:
        seq = [256 * 2**k for k in range(20)]
    elif d == 2:
        seq = list(FIBONACCI[14::2])  # 377, 987, 2584, 6765, ...
    elif d == 3:
        seq = sorted(KOROBOV_3D)
    else:
        seq = [1024 * 2**k for k in range(12)]
    seq = [n for n in seq if n <= stop] or [min(seq)]
    above = [n for n in seq if n >= start]
    return above if above else seq[-1:]


def random_shift(d: int, rng: np.random.Generator) -> np.ndarray:
    """A Cranley-Patterson shift ``Δ ~ U[0, 1)^d`` drawn from an explicit generator."""
    return rng.random(d)


def shift_points(points: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``frac(points + shift)``: the shifted lattice, still in [0, 1)^d."""
    out = points + shift
    return out - np.floor(out)


def to_gaussian(u, *, clip: float = GAUSSIAN_CLIP):
    """Map points of [0, 1)^d to a standard normal prior by the inverse normal CDF.

    Values are clipped to ``[clip, 1 - clip]`` first (0 would map to -inf). Works on NumPy
    arrays and torch tensors.
    """
    try:
        import torch

        if isinstance(u, torch.Tensor):
            return torch.special.ndtri(u.clamp(clip, 1 - clip))
    except ImportError:  # pragma: no cover
        pass
    return ndtri(np.clip(u, clip, 1 - clip))
