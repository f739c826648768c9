"""The likelihood contract shared by every observation model (no model code here).

:mod:`vocalatent.nn.likelihoods` and :mod:`vocalatent.nn.negbin` both build on this module,
so neither imports the other's internals (the two used to import each other).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from .._utils import DataError

__all__ = ["Likelihood", "check_counts", "is_integer_valued"]


def is_integer_valued(x: np.ndarray) -> bool:
    """True when every entry of ``x`` is a whole number."""
    return bool(np.all(np.equal(np.mod(x, 1), 0)))


def check_counts(x: np.ndarray, name: str) -> None:
    """Raise :class:`~vocalatent.DataError` unless ``x`` holds non-negative integer counts.

    Parameters
    ----------
    x : np.ndarray
        A block of items.
    name : str
        The likelihood's name, for the message.
    """
    if np.any(x < 0):
        raise DataError(f"the {name} likelihood needs non-negative counts; found min {x.min():g}")
    if not is_integer_valued(x):
        frac = x[np.mod(x, 1) != 0]
        raise DataError(
            f"the {name} likelihood needs integer counts; found non-integer values such as "
            f"{frac[:3].tolist()} (normalized or log-transformed data? use raw counts)"
        )


class Likelihood(nn.Module):
    """Base class; see :mod:`vocalatent.nn.likelihoods` for the contract."""

    n_params: int = 1
    name: str = "likelihood"

    def setup(self, x_sample: np.ndarray) -> None:
        """Initialise data-dependent buffers from a sample of the training data (N, D)."""

    def check_data(self, x: np.ndarray) -> None:
        """Raise DataError when ``x`` lies outside the support of this likelihood."""

    def log_prob_matrix(self, x, params):
        raise NotImplementedError

    def log_prob_pairs(self, x, params):
        raise NotImplementedError

    def mean(self, params):
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"n_params={self.n_params}"
