"""Calling decoders: device inference, chunked decoding, validation of the output shape.

A *decoder* is any callable ``f(z: torch.Tensor [n, d]) -> torch.Tensor [n, D]`` (the decoded
mean in data space), differentiable with torch.func. ``QLVM.mean_function()`` returns one.
"""

from __future__ import annotations

import numpy as np

from .._utils import DataError, ParameterError, check_positive, resolve_device

__all__ = ["decoder_device", "decode", "model_decoder"]


def decoder_device(f, device=None):
    """The torch device to evaluate ``f`` on.

    ``device=None`` infers it: ``f.device`` when the callable has one, else the device of its
    first parameter when it is a ``torch.nn.Module``, else the CPU. Any other value goes through
    :func:`vocalatent._utils.resolve_device` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``).
    """
    import torch

    if device is not None:
        return resolve_device(device)
    dev = getattr(f, "device", None)
    if isinstance(dev, (str, torch.device)):
        return torch.device(dev)
    if isinstance(f, torch.nn.Module):
        for p in f.parameters():
            return p.device
    return torch.device("cpu")


def check_output(out, n: int, what: str = "decoder"):
    """Validate a decoder output: a 2-D tensor with one row per input point."""
    import torch

    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != n:
        shape = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        raise DataError(f"{what} must return a tensor of shape (n, D) = ({n}, D); got {shape}")
    return out


def decode(f, z, *, chunk_size: int = 4096, device=None, dtype=None) -> np.ndarray:
    """Decode latent points in chunks, without gradients.

    Parameters
    ----------
    f : callable
        Decoder ``[n, d] -> [n, D]``.
    z : np.ndarray [shape=(n, d), range [0, 1)]
    chunk_size : int
        Points per decoder call (bounds memory to ``chunk_size * D`` outputs at a time).
    device : str or torch.device, optional
        See :func:`decoder_device`.
    dtype : torch.dtype, optional
        Input dtype (default float32).

    Returns
    -------
    np.ndarray [shape=(n, D), float32 or the decoder's dtype]
    """
    import torch

    check_positive("chunk_size", chunk_size, integer=True)
    dev = decoder_device(f, device)
    dtype = torch.float32 if dtype is None else dtype
    z = np.asarray(z, dtype=float)
    if z.ndim != 2:
        raise ParameterError(f"z must have shape (n, d); got shape {z.shape}")
    parts = []
    with torch.no_grad():
        for start in range(0, z.shape[0], chunk_size):
            zc = torch.as_tensor(z[start:start + chunk_size], dtype=dtype, device=dev)
            parts.append(check_output(f(zc), zc.shape[0]).detach().cpu().numpy())
    if not parts:
        raise ParameterError("no points to decode")
    return np.concatenate(parts, axis=0)


def model_decoder(model):
    """``(f, latent_dim, output_shape, device)`` from a model with ``mean_function()``.

    The model must have ``mean_function()``, ``latent_dim`` and ``output_shape`` (``None`` or
    ``(F, T)``); ``device_`` (fitted estimators) or ``device`` is used when present.
    """
    if not callable(getattr(model, "mean_function", None)):
        raise ParameterError(f"model must have a mean_function() method; got {type(model).__name__}")
    latent_dim = getattr(model, "latent_dim", None)
    if not isinstance(latent_dim, (int, np.integer)) or latent_dim < 1:
        raise ParameterError(f"model.latent_dim must be a positive integer; got {latent_dim!r}")
    # fitted vocalatent estimators expose the item shape as ``output_shape_``; image items
    # are (F, T), vector items (D,), which has no image shape
    output_shape = getattr(model, "output_shape_", None) or getattr(model, "output_shape", None)
    if output_shape is not None and len(tuple(output_shape)) != 2:
        output_shape = None
    if output_shape is not None:
        output_shape = tuple(int(s) for s in output_shape)
    device = getattr(model, "device_", None) or getattr(model, "device", None)
    return model.mean_function(), int(latent_dim), output_shape, device
