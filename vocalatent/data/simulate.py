"""Ground-truth simulators: neural populations on a ring, a torus or a track, and cell types.

Every simulator draws from ``np.random.default_rng(random_state)`` only (an int, None or a
Generator), so a seed gives the same data on every machine.

Neural models (Poisson spiking given the latent; time in bins of ``bin_s`` seconds):

- :func:`head_direction_cells`: heading on the ring follows a smooth random walk (angular
  velocity an Ornstein-Uhlenbeck process, sd ``angular_speed_sd`` rad/s, time constant
  ``tau_s``). Tuning is von Mises: ``rate = baseline + (peak - baseline) exp(kappa (cos(theta
  - theta_n) - 1))`` with preferred directions ``theta_n`` evenly spaced around the ring
  (random common rotation). Latent: heading in turns, in [0, 1).
- :func:`grid_cells`: one grid module. The animal moves in an open field with no walls
  (velocity an OU process) and its position ``x`` maps to the module's phase on the 2-D
  torus, ``phase = frac(A^-1 x / spacing)`` with ``A`` the lattice basis: rhombic (60 degrees;
  hexagonal grid fields) by default, or square. The rate is a periodic function of the phase
  offset ``u = phase - phase_n``: for the hexagonal module
  ``g(u) = [cos 2pi u1 + cos 2pi u2 + cos 2pi (u1 + u2) + 3/2] / (9/2)`` in [0, 1] (three
  plane waves 60 degrees apart, i.e. hexagonal fields in space), for the square module
  ``g(u) = [cos 2pi u1 + cos 2pi u2 + 2] / 4``; ``rate = baseline + (peak - baseline)
  exp(kappa (g - 1))``. Preferred phases are uniform on the torus. Latent: phase in [0, 1)^2.
- :func:`place_cells_linear_track`: the animal runs laps back and forth on a linear track
  at a speed that varies smoothly around ``speed_cm_s``; place fields are Gaussian bumps with
  centres evenly spread along the track. Latent: position / track length in [0, 1].

Single cells (:func:`simulate_cell_types`): each type has a gene-proportion profile made from a
shared log-normal base profile whose marker genes (``n_markers`` per type) are multiplied by
``marker_fold_change``; library sizes are log-normal; counts are multinomial given the
library size (optionally with gamma noise on the proportions, which makes them negative
binomial-like with inverse dispersion ``theta``).

Defaults are in realistic ranges: peak rates 10-40 Hz, baselines 0.1-1 Hz, bins 20-100 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from .._utils import ParameterError, check_option, check_positive, check_random_state
from .single_cell import CountMatrix

__all__ = [
    "SimulatedCells",
    "SimulatedPopulation",
    "TuningParams",
    "grid_cells",
    "head_direction_cells",
    "place_cells_linear_track",
    "simulate_cell_types",
]


@dataclass(frozen=True)
class TuningParams:
    """Firing-rate range and bin width shared by the neural simulators.

    Parameters
    ----------
    bin_s : float > 0
        Bin width in seconds.
    peak_rate_hz : float > 0
        Rate at the preferred latent value.
    baseline_hz : float >= 0, < peak_rate_hz
        Rate far from it.
    """

    bin_s: float = 0.05
    peak_rate_hz: float = 20.0
    baseline_hz: float = 0.5

    def __post_init__(self):
        check_positive("bin_s", self.bin_s)
        check_positive("peak_rate_hz", self.peak_rate_hz)
        check_positive("baseline_hz", self.baseline_hz, allow_zero=True)
        if self.baseline_hz >= self.peak_rate_hz:
            raise ParameterError(f"baseline_hz must be < peak_rate_hz; got baseline_hz="
                                 f"{self.baseline_hz!r}, peak_rate_hz={self.peak_rate_hz!r}")


@dataclass(frozen=True)
class SimulatedPopulation:
    """A simulated population with its ground truth.

    Attributes
    ----------
    counts : np.ndarray [shape=(n_bins, n_neurons), int64]
        Poisson spike counts per bin (items x features).
    latent : np.ndarray [shape=(n_bins,) or (n_bins, 2)]
        The true latent (heading / torus phase in [0, 1); track position in [0, 1]).
    rates_hz : np.ndarray [shape=(n_bins, n_neurons)]
        The firing rates the counts were drawn from.
    preferred : np.ndarray [shape=(n_neurons,) or (n_neurons, 2)]
        Each neuron's preferred latent value (same units as ``latent``).
    time : np.ndarray [shape=(n_bins,)]
        Bin centres in seconds.
    extra : dict
        Other ground truth (e.g. ``position_cm``, ``direction``).
    """

    counts: np.ndarray
    latent: np.ndarray
    rates_hz: np.ndarray
    preferred: np.ndarray
    time: np.ndarray
    extra: dict = field(default_factory=dict)


def _check_sizes(n_neurons, n_bins):
    check_positive("n_neurons", n_neurons, integer=True)
    check_positive("n_bins", n_bins, integer=True)


def _ou(rng, n: int, dim: int, *, sd: float, tau_s: float, dt: float) -> np.ndarray:
    """Stationary Ornstein-Uhlenbeck process [n, dim] with marginal sd ``sd``."""
    a = np.exp(-dt / tau_s)
    noise = rng.standard_normal((n, dim)) * sd * np.sqrt(1 - a * a)
    v = np.empty((n, dim))
    v[0] = rng.standard_normal(dim) * sd
    for t in range(1, n):
        v[t] = a * v[t - 1] + noise[t]
    return v


def _poisson(rng, rates_hz: np.ndarray, bin_s: float) -> np.ndarray:
    return rng.poisson(rates_hz * bin_s).astype(np.int64)


def head_direction_cells(n_neurons: int = 50, n_bins: int = 10_000, *, bin_s: float = 0.05,
                         peak_rate_hz: float = 20.0, baseline_hz: float = 0.5,
                         kappa: float = 4.0, angular_speed_sd: float = 2.0, tau_s: float = 0.5,
                         random_state=None) -> SimulatedPopulation:
    """Head-direction cells: von Mises tuning to a heading that drifts on the ring.

    Parameters
    ----------
    n_neurons : int > 0
    n_bins : int > 0
    bin_s : float > 0
        Bin width in seconds (default 50 ms).
    peak_rate_hz, baseline_hz : float
        Rate at and far from the preferred direction (default 20 Hz and 0.5 Hz).
    kappa : float > 0
        von Mises concentration (4 gives a tuning width at half height of about 70 degrees).
    angular_speed_sd : float > 0
        Standard deviation of the angular velocity, rad/s (2 rad/s ~ 115 deg/s, as in
        freely moving rodents).
    tau_s : float > 0
        Correlation time of the angular velocity in seconds.
    random_state : None, int or np.random.Generator

    Returns
    -------
    SimulatedPopulation
        ``latent``: heading in turns [0, 1) [shape=(n_bins,)]; ``preferred``: preferred
        directions in turns.
    """
    _check_sizes(n_neurons, n_bins)
    tp = TuningParams(bin_s=bin_s, peak_rate_hz=peak_rate_hz, baseline_hz=baseline_hz)
    check_positive("kappa", kappa)
    check_positive("angular_speed_sd", angular_speed_sd)
    check_positive("tau_s", tau_s)
    rng = check_random_state(random_state)
    omega = _ou(rng, n_bins, 1, sd=angular_speed_sd, tau_s=tau_s, dt=bin_s)[:, 0]
    heading = (rng.uniform(0, 2 * np.pi) + np.cumsum(omega) * bin_s) % (2 * np.pi)
    preferred = (rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(n_neurons) / n_neurons) % (2 * np.pi)
    tuning = np.exp(kappa * (np.cos(heading[:, None] - preferred[None, :]) - 1))
    rates = tp.baseline_hz + (tp.peak_rate_hz - tp.baseline_hz) * tuning
    counts = _poisson(rng, rates, bin_s)
    time = (np.arange(n_bins) + 0.5) * bin_s
    return SimulatedPopulation(counts, heading / (2 * np.pi), rates, preferred / (2 * np.pi), time,
                               extra={"angular_velocity": omega})


_BASES = {
    "hexagonal": np.array([[1.0, 0.5], [0.0, np.sqrt(3) / 2]]),   # columns: lattice vectors
    "square": np.eye(2),
}


def _grid_tuning(u: np.ndarray, lattice: str) -> np.ndarray:
    """Periodic tuning g(u) in [0, 1] of the phase offset u [..., 2] (max 1 at u = 0)."""
    c1, c2 = np.cos(2 * np.pi * u[..., 0]), np.cos(2 * np.pi * u[..., 1])
    if lattice == "hexagonal":
        return (c1 + c2 + np.cos(2 * np.pi * (u[..., 0] + u[..., 1])) + 1.5) / 4.5
    return (c1 + c2 + 2.0) / 4.0


def grid_cells(n_neurons: int = 64, n_bins: int = 20_000, *, bin_s: float = 0.05,
               peak_rate_hz: float = 20.0, baseline_hz: float = 0.5, kappa: float = 4.0,
               spacing_cm: float = 50.0, speed_cm_s: float = 20.0, tau_s: float = 1.0,
               lattice: str = "hexagonal", random_state=None) -> SimulatedPopulation:
    """One grid-cell module: rates periodic in the 2-D phase of the animal on the module torus.

    Parameters
    ----------
    n_neurons : int > 0
    n_bins : int > 0
    bin_s : float > 0
        Bin width in seconds.
    peak_rate_hz, baseline_hz : float
    kappa : float > 0
        Sharpness of the fields (rate = baseline + (peak - baseline) exp(kappa (g - 1)),
        g in [0, 1], see the module docstring).
    spacing_cm : float > 0
        Grid spacing (distance between neighbouring fields).
    speed_cm_s : float > 0
        Standard deviation of each velocity component (the OU velocity process).
    tau_s : float > 0
        Correlation time of the velocity.
    lattice : {"hexagonal", "square"}
        Rhombic (60 degree) torus with hexagonal fields, or square torus.
    random_state : None, int or np.random.Generator

    Returns
    -------
    SimulatedPopulation
        ``latent``: phase in [0, 1)^2 [shape=(n_bins, 2)] in lattice coordinates;
        ``preferred``: each cell's phase [shape=(n_neurons, 2)]; ``extra["position_cm"]``.
    """
    _check_sizes(n_neurons, n_bins)
    tp = TuningParams(bin_s=bin_s, peak_rate_hz=peak_rate_hz, baseline_hz=baseline_hz)
    for name, v in (("kappa", kappa), ("spacing_cm", spacing_cm), ("speed_cm_s", speed_cm_s),
                    ("tau_s", tau_s)):
        check_positive(name, v)
    check_option("lattice", lattice, tuple(_BASES))
    rng = check_random_state(random_state)
    vel = _ou(rng, n_bins, 2, sd=speed_cm_s, tau_s=tau_s, dt=bin_s)
    pos = np.cumsum(vel, axis=0) * bin_s + rng.uniform(0, spacing_cm, size=2)
    phase = (np.linalg.solve(_BASES[lattice], pos.T / spacing_cm).T) % 1.0
    preferred = rng.uniform(0, 1, size=(n_neurons, 2))
    u = phase[:, None, :] - preferred[None, :, :]
    tuning = np.exp(kappa * (_grid_tuning(u, lattice) - 1.0))
    rates = tp.baseline_hz + (tp.peak_rate_hz - tp.baseline_hz) * tuning
    counts = _poisson(rng, rates, bin_s)
    time = (np.arange(n_bins) + 0.5) * bin_s
    return SimulatedPopulation(counts, phase, rates, preferred, time,
                               extra={"position_cm": pos, "lattice": lattice,
                                      "spacing_cm": spacing_cm})


def place_cells_linear_track(n_neurons: int = 50, n_bins: int = 10_000, *, bin_s: float = 0.05,
                             peak_rate_hz: float = 20.0, baseline_hz: float = 0.2,
                             track_length_cm: float = 200.0, field_width_cm: float = 10.0,
                             speed_cm_s: float = 25.0, random_state=None) -> SimulatedPopulation:
    """Place cells on a linear track run back and forth.

    Parameters
    ----------
    n_neurons : int > 0
    n_bins : int > 0
    bin_s : float > 0
    peak_rate_hz, baseline_hz : float
    track_length_cm : float > 0
    field_width_cm : float > 0
        Standard deviation of the Gaussian place fields.
    speed_cm_s : float > 0
        Mean running speed; it varies smoothly (+-40 %) within a lap, never below 20 % of it.
    random_state : None, int or np.random.Generator

    Returns
    -------
    SimulatedPopulation
        ``latent``: position / track length in [0, 1] [shape=(n_bins,)]; ``preferred``: field
        centres / track length; ``extra["direction"]``: +1 running up, -1 running down.
    """
    _check_sizes(n_neurons, n_bins)
    tp = TuningParams(bin_s=bin_s, peak_rate_hz=peak_rate_hz, baseline_hz=baseline_hz)
    for name, v in (("track_length_cm", track_length_cm), ("field_width_cm", field_width_cm),
                    ("speed_cm_s", speed_cm_s)):
        check_positive(name, v)
    rng = check_random_state(random_state)
    speed = speed_cm_s * np.maximum(
        1.0 + _ou(rng, n_bins, 1, sd=0.4, tau_s=2.0, dt=bin_s)[:, 0], 0.2)
    distance = rng.uniform(0, 2 * track_length_cm) + np.cumsum(speed) * bin_s
    lap = distance % (2 * track_length_cm)
    position = np.where(lap < track_length_cm, lap, 2 * track_length_cm - lap)
    direction = np.where(lap < track_length_cm, 1, -1)
    centres = (np.arange(n_neurons) + rng.uniform(0, 1, n_neurons)) / n_neurons * track_length_cm
    tuning = np.exp(-0.5 * ((position[:, None] - centres[None, :]) / field_width_cm) ** 2)
    rates = tp.baseline_hz + (tp.peak_rate_hz - tp.baseline_hz) * tuning
    counts = _poisson(rng, rates, bin_s)
    time = (np.arange(n_bins) + 0.5) * bin_s
    return SimulatedPopulation(counts, position / track_length_cm, rates,
                               centres / track_length_cm, time,
                               extra={"position_cm": position, "direction": direction})


@dataclass(frozen=True)
class SimulatedCells:
    """Simulated cell-type counts with their ground truth.

    Attributes
    ----------
    matrix : CountMatrix
        Counts (cells x genes, CSR); ``obs["cell_type"]`` and ``obs["library_size"]``,
        ``var["marker_of"]`` (-1 for non-markers).
    cell_type : np.ndarray [shape=(n_cells,), int64, in [0, n_types)]
    proportions : np.ndarray [shape=(n_types, n_genes)], rows sum to 1
    library_size : np.ndarray [shape=(n_cells,), int64]
    markers : np.ndarray [shape=(n_types, n_markers), int64]
        Gene indices of each type's markers.
    """

    matrix: CountMatrix
    cell_type: np.ndarray
    proportions: np.ndarray
    library_size: np.ndarray
    markers: np.ndarray


def simulate_cell_types(n_cells: int = 2000, n_genes: int = 2000, n_types: int = 5, *,
                        n_markers: int = 20, marker_fold_change: float = 8.0,
                        library_size_median: float = 3000.0, library_size_sdlog: float = 0.5,
                        theta: float | None = None, random_state=None) -> SimulatedCells:
    """Multinomial counts of cells of known types with type-specific marker genes.

    Parameters
    ----------
    n_cells, n_genes, n_types : int > 0
        ``n_types * n_markers`` must not exceed ``n_genes`` (markers are disjoint).
    n_markers : int > 0
        Marker genes per type.
    marker_fold_change : float > 1
        Factor applied to a type's markers before renormalising its profile.
    library_size_median : float > 0
        Median total UMI count per cell.
    library_size_sdlog : float >= 0
        Standard deviation of log library size.
    theta : float > 0 or None
        If given, each cell's proportions are multiplied by independent Gamma(theta, 1/theta)
        noise before sampling (extra-Poisson variation, negative binomial-like); None gives
        pure multinomial sampling.
    random_state : None, int or np.random.Generator

    Returns
    -------
    SimulatedCells
    """
    for name, v in (("n_cells", n_cells), ("n_genes", n_genes), ("n_types", n_types),
                    ("n_markers", n_markers)):
        check_positive(name, v, integer=True)
    check_positive("library_size_median", library_size_median)
    check_positive("library_size_sdlog", library_size_sdlog, allow_zero=True)
    if not marker_fold_change > 1:
        raise ParameterError(f"marker_fold_change must be > 1; got {marker_fold_change!r}")
    if theta is not None:
        check_positive("theta", theta)
    if n_types * n_markers > n_genes:
        raise ParameterError(f"n_types * n_markers = {n_types * n_markers} exceeds n_genes = "
                             f"{n_genes}")
    rng = check_random_state(random_state)
    base = rng.lognormal(0.0, 1.5, size=n_genes)
    marker_genes = rng.permutation(n_genes)[: n_types * n_markers].reshape(n_types, n_markers)
    profiles = np.tile(base, (n_types, 1))
    for t in range(n_types):
        profiles[t, marker_genes[t]] *= marker_fold_change
    profiles /= profiles.sum(axis=1, keepdims=True)
    cell_type = rng.integers(0, n_types, size=n_cells)
    lib = np.maximum(np.rint(library_size_median * rng.lognormal(0.0, library_size_sdlog, n_cells)),
                     1).astype(np.int64)
    p = profiles[cell_type]
    if theta is not None:
        p = p * rng.gamma(theta, 1.0 / theta, size=p.shape)
        p /= p.sum(axis=1, keepdims=True)
    counts = rng.multinomial(lib, p)
    marker_of = np.full(n_genes, -1, dtype=np.int64)
    for t in range(n_types):
        marker_of[marker_genes[t]] = t
    cells = np.asarray([f"cell{i}" for i in range(n_cells)], dtype=object)
    genes = np.asarray([f"gene{k}" for k in range(n_genes)], dtype=object)
    obs = pd.DataFrame({"cell_type": pd.Categorical(cell_type), "library_size": lib},
                       index=pd.Index(cells, name="cell"))
    var = pd.DataFrame({"marker_of": marker_of}, index=pd.Index(genes, name="gene"))
    cm = CountMatrix(sparse.csr_matrix(counts.astype(np.float32)), cells, genes, obs=obs, var=var)
    return SimulatedCells(cm, cell_type.astype(np.int64), profiles, lib, marker_genes)
