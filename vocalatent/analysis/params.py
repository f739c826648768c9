"""The ``[analysis]`` table: what the job computes on an embedding and draws.

A frozen dataclass whose defaults are the only defaults of these settings; the configuration
schema (:data:`vocalatent.config.schema.TABLES`) validates TOML files against it (types, and
the ``range`` / ``choices`` / ``zero`` of each field's metadata) and generates the template,
help texts and docs/config.md from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AnalysisParams"]


def _f(default, help: str, **limits):
    return field(default=default, metadata={"help": help, **limits})


@dataclass(frozen=True)
class AnalysisParams:
    """``[analysis]``: density, clusters, Jacobian map, geodesic and figures of a run."""

    clusters: bool = _f(True, "find clusters by mode seeking on the periodic density")
    jacobian: bool = _f(True, "compute the decoder Jacobian map and syllable boundaries")
    resolution: int = _f(0, "grid cells per latent axis", range=(8, 4096),
                         zero="the default grid for the latent dimension and device")
    bandwidth: float = _f(0.0, "KDE bandwidth in torus turns", range=(1e-4, 0.5),
                          zero="automatic, bandwidth_scale x the cross-validated one")
    bandwidth_scale: float = _f(1.0, "automatic bandwidth = this x the likelihood-cross-"
                                     "validated KDE bandwidth", range=(0.1, 20.0))
    cluster_method: str = _f("significance", "\"significance\": density dips judged against "
                                             "sampling noise; \"persistence\": fixed "
                                             "thresholds (the old rule)",
                             choices=("significance", "persistence"))
    significance: float = _f(2.5, "two density peaks stay separate clusters when the dip "
                                  "between them exceeds this many sampling-noise standard "
                                  "deviations", range=(0.0, 100.0))
    min_size: int = _f(5, "a group of items alone in empty space is a cluster when it has at "
                          "least this many items", range=(1, None))
    excess_mass: bool = _f(True, "with significance: a dip also counts when the lower group's "
                                 "excess mass above the pass (all its items, not only those "
                                 "near its peak) exceeds the threshold: broad groups")
    min_persistence: float = _f(0.0, "two density peaks stay separate clusters only if the "
                                     "density between them dips by this fraction",
                                range=(0.0, 1.0))
    min_relative_height: float = _f(0.0, "density peaks lower than this fraction of the "
                                         "highest peak are merged into a neighbour",
                                    range=(0.0, 1.0))
    decoder_merge: bool = _f(True, "join clusters whose items do not separate along the decoder's "
                                   "direction between them (one type laid out as several lumps)")
    separation: float = _f(6.0, "with decoder_merge: two clusters stay apart when their items' "
                                "medians along the decoder's direction are this many sds (of "
                                "the tighter cluster) apart", range=(0.0, 100.0))
    merge_linkage: str = _f("centroid", "with decoder_merge: \"centroid\" joins the closest pair "
                                        "and tests the merged cluster again; \"single\" joins "
                                        "along every close pair (the pieces of a long continuum)",
                            choices=("centroid", "single"))
    continuum_separation: float = _f(10.0, "with decoder_merge: pairs closer than this are "
                                           "joined too when their items make one mode along the "
                                           "decoder's direction (a type's continuum cut into "
                                           "pieces); at or below separation: off",
                                     range=(0.0, 100.0))
    continuum_dip: float = _f(0.5, "with decoder_merge: the pooled density of a pair's items "
                                   "along the decoder's direction counts as one mode when it "
                                   "stays above this fraction of the lower peak between the "
                                   "medians", range=(0.0, 1.0))
    decoder_dip: float = _f(1.5, "with decoder_merge: a density dip of at least this many "
                                 "sampling-noise sds (below significance) stays a border when "
                                 "the decoder separates the items on its two sides as two types",
                            range=(0.0, 100.0))
    geodesic: bool = _f(True, "draw a geodesic between the two largest clusters")
    figures: bool = _f(True, "write PNG figures to OUT/figures")
