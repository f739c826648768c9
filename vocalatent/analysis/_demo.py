"""A synthetic 'song map' with known syllable types, for tests, examples and the docs figures.

:class:`SyntheticSyllableDecoder` is a smooth periodic decoder ``[n, d] -> [n, F*T]`` whose
output is a soft mixture of per-type spectrogram templates (harmonic stacks, up/down sweeps,
a broadband burst...). The mixture weights are a softmax of ``sharpness * sum_k cos 2pi(z_k -
c_type,k)``, so the decoded spectrogram is nearly constant inside each type's region (up to a
small within-type pitch variation) and changes fast along the borders between regions: the
Jacobian map has known ridges and the types have known centres. It quacks like a fitted model
(``latent_dim``, ``output_shape``, ``mean_function()``), so the accessor and plots can use it.

Run ``python -m vocalatent.analysis._demo OUTDIR`` to render the figures of docs/analysis.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .._utils import ParameterError, check_positive, check_random_state
from .torus import wrap

__all__ = ["SyntheticSyllableDecoder", "synthetic_embedding_dataset", "DEFAULT_CENTRES"]

#: Type centres per latent dimension; type 0 straddles the 0/1 seam of the first axis.
DEFAULT_CENTRES = {
    1: [[0.02], [0.27], [0.52], [0.77]],
    2: [[0.02, 0.3], [0.45, 0.2], [0.3, 0.7], [0.75, 0.65]],
    3: [[0.02, 0.3, 0.2], [0.45, 0.2, 0.7], [0.3, 0.7, 0.45], [0.75, 0.65, 0.9]],
}
_TYPE_NAMES = ["A", "B", "C", "D", "E", "F", "G", "H"]


class SyntheticSyllableDecoder:
    """Decoder of a synthetic song map with known syllable types.

    Parameters
    ----------
    latent_dim : int in {1, 2, 3}
    centres : array [shape=(k, d), range [0, 1)], optional
        Type centres (default :data:`DEFAULT_CENTRES`, 4 types).
    output_shape : tuple (F, T)
        Spectrogram size (frequency bins, time bins).
    sharpness : float
        Softmax gain; larger = flatter regions and sharper borders.
    dtype : torch.dtype, optional
        Float dtype of the computation (float32 default; float64 for references).
    """

    def __init__(self, latent_dim: int = 2, *, centres=None, output_shape=(32, 32),
                 sharpness: float = 12.0, dtype=None):
        import torch

        if latent_dim not in (1, 2, 3):
            raise ParameterError(f"latent_dim must be 1, 2 or 3; got {latent_dim!r}")
        check_positive("sharpness", sharpness)
        c = np.asarray(DEFAULT_CENTRES[latent_dim] if centres is None else centres, dtype=float)
        if c.ndim != 2 or c.shape[1] != latent_dim or not 2 <= c.shape[0] <= len(_TYPE_NAMES):
            raise ParameterError(f"centres must have shape (k, {latent_dim}) with 2 <= k <= 8; got {c.shape}")
        self.latent_dim = int(latent_dim)
        self.output_shape = tuple(int(s) for s in output_shape)
        self.centres = wrap(c)
        self.sharpness = float(sharpness)
        self.dtype = torch.float32 if dtype is None else dtype
        self.device = torch.device("cpu")
        self.type_names = _TYPE_NAMES[: c.shape[0]]

    def mean_function(self):
        """The decoder itself (the model interface used by the analyses)."""
        return self

    def weights(self, z):
        """Soft type memberships [n, k] of latent points z [n, d] (torch)."""
        import torch

        c = torch.as_tensor(self.centres, dtype=z.dtype, device=z.device)
        s = torch.cos(2 * np.pi * (z[:, None, :] - c[None, :, :])).sum(-1)
        return torch.softmax(self.sharpness * s, dim=1)

    def _templates(self, z):
        import torch

        F, T = self.output_shape
        dt = z.dtype
        phi = torch.linspace(0.0, 1.0, F, dtype=dt, device=z.device)[:, None]   # frequency axis
        tau = torch.linspace(0.0, 1.0, T, dtype=dt, device=z.device)[None, :]   # time axis
        c = torch.as_tensor(self.centres, dtype=dt, device=z.device)
        # within-type variation: a smooth periodic pitch offset of the local position
        wobble = 0.02 * torch.sin(2 * np.pi * (z[:, None, 0] - c[None, :, 0]))      # [n, k]
        env = torch.sin(np.pi * tau).clamp(min=0) ** 0.7
        outs = []
        for k in range(c.shape[0]):
            w = wobble[:, k][:, None, None]
            kind = k % 4
            if kind == 0:    # harmonic stack
                f0 = 0.14 + w
                spec = sum(torch.exp(-((phi - h * f0) ** 2) / (2 * 0.02 ** 2)) / h for h in (1, 2, 3, 4))
            elif kind == 1:  # up-sweep
                track = 0.2 + 0.5 * tau + w
                spec = torch.exp(-((phi - track) ** 2) / (2 * 0.03 ** 2))
            elif kind == 2:  # down-sweep with a harmonic
                track = 0.55 - 0.3 * tau + w
                spec = torch.exp(-((phi - track) ** 2) / (2 * 0.03 ** 2)) \
                    + 0.5 * torch.exp(-((phi - 2 * track) ** 2) / (2 * 0.03 ** 2))
            else:            # broadband burst, short
                band = torch.exp(-((phi - 0.5 - w) ** 2) / (2 * 0.2 ** 2))
                spec = band * torch.exp(-((tau - 0.35) ** 2) / (2 * 0.08 ** 2))
            img = spec if kind == 3 else spec * env
            outs.append(img.expand(z.shape[0], F, T).reshape(z.shape[0], F * T))
        return torch.stack(outs, dim=1)  # [n, k, F*T]

    def __call__(self, z):
        """Decoded spectrograms, flattened: [n, d] -> [n, F*T] (values roughly in [0, 1.5])."""
        import torch

        z = torch.as_tensor(z, dtype=self.dtype)
        w = self.weights(z)
        return (w[:, :, None] * self._templates(z)).sum(1)


def synthetic_embedding_dataset(decoder: SyntheticSyllableDecoder | None = None, *,
                                n_per_type=200, spread: float = 0.035, random_state=None):
    """An embedding Dataset (the engine's schema) of items scattered round the type centres.

    Parameters
    ----------
    decoder : SyntheticSyllableDecoder, optional
        Default: a 2-D one.
    n_per_type : int or sequence of int
        Items per type.
    spread : float
        Standard deviation (turns) of the wrapped normal scatter round each centre.
    random_state : None, int or numpy Generator

    Returns
    -------
    xarray.Dataset
        ``embedding``, ``map_point``, ``spread``, ``log_likelihood`` on (item, latent); coordinates
        ``source``, ``onset_s``, ``offset_s``, ``duration_s``, ``label`` (the true type) and
        ``true_type`` (int); attrs as the engine writes them.
    """
    import xarray as xr

    dec = SyntheticSyllableDecoder(2) if decoder is None else decoder
    rng = check_random_state(random_state)
    k = dec.centres.shape[0]
    counts = np.broadcast_to(np.asarray(n_per_type, dtype=int), (k,))
    types = np.repeat(np.arange(k), counts)
    n, d = types.size, dec.latent_dim
    offset = rng.normal(0.0, spread, (n, d))
    emb = wrap(dec.centres[types] + offset)
    onset = np.sort(rng.uniform(0, 60, n))
    duration = rng.uniform(0.05, 0.2, n)
    ds = xr.Dataset(
        {
            "embedding": (("item", "latent"), emb),
            "map_point": (("item", "latent"), wrap(emb + rng.normal(0, 0.005, (n, d)))),
            # items far from their type's centre are more ambiguous: broader posteriors
            "spread": (("item", "latent"),
                       np.clip(0.005 + 0.4 * np.abs(offset) + rng.uniform(0, 0.01, (n, d)), 0, 1)),
            "log_likelihood": ("item", rng.normal(1500.0, 40.0, n)),
        },
        coords={
            "item": np.arange(n),
            "latent": np.arange(d),
            "source": ("item", np.array([f"bird{i % 2 + 1}/song_{i % 5:02d}.wav" for i in range(n)])),
            "onset_s": ("item", onset),
            "offset_s": ("item", onset + duration),
            "duration_s": ("item", duration),
            "label": ("item", np.array(dec.type_names)[types]),
            "true_type": ("item", types),
        },
        attrs={"vocalatent_version": "synthetic", "config": json.dumps({"synthetic": True}),
               "seed": 0, "lattice": json.dumps({"n": 0}), "latent_dim": d},
    )
    return ds


def render_docs_figures(outdir) -> list:
    """Render the figures of docs/analysis.md into ``outdir`` (PNG); returns the paths."""
    import pandas as pd

    from .. import accessor  # noqa: F401  (registers ds.vl)
    from .. import plot

    out = Path(outdir)
    paths = []
    dec = SyntheticSyllableDecoder(2, output_shape=(32, 32))
    ds = synthetic_embedding_dataset(dec, n_per_type=[900, 600, 400, 250], spread=0.04,
                                     random_state=0)
    ds = ds.vl.clusters(resolution=96)
    ds = ds.vl.jacobian(dec)

    def save(fig, name):
        p = out / f"analysis_{name}.png"
        plot.save_figure(fig, p)
        paths.append(p)

    save(plot.plot_latent_map(dec, dec.output_shape, n_tiles=10).figure, "latent_map")
    save(ds.vl.plot_embedding(color="cluster").figure, "embedding_cluster")
    save(ds.vl.plot_embedding(color="spread").figure, "embedding_spread")
    save(ds.vl.plot_density().figure, "density")
    save(ds.vl.plot_jacobian().figure, "jacobian")
    g = ds.vl.geodesic_between_clusters(dec, 2, 3, resolution=64)
    save(plot.plot_geodesic(g, output_shape=dec.output_shape,
                            jacobian=ds["jacobian_norm"].values), "geodesic")
    ep = np.arange(1, 41)
    hist = pd.DataFrame({"epoch": ep, "train_log_likelihood": 1500 - 400 * np.exp(-ep / 6),
                         "val_log_likelihood": 1480 - 400 * np.exp(-ep / 6) - 0.3 * ep})
    save(plot.plot_training_curves(hist).figure, "training_curves")
    lat = np.stack([np.arange(2584) / 2584, (np.arange(2584) * 1597 / 2584) % 1], axis=1)
    logw = -((wrap(lat - [0.3, 0.7] + 0.5) - 0.5) ** 2).sum(1) / (2 * 0.03 ** 2)
    logw += -((wrap(lat - [0.45, 0.2] + 0.5) - 0.5) ** 2).sum(1) / (2 * 0.02 ** 2) - 1.5
    w = np.exp(logw - logw.max())
    save(plot.plot_posterior(w / w.sum(), lat).figure, "posterior")
    dec1 = SyntheticSyllableDecoder(1)
    ds1 = synthetic_embedding_dataset(dec1, n_per_type=200, random_state=1).vl.clusters()
    save(ds1.vl.plot_embedding(color="cluster").figure, "ring")
    dec3 = SyntheticSyllableDecoder(3)
    ds3 = synthetic_embedding_dataset(dec3, n_per_type=300, random_state=2).vl.density(resolution=32)
    save(plot.plot_3d_slices(ds3["density"].values, n_slices=4, label="density (× uniform)",
                             title="Density of a 3-D embedding: slices along z3"), "slices_3d")
    return paths


if __name__ == "__main__":  # pragma: no cover - a docs helper
    for path in render_docs_figures(sys.argv[1] if len(sys.argv) > 1 else "docs/figures"):
        sys.stdout.write(f"{path}\n")
