"""Analyses on the latent torus [0, 1)^d: density, clusters, Jacobian map, boundaries, geodesics.

Each submodule is plain NumPy/SciPy (torch only to call decoders); the ``ds.vl`` accessor
(:mod:`vocalatent.accessor`) reaches all of it from an embedding Dataset.
"""

from .clusters import ClusterResult, find_clusters
from .density import GridKDE, aggregate_posterior, interpolate_grid, periodic_kde, select_bandwidth
from .geodesic import GeodesicResult, geodesic, path_length
from .jacobian import Boundaries, boundaries, boundary_strength, jacobian_norm_grid
from .torus import (
    TorusAlignment,
    align_to_reference,
    circular_correlation,
    circular_mean,
    grid_centres,
    grid_points,
    resultant_length,
    torus_distance,
    wrap,
    wrapped_diff,
)

__all__ = [
    "Boundaries",
    "ClusterResult",
    "GeodesicResult",
    "GridKDE",
    "TorusAlignment",
    "aggregate_posterior",
    "align_to_reference",
    "boundaries",
    "boundary_strength",
    "circular_correlation",
    "circular_mean",
    "find_clusters",
    "geodesic",
    "grid_centres",
    "grid_points",
    "interpolate_grid",
    "jacobian_norm_grid",
    "path_length",
    "periodic_kde",
    "resultant_length",
    "select_bandwidth",
    "torus_distance",
    "wrap",
    "wrapped_diff",
]
