"""Small smooth periodic decoders with known structure, shared by the analysis tests."""

from __future__ import annotations

import numpy as np
import torch


def von_mises_bump(u, kappa):
    """exp(kappa (cos 2pi u - 1)): a smooth periodic bump of height 1 at u = 0."""
    return torch.exp(kappa * (torch.cos(2 * np.pi * u) - 1))


class FlatTorus:
    """Clifford-torus embedding c [cos 2pi z_k, sin 2pi z_k]: a flat metric (2 pi c)^2 I."""

    def __init__(self, latent_dim=2, c=0.2, dtype=torch.float32):
        self.latent_dim, self.c, self.dtype = latent_dim, c, dtype

    def __call__(self, z):
        z = torch.as_tensor(z, dtype=self.dtype)
        return self.c * torch.cat([torch.cos(2 * np.pi * z), torch.sin(2 * np.pi * z)], 1)


class RidgeDecoder:
    """Flat torus plus high-cost ridges along z1 = 0.5 and z1 = 0 (2-D latent).

    ``gap=True``: the ridge at z1 = 0.5 has a gap round z2 = 0.5 (height 0 there).
    ``gap=False``: its height is 3 + 2 cos 2pi(z2 - 0.8) (lowest, 1, at z2 = 0.3).
    The ridge at z1 = 0 has height 3 everywhere. Crossing a ridge of height h costs ~2h.
    """

    def __init__(self, gap: bool):
        self.gap = gap
        self.latent_dim = 2

    def __call__(self, z):
        z = torch.as_tensor(z, dtype=torch.float32)
        base = 0.2 * torch.cat([torch.cos(2 * np.pi * z), torch.sin(2 * np.pi * z)], 1)
        if self.gap:
            height = 3.0 * (1 - von_mises_bump(z[:, 1] - 0.5, 100.0))
        else:
            height = 3.0 + 2.0 * torch.cos(2 * np.pi * (z[:, 1] - 0.8))
        ridge = height * von_mises_bump(z[:, 0] - 0.5, 200.0) + 3.0 * von_mises_bump(z[:, 0], 200.0)
        return torch.cat([base, ridge[:, None]], 1)


class TwoRegionDecoder:
    """Nearly constant on two regions (z1 near 0 and z1 near 0.5), fast change along the
    bands z1 = 0.25 and z1 = 0.75 (2-D latent, D = 6)."""

    latent_dim = 2
    output_shape = (2, 3)
    device = torch.device("cpu")

    def __init__(self, sharpness=40.0):
        self.sharpness = sharpness
        self.v1 = torch.tensor([1.0, 0.0, 2.0, 0.5, 0.0, 1.0])
        self.v2 = torch.tensor([0.0, 1.5, 0.0, 0.5, 1.0, 0.0])

    def mean_function(self):
        return self

    def __call__(self, z):
        z = torch.as_tensor(z, dtype=torch.float32)
        s = torch.sigmoid(self.sharpness * torch.cos(2 * np.pi * z[:, :1]))
        return s * self.v1 + (1 - s) * self.v2
