"""The TOML tables that belong to the job rather than to one stage's module.

``[pipeline]`` (what a preset is), ``[run]`` (what a run wrote into its ``config.toml``),
``[audio]`` (reading recordings) and ``[model]`` (the estimator and its lattice); ``[analysis]``
is :class:`vocalatent.analysis.params.AnalysisParams`. Each is a frozen dataclass whose field defaults are
the only defaults of its settings; the metadata of a field gives its help text and its limits
(``range``: inclusive ``(low, high)``, None = unbounded; ``zero``: what 0 means when 0 is
allowed outside the range; ``choices``: the allowed values), which
:mod:`vocalatent.config.schema` checks wherever the setting comes from.

``[model]`` takes its defaults from the estimator: every field that is a
:class:`~vocalatent.model.QLVM` constructor argument gets the default of ``QLVM.__init__``
(read with :func:`inspect.signature`), so ``QLVM()``, the job, the template and the help texts
share one value. The class is built on first use (``from vocalatent.config.tables import
ModelParams``), because reading the estimator imports torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from .._utils import ParameterError

__all__ = ["AudioParams", "MODEL_FIELDS", "ModelParams", "PipelineTable",
           "RunTable", "MAX_LATENT_DIM", "MAX_N_LATTICE", "MAX_N_EVAL_LATTICE"]

#: Highest latent dimension anywhere (flag, TOML, Python): the lattice size needed for a given
#: accuracy grows exponentially with the dimension (docs/method.md).
MAX_LATENT_DIM = 3
#: Largest training lattice: a step decodes every point, so the cost grows linearly with it.
MAX_N_LATTICE = 65536
#: Largest evaluation lattice (evaluation streams the points in chunks).
MAX_N_EVAL_LATTICE = 1048576


def _f(default, help: str, **limits):
    """A dataclass field with its help text and limits in the metadata."""
    kw = {"default_factory": default} if callable(default) else {"default": default}
    return field(**kw, metadata={"help": help, **limits})


@dataclass(frozen=True)
class PipelineTable:
    """``[pipeline]``: what a preset is and where its numbers come from."""

    name: str = _f("", "preset name (the file name without .toml)")
    domain: str = _f("vocal", "kind of data", choices=("vocal", "single_cell", "neural"))
    description: str = _f("", "one line on what the preset is for")
    source: str = _f("", "where the preset's numbers come from (citations, measurements)")
    extends: str = _f("", "preset name or TOML file this one starts from (its tables are merged)")
    file: str = _f("", "the file the preset was read from (written by vocalatent)")


@dataclass(frozen=True)
class RunTable:
    """``[run]``: written by a run into ``OUT/config.toml`` (the seed and input it used)."""

    seed: int = _f(0, "seed of the run", range=(0, None))
    input: str = _f("", "the input file or folder of the run")


@dataclass(frozen=True)
class AudioParams:
    """``[audio]``: how recordings are read."""

    channel: int = _f(0, "channel to analyse (0 = first), or \"all\" for each channel "
                               "as its own source", range=(0, None), also=("all",))
    chunk_s: float = _f(60.0, "seconds of audio held in memory at a time (long recordings are "
                              "read in chunks)", range=(0.1, None))
    annotations: str = _f("auto", "\"auto\": annotation files beside the audio; \"ignore\"; or "
                                  "a folder of annotation files")
    jobs: int = _f(1, "worker processes for segmentation and spectrograms (-1: all cores)",
                   range=(1, None), also=(-1,))

    def __post_init__(self):
        if self.channel != "all" and (isinstance(self.channel, bool)
                                      or not isinstance(self.channel, int) or self.channel < 0):
            raise ParameterError(f"channel must be an integer >= 0 or \"all\"; got {self.channel!r}")


_QLVM_ARGS = ("latent_dim", "likelihood", "decoder", "batch_size", "max_epochs", "lr",
              "patience", "n_harmonics", "n_restarts", "precision", "schedule")

#: The fields of ``[model]``: name -> (default or None for "from QLVM", help, limits).
MODEL_FIELDS: dict[str, tuple[Any, str, dict]] = {
    "latent_dim": (None, "dimension of the latent torus: 1 (ring), 2 (map) or 3",
                   {"range": (1, MAX_LATENT_DIM)}),
    "likelihood": (None, "observation model of each item given its latent point",
                   {"choices": "vocalatent.nn.likelihoods:LIKELIHOODS"}),
    "decoder": (None, "auto (conv for images, MLP otherwise), conv or mlp",
                {"choices": ("auto", "mlp", "conv")}),
    "n_lattice": (0, "training lattice size m (latent points decoded per step; the cost of a "
                     "step grows linearly with m)",
                  {"range": (2, MAX_N_LATTICE), "zero": "automatic by device and latent_dim"}),
    "batch_size": (None, "items per step; a step decodes m points whatever the batch size",
                   {"range": (1, None), "zero": "automatic from the cost model: equal batches no "
                                                "larger than the size where a step's likelihood "
                                                "work equals its decoder work, and at least 3 "
                                                "steps per epoch"}),
    "max_epochs": (None, "upper bound on epochs (passes over the items); early stopping on the "
                         "held-out log-likelihood usually ends sooner", {"range": (1, None)}),
    "lr": (None, "Adam learning rate", {"range": (1e-8, 10.0)}),
    "patience": (None, "epochs without held-out improvement before stopping",
                 {"range": (1, None)}),
    "n_harmonics": (None, "Fourier harmonics of the latent coordinates fed to the decoder",
                    {"range": (1, 16)}),
    "n_eval_lattice": (0, "evaluation lattice size for scores and embeddings",
                       {"range": (2, MAX_N_EVAL_LATTICE),
                        "zero": "automatic by device and latent_dim"}),
    "n_eval_shifts": (0, "random lattice shifts averaged for scores and embeddings",
                      {"range": (1, 64), "zero": "automatic by device"}),
    "validation": (0.1, "fraction of items held out for early stopping and the held-out score",
                   {"range": (0.0, 0.9)}),
    "n_restarts": (None, "independent trainings; the one with the best held-out log p(x) is "
                         "kept (fights folded maps)", {"range": (1, 100)}),
    "precision": (None, "\"32\" or \"bf16\" (bfloat16 decoder on CUDA)",
                  {"choices": ("32", "bf16")}),
    "schedule": (None, "\"auto\": learning-rate warm-up and decay on plateaus of the final "
                       "lattice, a training lattice growing to n_lattice, early stopping on the "
                       "running median of the held-out curve; \"none\": constant lr, one "
                       "lattice, raw early stopping",
                 {"choices": "vocalatent.model:SCHEDULES"}),
    "average_epochs": (5.0, "with schedule = \"auto\": epochs of the exponential moving average of "
                            "the weights that is validated, kept and returned (ignored with "
                            "schedule = \"none\")",
                       {"range": (0.1, 1000.0), "zero": "no averaging"}),
    "decoder_options": ({}, "extra decoder arguments, e.g. { hidden = [256, 256] }", {}),
    "likelihood_options": ({}, "extra likelihood arguments", {}),
}


@lru_cache(maxsize=1)
def _model_params_class():
    # by name, at run time: config is imported by every layer and imports none above base
    QLVM = importlib.import_module("vocalatent.model").QLVM
    sig = inspect.signature(QLVM.__init__).parameters
    fields = []
    for name, (default, help_text, limits) in MODEL_FIELDS.items():
        if name in _QLVM_ARGS:
            default = sig[name].default
        typ = type(default) if not isinstance(default, dict) else dict
        meta = {"help": help_text, **limits}
        if name in _QLVM_ARGS:
            meta["from"] = "QLVM"
        if isinstance(default, dict):
            fields.append((name, dict, field(default_factory=dict, metadata=meta)))
        else:
            fields.append((name, typ, field(default=default, metadata=meta)))
    cls = dataclasses.make_dataclass("ModelParams", fields, frozen=True,
                                     namespace={"__module__": __name__})
    cls.__doc__ = ("``[model]``: the estimator and its lattice. Fields that are QLVM arguments "
                   "take QLVM's defaults (inspect.signature).")
    return cls


def __getattr__(name: str):
    if name == "ModelParams":
        return _model_params_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
