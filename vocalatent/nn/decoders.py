"""Decoders: networks from latent points z in [0, 1)^d to likelihood parameters.

Every decoder maps ``z`` of shape ``(m, d)`` to parameters of shape ``(m, P, D)``: ``P``
output channels per feature (what the likelihood needs, e.g. 1 mean, or a mean and a
log-variance) for ``D`` features. Decoders for the QLVM start with a periodic input layer
``phi(z) = [cos 2 pi k z, sin 2 pi k z]_{k=1..K}``, which makes the decoded output a smooth
periodic function on the torus — exactly what makes a shifted lattice rule converge fast.
Decoders for Gaussian-prior models (the VAE/IWAE baselines) use ``input_map="identity"``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._utils import ParameterError, check_option, check_positive

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "silu": nn.SiLU}


class PeriodicEmbedding(nn.Module):
    """``phi(z) = [cos 2 pi k z, sin 2 pi k z]`` for harmonics ``k = 1..n_harmonics``.

    Parameters
    ----------
    latent_dim : int
        d.
    n_harmonics : int >= 1
        Number of harmonics K; the output has ``2 * d * K`` features.
    """

    def __init__(self, latent_dim: int, n_harmonics: int = 1):
        super().__init__()
        check_positive("n_harmonics", n_harmonics, integer=True)
        self.latent_dim = latent_dim
        self.n_harmonics = n_harmonics
        self.register_buffer("freqs", 2 * math.pi * torch.arange(1, n_harmonics + 1, dtype=torch.float32))
        self.out_features = 2 * latent_dim * n_harmonics

    def forward(self, z):
        angles = (z[:, :, None] * self.freqs).reshape(z.shape[0], -1)
        return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def _input_layer(latent_dim: int, input_map: str, n_harmonics: int):
    check_option("input_map", input_map, ("periodic", "identity"))
    if input_map == "periodic":
        layer = PeriodicEmbedding(latent_dim, n_harmonics)
        return layer, layer.out_features
    return nn.Identity(), latent_dim


def _mlp(sizes, activation):
    act = _ACTIVATIONS[activation]
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    return layers


class MLPDecoder(nn.Module):
    """Fully connected decoder: ``phi(z)`` -> hidden layers -> ``(P, D)`` outputs.

    Parameters
    ----------
    latent_dim : int
        d.
    n_features : int
        D.
    n_params : int
        P, output channels per feature (set by the likelihood).
    hidden : sequence of int
        Hidden layer widths.
    activation : {"gelu", "relu", "elu", "tanh", "silu"}
    input_map : {"periodic", "identity"}
    n_harmonics : int
        Harmonics of the periodic input layer.
    """

    def __init__(self, latent_dim: int, n_features: int, *, n_params: int = 1,
                 hidden=(256, 256), activation: str = "gelu", input_map: str = "periodic",
                 n_harmonics: int = 1):
        super().__init__()
        check_option("activation", activation, tuple(_ACTIVATIONS))
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ParameterError(f"hidden must be a non-empty list of positive widths; got {hidden!r}")
        self.latent_dim, self.n_features, self.n_params = latent_dim, n_features, n_params
        self.config = dict(hidden=list(hidden), activation=activation)
        self.input, n_in = _input_layer(latent_dim, input_map, n_harmonics)
        self.body = nn.Sequential(*_mlp((n_in,) + hidden, activation))
        self.head = nn.Linear(hidden[-1], n_params * n_features)

    def forward(self, z):
        h = self.body(self.input(z))
        return self.head(h).reshape(z.shape[0], self.n_params, self.n_features)


class ConvDecoder(nn.Module):
    """Convolutional decoder for F x T images (syllable spectrograms).

    ``phi(z)`` -> MLP -> a ``(C0, F0, T0)`` feature map -> ``n_up`` transposed convolutions
    that each double the size and halve the channels -> a 3x3 convolution to ``P`` channels ->
    (optionally) bilinear upsampling by ``upsample`` -> centre crop to ``(F, T)``. Sized from ``output_shape``; any F, T work (the start map is
    ``ceil(F / 2**n_up)``).

    Parameters
    ----------
    latent_dim : int
    output_shape : (int, int)
        (F, T), e.g. (128, 128).
    n_params : int
        Output channels per pixel (set by the likelihood).
    base_channels : int
        Channels of the first feature map C0 (halved at each doubling, at least 4). The
        default 32 costs about 3 M multiply-adds per decoded 128 x 128 image, so that a
        training step with m = 987 lattice points is ~20 GFLOP (forward and backward).
    n_up : int or None
        Number of doubling stages; default: as many as keep the start map >= 4 pixels, at most 4.
    hidden : int
        Width of the MLP before the feature map.
    upsample : {"auto", 1, 2}
        ``2``: the convolutions make an (F/2, T/2) image that is upsampled bilinearly — about
        3x cheaper per decoded point (measured on CPU at 128 x 128), at the price of detail
        finer than 2 pixels. ``"auto"``: 2 when both sides are >= 96, else 1.
    channels_last : {"auto", True, False}, default "auto"
        Feed the convolutions their input in channels-last (NHWC) memory order: ``"auto"`` on
        CPU only, ``True`` always, ``False`` never (the order before session 12). On the
        2-core CPU the README job's decoder pass at m = 377 (forward and backward) takes
        0.23-0.29 s instead of 0.42-0.46 s, with outputs within 3e-7 of NCHW order
        (``benchmarks/bench_decoder_options.py``); it is what brings the README job's new
        training defaults under the old defaults' wall time (docs/benchmarks.md, "The
        end-to-end job on CPU"). Every fit takes another floating-point path than in NCHW
        order, so fits of the same seed differ from those of earlier versions by as much as
        fits of two seeds do. Inside ``torch.func.vmap`` (the Jacobian map) the decoder falls
        back to NCHW. Not measured on a GPU.
    """

    def __init__(self, latent_dim: int, output_shape, *, n_params: int = 1,
                 base_channels: int = 32, n_up: int | None = None, hidden: int = 256,
                 activation: str = "gelu", input_map: str = "periodic", n_harmonics: int = 1,
                 upsample="auto", channels_last="auto"):
        super().__init__()
        check_option("activation", activation, tuple(_ACTIVATIONS))
        if len(output_shape) != 2 or min(output_shape) < 1:
            raise ParameterError(f"output_shape must be (F, T) with positive sizes; got {output_shape!r}")
        f_out, t_out = (int(s) for s in output_shape)
        if upsample == "auto":
            upsample = 2 if min(f_out, t_out) >= 96 else 1
        if upsample not in (1, 2):
            raise ParameterError(f"upsample must be 'auto', 1 or 2; got {upsample!r}")
        self.upsample = int(upsample)
        f, t = math.ceil(f_out / self.upsample), math.ceil(t_out / self.upsample)
        if n_up is None:
            n_up = max(0, min(4, int(math.floor(math.log2(max(min(f, t), 4) / 4)))))
        self.output_shape, self.n_params, self.n_up = (f_out, t_out), n_params, n_up
        self._conv_shape = (f, t)
        if channels_last not in ("auto", True, False):
            raise ParameterError(f"channels_last must be 'auto', True or False; got {channels_last!r}")
        self.channels_last = channels_last
        self.config = dict(base_channels=base_channels, n_up=n_up, hidden=hidden, activation=activation,
                           upsample=self.upsample, channels_last=self.channels_last)
        self.latent_dim, self.n_features = latent_dim, f_out * t_out
        self.f0, self.t0 = math.ceil(f / 2**n_up), math.ceil(t / 2**n_up)
        self.c0 = base_channels
        act = _ACTIVATIONS[activation]
        self.input, n_in = _input_layer(latent_dim, input_map, n_harmonics)
        self.mlp = nn.Sequential(*_mlp((n_in, hidden), activation),
                                 nn.Linear(hidden, self.c0 * self.f0 * self.t0), act())
        layers, c = [], self.c0
        for _ in range(n_up):
            c_out = max(c // 2, 4)
            layers += [nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1), act()]
            c = c_out
        layers.append(nn.Conv2d(c, n_params, 3, padding=1))
        self.conv = nn.Sequential(*layers)

    def forward(self, z):
        h = self.mlp(self.input(z)).reshape(z.shape[0], self.c0, self.f0, self.t0)
        if self.channels_last is True or (self.channels_last == "auto" and h.device.type == "cpu"):
            # the CPU convolutions run ~1.8x faster on NHWC input (the weights may stay NCHW)
            try:
                h = h.contiguous(memory_format=torch.channels_last)
            except RuntimeError:
                pass    # inside torch.func.vmap (the Jacobian map) only NCHW is supported
        out = self.conv(h)
        if self.upsample > 1:
            cf, ct = self._conv_shape
            dcf, dct = (out.shape[2] - cf) // 2, (out.shape[3] - ct) // 2
            out = nn.functional.interpolate(out[:, :, dcf:dcf + cf, dct:dct + ct],
                                            scale_factor=self.upsample, mode="bilinear")
        f, t = self.output_shape
        df, dt = (out.shape[2] - f) // 2, (out.shape[3] - t) // 2
        out = out[:, :, df:df + f, dt:dt + t]
        return out.reshape(z.shape[0], self.n_params, f * t)


DECODERS = ("mlp", "conv")


def make_decoder(kind: str, latent_dim: int, n_features: int, *, n_params: int = 1,
                 output_shape=None, **options) -> nn.Module:
    """Build a decoder by name (``"mlp"`` or ``"conv"``), sized from the data's shape."""
    check_option("decoder", kind, DECODERS)
    if kind == "conv":
        if output_shape is None:
            raise ParameterError("decoder='conv' needs 2-D items (N, F, T) or output_shape=(F, T)")
        if int(output_shape[0]) * int(output_shape[1]) != n_features:
            raise ParameterError(f"output_shape {tuple(output_shape)} does not match {n_features} features")
        return ConvDecoder(latent_dim, output_shape, n_params=n_params, **options)
    return MLPDecoder(latent_dim, n_features, n_params=n_params, **options)
