"""vocalatent: low-dimensional generative maps (QLVM) of vocalizations, cells and neurons."""

from ._version import __version__
from ._utils import DataError, NotFittedError, ParameterError, VocalatentError

__all__ = ["__version__", "DataError", "NotFittedError", "ParameterError", "VocalatentError"]
