"""vocalatent: low-dimensional generative maps (QLVM) of vocalizations, cells and neurons.

The main entry points are reachable from the top level (imported on first use, so that
``import vocalatent`` stays light)::

    import vocalatent
    ds = vocalatent.embed("recordings/", "out/")        # the end-to-end job
    model = vocalatent.QLVM(latent_dim=2).fit(X)         # the estimator on any array
"""

from ._utils import DataError, NotFittedError, ParameterError, VocalatentError
from ._version import __version__

_LAZY = {
    "QLVM": ("vocalatent.model", "QLVM"),
    "embed": ("vocalatent.workflow", "embed"),
    "project_recordings": ("vocalatent.workflow", "project_recordings"),
    "read_embedding": ("vocalatent.embedding", "read_embedding"),
    "VAE": ("vocalatent.baselines", "VAE"),
    "IWAE": ("vocalatent.baselines", "IWAE"),
}
#: submodules reachable as attributes (``vocalatent.tl.qlvm``), imported on first use
_SUBMODULES = ("tl",)

__all__ = ["__version__", "DataError", "NotFittedError", "ParameterError", "VocalatentError", *_LAZY,
           *_SUBMODULES]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"vocalatent.{name}")
    raise AttributeError(f"module 'vocalatent' has no attribute {name!r}")
