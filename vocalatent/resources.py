"""Files shipped inside the package: the pipeline presets and the data manifests.

They live once, at the top of a checkout (``pipelines/`` and ``data_manifests/``);
``vocalatent/pipelines`` and ``vocalatent/data_manifests`` are symbolic links to those folders,
and pyproject.toml lists them as package data. So a wheel carries real copies, an editable
install and a checkout on ``PYTHONPATH`` read the checkout's files, and this module finds them
the same way in all three, through :mod:`importlib.resources`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ._utils import VocalatentError

__all__ = ["manifests_dir", "package_folder", "pipelines_dir"]


def package_folder(name: str) -> Path:
    """The folder ``name`` shipped inside the installed ``vocalatent`` package.

    Raises
    ------
    VocalatentError
        When the installation lacks it (a broken or zipped install), naming the folder.
    """
    path = Path(str(resources.files("vocalatent").joinpath(name)))
    if not path.is_dir():
        raise VocalatentError(f"the installed vocalatent package has no {name}/ folder ({path}); "
                              "reinstall it (pip install vocalatent) or run from a checkout")
    return path


def pipelines_dir() -> Path:
    """The folder of the shipped pipeline presets (``*.toml``)."""
    return package_folder("pipelines")


def manifests_dir() -> Path:
    """The folder of the shipped data manifests (``*.toml``; ``sessions/`` holds examples)."""
    return package_folder("data_manifests")
