"""Circular and toroidal helpers shared by the analyses on the latent torus [0, 1)^d.

Coordinates are in *turns*: a latent point ``z`` lives in [0, 1)^d and ``z`` and ``z + 1`` are
the same point. Angles in radians are ``2*pi*z``.

Regular grids used by every grid analysis (density, clusters, Jacobian, geodesics) put their
nodes at the cell centres ``(i + 0.5) / resolution``, ``i = 0 .. resolution-1``, on each axis, and
are indexed ``grid[i_0, i_1, ...]`` with axis ``k`` the latent dimension ``z_{k+1}``.

Circular correlation up to the torus symmetries
-----------------------------------------------
A latent map is identifiable only up to the symmetries of the torus that preserve the uniform
prior and the axis structure: a shift (rotation) of each axis, a reflection of each axis and a
permutation of the axes. :func:`circular_correlation` measures agreement between two embeddings
of the same items modulo these symmetries, with the Fisher–Lee (1983) circular correlation per
axis:

.. math::

    \\rho_{FL}(\\alpha, \\beta) =
    \\frac{\\sum_{i<j} \\sin(\\alpha_i-\\alpha_j)\\sin(\\beta_i-\\beta_j)}
         {\\sqrt{\\sum_{i<j}\\sin^2(\\alpha_i-\\alpha_j)\\,\\sum_{i<j}\\sin^2(\\beta_i-\\beta_j)}}

which is invariant to a shift of either variable, changes sign under a reflection, is +1
exactly when ``beta = alpha + c`` and -1 exactly when ``beta = -alpha + c``, and needs no mean
direction (so it stays well defined for data spread uniformly round the circle, where the
Jammalamadaka–SenGupta coefficient depends on an ill-determined mean). It is computed in
O(N) through the identity
``sum_{i,j} sin(a_i-a_j) sin(b_i-b_j) = 2 (S_ss C_cc - S_sc S_cs)`` with ``S_ss = sum sin a sin b``
etc. Reflections are absorbed by taking ``|rho|`` per axis; the axis permutation is the one that
maximises the mean ``|rho|``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from .._utils import ParameterError, check_positive

__all__ = [
    "wrap",
    "wrapped_diff",
    "torus_distance",
    "circular_mean",
    "resultant_length",
    "circular_correlation",
    "align_to_reference",
    "TorusAlignment",
    "grid_centres",
    "grid_points",
    "as_latent",
]


def wrap(z):
    """Map coordinates onto [0, 1) (``z mod 1``, with the float edge case ``1.0`` mapped to 0).

    Parameters
    ----------
    z : np.ndarray [shape=(...)]
        Coordinates in turns, any real values.

    Returns
    -------
    np.ndarray [shape=(...), range [0, 1)]
    """
    out = np.mod(np.asarray(z, dtype=float), 1.0)
    return np.where(out >= 1.0, 0.0, out)


def wrapped_diff(a, b):
    """Shortest signed difference ``a - b`` on the circle, per coordinate.

    Parameters
    ----------
    a, b : np.ndarray [shape=(...)]
        Coordinates in turns (broadcastable).

    Returns
    -------
    np.ndarray [shape=(...), range [-0.5, 0.5)]
    """
    return np.mod(np.asarray(a, dtype=float) - np.asarray(b, dtype=float) + 0.5, 1.0) - 0.5


def torus_distance(a, b):
    """Euclidean distance on the flat torus [0, 1)^d (shortest wrap-around distance).

    Parameters
    ----------
    a, b : np.ndarray [shape=(..., d)]
        Points in turns (broadcastable).

    Returns
    -------
    np.ndarray [shape=(...), range [0, sqrt(d)/2]]
    """
    return np.sqrt(np.sum(wrapped_diff(a, b) ** 2, axis=-1))


def _check_weights(weights, n: int, name: str = "weights"):
    if weights is None:
        return None
    w = np.asarray(weights, dtype=float)
    if w.shape != (n,):
        raise ParameterError(f"{name} must have shape ({n},); got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ParameterError(f"{name} must be finite, non-negative and not all zero")
    return w


def _resultant(z, weights, axis):
    theta = 2.0 * np.pi * np.asarray(z, dtype=float)
    theta = np.moveaxis(theta, axis, 0)
    n = theta.shape[0]
    if n == 0:
        raise ParameterError("cannot take a circular mean of zero points")
    w = _check_weights(weights, n)
    if w is None:
        c, s = np.cos(theta).mean(axis=0), np.sin(theta).mean(axis=0)
    else:
        w = w / w.sum()
        w = w.reshape((n,) + (1,) * (theta.ndim - 1))
        c, s = (w * np.cos(theta)).sum(axis=0), (w * np.sin(theta)).sum(axis=0)
    return c, s


def circular_mean(z, *, weights=None, axis: int = 0):
    """Circular mean in turns, per coordinate.

    Parameters
    ----------
    z : np.ndarray [shape=(n, ...)]
        Coordinates in turns.
    weights : np.ndarray [shape=(n,)], optional
        Non-negative weights.
    axis : int
        The axis to average over.

    Returns
    -------
    np.ndarray [shape=(...), range [0, 1)]
        ``atan2(mean sin, mean cos) / 2pi mod 1``; undefined (returned as computed, possibly
        noisy) where the resultant length is zero.
    """
    c, s = _resultant(z, weights, axis)
    return wrap(np.arctan2(s, c) / (2.0 * np.pi))


def resultant_length(z, *, weights=None, axis: int = 0):
    """Mean resultant length ``R`` per coordinate (1 = all equal, 0 = balanced round the circle).

    Parameters
    ----------
    z : np.ndarray [shape=(n, ...)]
        Coordinates in turns.
    weights : np.ndarray [shape=(n,)], optional
    axis : int

    Returns
    -------
    np.ndarray [shape=(...), range [0, 1]]
    """
    c, s = _resultant(z, weights, axis)
    return np.clip(np.hypot(c, s), 0.0, 1.0)


def as_latent(z, *, name: str = "z", latent_dim: int | None = None) -> np.ndarray:
    """Validate latent points and return them as a float64 array of shape (n, d) in [0, 1).

    A 1-D array is read as n points of a 1-D latent (unless ``latent_dim`` says otherwise and
    its length equals ``latent_dim``, in which case it is one point).
    """
    arr = np.asarray(z, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :] if (latent_dim is not None and latent_dim > 1
                               and arr.shape[0] == latent_dim) else arr[:, None]
    if arr.ndim != 2:
        raise ParameterError(f"{name} must have shape (n, d); got shape {arr.shape}")
    if latent_dim is not None and arr.shape[1] != latent_dim:
        raise ParameterError(f"{name} must have {latent_dim} latent dimension(s); got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"{name} has non-finite values")
    return wrap(arr)


def _fisher_lee_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fisher–Lee correlation between every column of a [n, p] and every column of b [n, q]."""
    ta, tb = 2.0 * np.pi * a, 2.0 * np.pi * b
    ca, sa, cb, sb = np.cos(ta), np.sin(ta), np.cos(tb), np.sin(tb)
    num = (sa.T @ sb) * (ca.T @ cb) - (sa.T @ cb) * (ca.T @ sb)
    va = (sa ** 2).sum(0) * (ca ** 2).sum(0) - (sa * ca).sum(0) ** 2
    vb = (sb ** 2).sum(0) * (cb ** 2).sum(0) - (sb * cb).sum(0) ** 2
    den = np.sqrt(np.maximum(va, 0.0))[:, None] * np.sqrt(np.maximum(vb, 0.0))[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(rho, -1.0, 1.0)


@dataclass(frozen=True)
class TorusAlignment:
    """A torus symmetry ``b -> frac(sign * b[:, perm] + shift)``.

    Attributes
    ----------
    perm : tuple of int [length d]
        Axis ``k`` of the aligned points is axis ``perm[k]`` of ``b``.
    signs : tuple of int [length d, values +1/-1]
        Reflection per aligned axis.
    shift : tuple of float [length d, range [0, 1)]
        Rotation per aligned axis, in turns.
    correlation : tuple of float [length d, range [0, 1]]
        ``|rho_FL|`` per aligned axis.
    """

    perm: tuple
    signs: tuple
    shift: tuple
    correlation: tuple

    def __post_init__(self):
        d = len(self.perm)
        if sorted(self.perm) != list(range(d)):
            raise ParameterError(f"perm must be a permutation of 0..{d - 1}; got {self.perm!r}")
        if len(self.signs) != d or any(s not in (1, -1) for s in self.signs):
            raise ParameterError(f"signs must be {d} values of +1/-1; got {self.signs!r}")
        if len(self.shift) != d:
            raise ParameterError(f"shift must have {d} values; got {self.shift!r}")

    def apply(self, b) -> np.ndarray:
        """Apply the symmetry to points ``b`` [n, d]; returns [n, d] in [0, 1)."""
        arr = as_latent(b, name="b", latent_dim=len(self.perm))
        return wrap(arr[:, list(self.perm)] * np.asarray(self.signs) + np.asarray(self.shift))


def _best_alignment(a: np.ndarray, b: np.ndarray) -> TorusAlignment:
    d = a.shape[1]
    rho = _fisher_lee_matrix(a, b)  # [d_a, d_b]
    best_perm, best_score = None, -np.inf
    for perm in itertools.permutations(range(d)):
        score = float(np.mean([abs(rho[k, perm[k]]) for k in range(d)]))
        if score > best_score + 1e-12:
            best_perm, best_score = perm, score
    signs = tuple(1 if rho[k, best_perm[k]] >= 0 else -1 for k in range(d))
    flipped = b[:, list(best_perm)] * np.asarray(signs)
    shift = circular_mean(wrapped_diff(a, flipped), axis=0)
    corr = tuple(float(abs(rho[k, best_perm[k]])) for k in range(d))
    return TorusAlignment(perm=tuple(best_perm), signs=signs,
                          shift=tuple(float(s) for s in np.atleast_1d(shift)), correlation=corr)


def _pair(a, b):
    a_arr = as_latent(a, name="a")
    b_arr = as_latent(b, name="b")
    if a_arr.shape != b_arr.shape:
        raise ParameterError(f"a and b must have the same shape (n, d); got {a_arr.shape} and {b_arr.shape}")
    if a_arr.shape[0] < 3:
        raise ParameterError(f"need at least 3 points to correlate; got {a_arr.shape[0]}")
    if a_arr.shape[1] > 6:
        raise ParameterError(f"at most 6 latent dimensions (d! axis permutations); got {a_arr.shape[1]}")
    return a_arr, b_arr


def circular_correlation(a, b, *, per_axis: bool = False):
    """Circular correlation of two embeddings of the same items, up to the torus symmetries.

    The best symmetry (axis permutation, reflection per axis; shifts do not change the
    Fisher–Lee coefficient) is the one maximising the mean over axes of ``|rho_FL|`` between
    ``a[:, k]`` and the matched axis of ``b`` (see the module docstring for the definition).

    Parameters
    ----------
    a, b : np.ndarray [shape=(n, d) or (n,), range [0, 1)]
        Two embeddings of the same n items (e.g. ground-truth latents and a fitted embedding).
    per_axis : bool
        Return the d per-axis coefficients instead of their mean.

    Returns
    -------
    float or np.ndarray [shape=(d,)], range [0, 1]
        1 when ``b`` is a torus symmetry of ``a`` (shift, reflection, axis permutation); about 0
        for unrelated embeddings (standard error about ``1/sqrt(n)``).
    """
    a_arr, b_arr = _pair(a, b)
    corr = np.asarray(_best_alignment(a_arr, b_arr).correlation)
    return corr if per_axis else float(corr.mean())


def align_to_reference(a, b):
    """Align embedding ``b`` to the reference ``a`` by the best torus symmetry.

    Parameters
    ----------
    a : np.ndarray [shape=(n, d), range [0, 1)]
        Reference embedding.
    b : np.ndarray [shape=(n, d), range [0, 1)]
        Embedding of the same items to align.

    Returns
    -------
    aligned : np.ndarray [shape=(n, d), range [0, 1)]
        ``frac(sign * b[:, perm] + shift)``; the shift per axis is the circular mean of the
        remaining difference, so ``wrapped_diff(aligned, a)`` has circular mean 0.
    alignment : TorusAlignment
        The symmetry, reusable on other points (e.g. decoded grids, cluster modes).
    """
    a_arr, b_arr = _pair(a, b)
    alignment = _best_alignment(a_arr, b_arr)
    return alignment.apply(b_arr), alignment


def grid_centres(resolution: int) -> np.ndarray:
    """Cell centres ``(i + 0.5) / resolution`` of a regular periodic grid on one axis.

    Returns
    -------
    np.ndarray [shape=(resolution,), range (0, 1)]
    """
    check_positive("resolution", resolution, integer=True)
    return (np.arange(resolution) + 0.5) / resolution


def grid_points(resolution: int, latent_dim: int) -> np.ndarray:
    """All nodes of the regular periodic grid, C order (last axis fastest).

    Returns
    -------
    np.ndarray [shape=(resolution**latent_dim, latent_dim), range (0, 1)]
        Row ``np.ravel_multi_index(idx, (resolution,)*latent_dim)`` is node ``idx``.
    """
    check_positive("latent_dim", latent_dim, integer=True)
    c = grid_centres(resolution)
    mesh = np.meshgrid(*([c] * latent_dim), indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=-1)
