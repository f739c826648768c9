"""The estimators' common base and the QLVM: fit / transform / score_samples / save / load.

The math lives in :mod:`vocalatent.nn` (decoders, likelihoods, the lattice estimate); this
module handles data (through :class:`~vocalatent.items.ItemData`: NumPy, torch, sparse or
lazily read HDF5-backed arrays), devices, evaluation with large lattices streamed in chunks,
and checkpoints. The training loop is :func:`vocalatent.training.train`, shared with the
VAE/IWAE baselines (:mod:`vocalatent.baselines`).

:class:`LatentModel` is what every estimator of the package shares: a decoder on a latent
space scored by the randomly shifted lattice, the scikit-learn estimator contract
(``get_params``/``set_params``, ``fit(X, y=None, *, validation=None)``, ``transform`` to an
ndarray, ``score``/``score_samples``), restarts, checkpoints. :class:`QLVM` and the baselines
are siblings on it; each supplies its parameters and its training objective.
"""

from __future__ import annotations

import bisect
import inspect
import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin

from . import lattice as _lattice
from ._utils import (DataError, NotFittedError, ParameterError, atomic_path, check_option,
                     check_positive, check_random_state, progress, resolve_device, seeded_torch)
from ._version import __version__
from .items import ItemData
from .nn.decoders import DECODERS, make_decoder
from .nn.likelihoods import LIKELIHOODS, make_likelihood
from .nn import estimate as _estimate
from .nn.estimate import item_diagnostics, pool_shifts
from .nn import refine as _refine
from .nn.qlvm import PosteriorAccumulator, QLVMModule
from .training import train

__all__ = ["LatentModel", "QLVM", "frac"]

#: training schedules of :class:`QLVM` (see :mod:`vocalatent.schedules`)
SCHEDULES = ("none", "auto")

logger = logging.getLogger(__name__)

_CHECKPOINT_FORMAT = "vocalatent.QLVM/1"
_Data = ItemData  # the name the evaluation code below uses


def frac(t: torch.Tensor) -> torch.Tensor:
    """Fractional part: points wrapped onto the unit torus [0, 1)^d."""
    return t - torch.floor(t)


_frac = frac


def _feature_names(X):
    """A DataFrame's column names when they are all strings (scikit-learn's rule), else None."""
    cols = getattr(X, "columns", None)
    if cols is None or not hasattr(X, "to_numpy"):
        return None
    names = np.asarray(list(cols), dtype=object)
    return names if len(names) and all(isinstance(c, str) for c in names) else None


class LatentModel(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Common base of the estimators: a decoder on a 1-3-D latent space with a prior, trained
    by :func:`vocalatent.training.train` on a subclass's objective and scored by the lattice.

    Subclasses define ``__init__`` (their parameters, stored unchanged: scikit-learn's rule),
    :meth:`_make_objective` (the training objective of one run) and may extend
    :meth:`_check_params`, :meth:`_decoder_options`, :attr:`_prior`, the checkpoint hooks.
    Not used directly.
    """

    _metric = "log_likelihood"      # history keys train_<metric>, val_<metric>
    _fitted_attrs = ("module_",)
    _auto_batch = False             # whether batch_size="auto" (the cost model's rule) is allowed
    _checkpoint_format = _CHECKPOINT_FORMAT

    # ----------------------------------------------------------------------------- params
    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    @property
    def n_components(self):
        """scikit-learn's name for ``latent_dim``: None unless given; setting it (in the
        constructor, ``set_params`` or as an attribute) sets ``latent_dim``."""
        return self.__dict__.get("_n_components")

    @n_components.setter
    def n_components(self, value):
        self.__dict__["_n_components"] = value
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
            self.latent_dim = value  # anything else is reported by fit's parameter check

    def set_params(self, **params):
        """Set constructor parameters (scikit-learn convention); unknown names raise
        :class:`~vocalatent.ParameterError`. ``n_components`` and ``latent_dim`` stay equal."""
        names = self._param_names()
        for key in params:
            if key.split("__")[0] not in names:
                raise ParameterError(f"unknown parameter {key!r} for {type(self).__name__}; "
                                     f"valid: {', '.join(names)}")
        if ("n_components" in names and "latent_dim" in params and "n_components" not in params
                and self.n_components is not None):
            params["n_components"] = params["latent_dim"]  # keep the alias equal
        return super().set_params(**params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.three_d_array = True
        tags.non_deterministic = False
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"X_types": ["2darray", "sparse", "3darray"]}

    def __sklearn_is_fitted__(self) -> bool:
        return all(hasattr(self, a) for a in self._fitted_attrs)

    @property
    def _n_features_out(self) -> int:
        return int(self.latent_dim)

    def _check_params(self) -> None:
        """Validate the parameters every estimator has (called by ``fit``)."""
        check_positive("latent_dim", self.latent_dim, integer=True)
        if int(self.latent_dim) > 3:
            logger.warning("latent_dim=%d: the lattice needed for an accurate estimate of log p(x) grows "
                           "exponentially with d; vocalatent is built and tested for d = 1, 2, 3",
                           int(self.latent_dim))
        n_comp = getattr(self, "n_components", None)
        if n_comp is not None:
            check_positive("n_components", n_comp, integer=True)
            if int(n_comp) != int(self.latent_dim):
                raise ParameterError(f"n_components={n_comp!r} and latent_dim={self.latent_dim!r} disagree; "
                                     "set one of them (n_components is scikit-learn's name for latent_dim)")
        check_option("decoder", self.decoder, ("auto",) + DECODERS)
        check_option("likelihood", self.likelihood, LIKELIHOODS)
        check_option("precision", self.precision, ("32", "bf16"))
        for name in ("batch_size", "max_epochs", "patience", "n_eval_shifts", "n_restarts"):
            if name == "batch_size" and self._auto_batch and self.batch_size == "auto":
                continue
            check_positive(name, getattr(self, name), integer=True)
        if self.n_eval_lattice is not None and self.n_eval_lattice != "auto":
            check_positive("n_eval_lattice", self.n_eval_lattice, integer=True)
        check_positive("lr", self.lr)
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_positive("memory_budget_mb", self.memory_budget_mb)
        for name in ("decoder_options", "likelihood_options"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise ParameterError(f"{name} must be a dict or None; got {value!r}")

    # ----------------------------------------------------------------------------- building
    @property
    def _prior(self) -> str:
        """The latent prior: ``"uniform"`` (torus) or ``"gaussian"``."""
        return "gaussian"

    def _decoder_options(self) -> dict:
        """The user's ``decoder_options`` with this estimator's defaults filled in."""
        opts = dict(self.decoder_options or {})
        opts.setdefault("input_map", "identity")
        return opts

    def _n_train(self) -> int:
        d = int(self.latent_dim)
        return int(getattr(self, "n_lattice", None) or _lattice.DEFAULT_N_TRAIN.get(d, 4096))

    def eval_lattice_size(self, n_lattice: int | None = None) -> int:
        """The evaluation lattice size m used by ``score_samples``/``transform``: ``n_lattice``
        if given, else the ``n_eval_lattice`` parameter, else the default for ``latent_dim``
        (also for ``"auto"``, which only :meth:`evaluate` and the scoring methods grow)."""
        return self._n_eval(n_lattice)

    def _n_eval(self, n_lattice=None, *, allow_auto: bool = False):
        """The evaluation lattice size: an int, or ``"auto"`` (grown along the lattice
        sequence) where ``allow_auto``; elsewhere ``"auto"`` means the default size."""
        d = int(self.latent_dim)
        default = _lattice.DEFAULT_N_EVAL.get(d, 16384)
        value = n_lattice or self.n_eval_lattice or default
        if value == "auto":
            return "auto" if allow_auto else int(default)
        return int(value)

    def _build_module(self, item_shape, n_features) -> QLVMModule:
        d = int(self.latent_dim)
        like = make_likelihood(self.likelihood, n_features, **(self.likelihood_options or {}))
        out_shape = tuple(self.output_shape) if self.output_shape is not None else (
            tuple(item_shape) if len(item_shape) == 2 else None)
        kind = self.decoder
        if kind == "auto":
            kind = "conv" if out_shape is not None and min(out_shape) >= 8 else "mlp"
        opts = self._decoder_options()
        dec = make_decoder(kind, d, n_features, n_params=like.n_params,
                           output_shape=out_shape if kind == "conv" else None, **opts)
        self.decoder_kind_ = kind
        return QLVMModule(dec, like, d, prior=self._prior)

    def _seed(self) -> int:
        if not hasattr(self, "seed_"):
            if isinstance(self.random_state, (int, np.integer)) and not isinstance(self.random_state, bool):
                self.seed_ = int(self.random_state)
            else:
                rng = check_random_state(self.random_state)
                self.seed_ = int(rng.integers(0, 2**31 - 1))
        return self.seed_

    def _check_fitted(self):
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")

    def _data(self, X, name="X") -> ItemData:
        """``X`` as ItemData, checked against the fitted model (shape, values, feature names)."""
        if isinstance(X, ItemData):
            data = X
        else:
            self._check_feature_names_of(X)
            data = ItemData(X, name=name)
        if self.__sklearn_is_fitted__():
            if data.n_features != self.n_features_:
                raise DataError(
                    f"{name} has {data.n_features} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_} features as input (it was trained on items of shape {tuple(self.item_shape_)}; "
                    f"got items of shape {tuple(data.item_shape)})"
                )
            if (len(data.item_shape) == 2 and len(self.item_shape_) == 2
                    and tuple(data.item_shape) != tuple(self.item_shape_)):
                raise DataError(
                    f"{name} has items of shape {data.item_shape}, but this model was trained on "
                    f"items of shape {tuple(self.item_shape_)}"
                )
            data.check(self.module_.likelihood)
        return data

    def _check_feature_names_of(self, X) -> None:
        """scikit-learn's feature-name rule for DataFrame input after ``fit``."""
        fitted = getattr(self, "feature_names_in_", None)
        names = _feature_names(X)
        if fitted is None and names is None:
            return
        if fitted is not None and names is None:
            if not isinstance(X, ItemData):
                warnings.warn(f"X does not have valid feature names, but {type(self).__name__} was "
                              "fitted with feature names", UserWarning, stacklevel=4)
            return
        if fitted is None:
            if self.__sklearn_is_fitted__():
                warnings.warn(f"X has feature names, but {type(self).__name__} was fitted without "
                              "feature names", UserWarning, stacklevel=4)
            return
        if len(names) != len(fitted) or np.any(names != fitted):
            raise DataError("The feature names should match those that were passed during fit "
                            f"(got {list(names[:5])}..., fitted with {list(fitted[:5])}...)")

    def _autocast(self):
        if self.precision == "bf16" and self.device_.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    # ----------------------------------------------------------------------------- fitting
    def fit(self, X, y=None, *, validation=None):
        """Train the model (``n_restarts`` runs of :func:`vocalatent.training.train`; the best
        is kept).

        Parameters
        ----------
        X : array-like [shape=(N, D) or (N, F, T)]
            Training items: NumPy array, torch tensor, DataFrame, scipy.sparse matrix (CSR/CSC,
            densified batch by batch) or a lazily read array (h5py dataset).
        y : None
            Ignored (scikit-learn's signature: a Pipeline's ``y`` is never taken as validation).
        validation : array-like, float in (0, 1), or None
            Held-out items for early stopping (same shape as X's items), or a fraction of X to
            hold out (drawn with ``random_state``). None: train for ``max_epochs``.

        Returns
        -------
        self
        """
        data, val, rng = self._begin_fit(X, validation)
        self._prepare_fit()
        sample = data.sample(4096, rng)
        staged = self._stage(data)
        bar = progress(total=self.n_restarts * self.max_epochs, desc=f"{type(self).__name__} fit",
                       verbose=None if self.verbose else False)
        best, scores = None, []
        try:
            for r in range(self.n_restarts):
                seed_r = self.seed_ if r == 0 else self.seed_ + 7919 * r
                run_rng = self._run_rng(r, seed_r, rng)
                objective = self._make_objective(seed_r, run_rng, sample, data, val)
                self.batch_size_ = self._resolve_batch_size(objective, data)
                result = train(objective, data, batch_fn=lambda idx: self._batch(data, staged, idx),
                               rng=run_rng, max_epochs=self.max_epochs, batch_size=self.batch_size_,
                               lr=self.lr, weight_decay=self.weight_decay, patience=self.patience,
                               validation=val, metric=self._metric, callbacks=self._callbacks(),
                               stopping=self._stopping() if val is not None else None, bar=bar,
                               average_horizon=self._average_horizon())
                scores.append(result.score)
                if best is None or result.score > best[1].score:
                    best = (objective, result)
        finally:
            bar.close()
        if self.n_restarts > 1:
            logger.info("restart scores %s; keeping restart %d", [round(v, 3) for v in scores],
                        int(np.argmax(scores)))
        objective, result = best
        for attr, module in objective.modules.items():
            setattr(self, attr, module)
        self.history_ = result.history
        self.n_epochs_ = result.n_epochs
        self.restart_scores_ = scores
        self._finish_fit(objective, result)
        return self

    def _average_horizon(self):
        """Epochs of the weight average of a training run (None: no averaging)."""
        return None

    def _resolve_batch_size(self, objective, data) -> int:
        """The batch size of one training run (``batch_size`` unless it is ``"auto"``)."""
        return int(self.batch_size)

    def _begin_fit(self, X, validation):
        """Validate parameters, forget an earlier fit, draw the seed and split the data;
        returns ``(data, validation_data, rng)`` and sets ``device_``, the item shape and
        ``n_features_in_``."""
        self._check_params()
        for attr in ("seed_", "feature_names_in_") + self._fitted_attrs:
            if hasattr(self, attr):
                delattr(self, attr)
        seed = self._seed()
        rng = np.random.default_rng(seed)
        names = _feature_names(X)
        data, val = self._split_validation(ItemData(X, name="X"), validation, rng)
        self.device_ = resolve_device(self.device)
        self.item_shape_ = tuple(data.item_shape)
        self.n_features_ = data.n_features
        self.n_features_in_ = data.n_features
        if names is not None:
            self.feature_names_in_ = names
        return data, val, rng

    def _prepare_fit(self) -> None:
        """Set what all restarts share before the first one (a subclass hook)."""

    def _run_rng(self, restart: int, seed: int, fit_rng: np.random.Generator) -> np.random.Generator:
        """The generator that shuffles the items of restart ``restart``."""
        return np.random.default_rng(seed)

    def _make_objective(self, seed: int, rng: np.random.Generator, sample: np.ndarray, data, val):
        """Build the modules of one training run from ``seed`` (setting them as attributes,
        since scoring reads them) and return its :class:`~vocalatent.training.Objective`."""
        raise NotImplementedError

    def _callbacks(self) -> list:
        """Per-epoch :class:`~vocalatent.training.Callback` objects of a training run."""
        return []

    def _stopping(self):
        """The early-stopping rule of a training run (None: the loop's default)."""
        return None

    def _finish_fit(self, objective, result) -> None:
        """Record what the kept run adds to the fitted state (a subclass hook)."""

    @staticmethod
    def _split_validation(data: ItemData, validation, rng: np.random.Generator):
        """(training data, validation data or None) from ``fit``'s ``validation`` argument."""
        if validation is None:
            return data, None
        if isinstance(validation, float):
            if not 0 < validation < 1:
                raise ParameterError(f"validation as a fraction must be in (0, 1); got {validation!r}")
            n_val = max(1, int(round(validation * data.n)))
            if data.n - n_val < 1:
                raise DataError(f"X has {data.n} items: too few to hold out {validation:.0%} for validation")
            perm = rng.permutation(data.n)
            val, data = data.subset(perm[:n_val]), data.subset(perm[n_val:])
            val.name = "validation"
            return data, val
        val = ItemData(validation, name="validation")
        if val.n_features != data.n_features:
            raise DataError(f"validation items have {val.n_features} features; X items have {data.n_features}")
        return data, val

    def _stage(self, data: ItemData):
        """Move in-memory dense data to the device once when it fits the memory budget
        (lazily read and sparse data are read batch by batch instead)."""
        if data.lazy:
            return None
        nbytes = data.n * data.n_features * 4
        if nbytes > max(self.memory_budget_mb, 2048) * 2**20:
            return None
        x = np.asarray(data.X, dtype=np.float32).reshape(data.n, -1)
        return torch.as_tensor(x, device=self.device_)

    def _batch(self, data: ItemData, staged, idx) -> torch.Tensor:
        if staged is not None:
            return staged[torch.as_tensor(idx, device=self.device_)]
        if not data.sparse:
            idx = np.sort(idx)
        return torch.as_tensor(data.read(idx, self.module_.likelihood), device=self.device_)

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def _stream(self, data: _Data, n_lattice: int, n_shifts: int, *, seed: int,
                stats: bool = False, desc: str | None = None, show_progress: bool = True) -> dict:
        """Stream lattice chunks x item blocks; return per-item results (NumPy, float64)."""
        module = self.module_
        module.eval()
        d = int(self.latent_dim)
        # a Gaussian prior's points go through the inverse normal CDF in float64 without the
        # lattice map's clip at |z| = 3.7: clipped, the items whose posterior lies in the
        # prior's tails were integrated on the clip's boundary and came out biased by up to
        # tens of nats while looking converged (docs/method.md section 7.4)
        exact = self._prior != "uniform"
        dtype = torch.float64 if exact else torch.float32
        points = torch.as_tensor(_lattice.lattice(n_lattice, d), dtype=dtype, device=self.device_)
        shift_rng = np.random.default_rng(seed)
        shifts = [torch.as_tensor(shift_rng.random(d), dtype=dtype, device=self.device_)
                  for _ in range(n_shifts)]
        budget = self.memory_budget_mb * 2**20
        n_params = module.likelihood.n_params
        chunk = int(max(1, min(n_lattice, budget // (4 * 4 * n_params * self.n_features_))))
        sub = int(max(1, min(4096, budget // (8 * 4 * chunk))))
        block = int(max(sub, min(data.n, budget // (2 * 4 * self.n_features_))))
        per_shift = np.empty((n_shifts, data.n))
        ess_shift = np.empty((n_shifts, data.n))
        ess = np.empty(data.n)
        out = {}
        if stats:
            out = {k: np.empty((data.n, d)) for k in ("embedding", "map_point", "resultant_length")}
            out["entropy"] = np.empty(data.n)
        n_steps = math.ceil(data.n / block) * n_shifts * math.ceil(n_lattice / chunk)
        bar = progress(total=n_steps, desc=desc or "QLVM evaluate",
                       verbose=None if self.verbose and show_progress else False)
        for b0 in range(0, data.n, block):
            idx = np.arange(b0, min(data.n, b0 + block))
            x = torch.as_tensor(data.read(idx, module.likelihood), device=self.device_)
            accs = [PosteriorAccumulator(len(idx), d, self.device_, stats=False) for _ in shifts]
            union = PosteriorAccumulator(len(idx), d, self.device_, stats=True) if stats else None
            for s, shift in enumerate(shifts):
                for c0 in range(0, n_lattice, chunk):
                    u = _frac(points[c0:c0 + chunk] + shift)
                    if exact:
                        params = self._latent_params(_refine.to_latent(u, self._prior))
                        u = u.float()
                    else:
                        with self._autocast():
                            params = module.params(u)
                    for r0 in range(0, len(idx), sub):
                        rows = slice(r0, r0 + sub)
                        ll = module.likelihood.log_prob_matrix(x[rows], params)
                        accs[s].update(ll, u, rows)
                        if union is not None:
                            union.update(ll, u, rows)
                    accs[s].add_count(u.shape[0])
                    if union is not None:
                        union.add_count(u.shape[0])
                    bar.update(1)
            states = [acc.state() for acc in accs]
            for s, acc in enumerate(accs):
                per_shift[s, idx] = acc.log_marginal().cpu().numpy()
                ess_shift[s, idx] = acc.ess().cpu().numpy()
            ess[idx] = pool_shifts(states)["ess"]
            if union is not None:
                out["embedding"][idx] = union.circular_mean().cpu().numpy()
                out["map_point"][idx] = union.map.cpu().numpy()
                out["resultant_length"][idx] = union.resultant_length().cpu().numpy()
                out["entropy"][idx] = union.entropy().cpu().numpy()
        bar.close()
        # The union of the shifted lattices is one rule with n_shifts * m points.
        lse = np.logaddexp.reduce(per_shift, axis=0) - math.log(n_shifts)
        out["log_likelihood"] = lse
        out["per_shift"] = per_shift
        out.update(item_diagnostics(per_shift, ess_shift, ess))
        out["n_lattice"], out["n_shifts"] = int(n_lattice), int(n_shifts)
        return out

    def _score(self, data: _Data, n_lattice, n_shifts: int, *, seed: int, stats: bool = False,
               desc: str | None = None, tol: float = _estimate.DEFAULT_TOL,
               max_seconds: float | None = 300.0, refine: bool = False) -> dict:
        """Stream one lattice size, or grow it along the lattice sequence for ``"auto"``; with
        ``refine``, refine the items the global lattice leaves unconverged."""
        if n_lattice != "auto":
            res = self._stream(data, int(n_lattice), n_shifts, seed=seed, stats=stats, desc=desc)
        else:
            d = int(self.latent_dim)
            start = int(getattr(self, "n_lattice_", None) or self._n_train())
            sizes = _lattice.lattice_sequence(d, start=start)

            def at(m):
                res = self._stream(data, m, n_shifts, seed=seed, stats=stats, desc=f"{desc or 'QLVM'} m={m}")
                res["converged_fraction"] = float(np.mean(res["converged"]))
                return res

            # with refinement available, stop growing a lattice that leaves most items collapsed
            give_up = (lambda res: res["converged_fraction"] < 0.5) if refine else None
            res = _estimate.adaptive_lattice(at, sizes, tol=tol, max_seconds=max_seconds,
                                             min_converged=_estimate.MIN_CONVERGED_FRACTION, give_up=give_up)
        if refine and not np.all(res["converged"]):
            res = self._refine_items(data, res, n_shifts=n_shifts, seed=seed + 17, tol=tol)
        return res

    def _latent_params(self, w: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters at points ``w`` of the prior's coordinates (the torus, or R^d
        for a Gaussian prior: decoded directly, without the clip of the lattice map)."""
        module = self.module_
        with self._autocast():
            if self._prior == "uniform":
                return module.params(w.float())
            return module.decoder(w.float()).float()

    def _place_box(self, x1: torch.Tensor, start_u: np.ndarray):
        """The refinement box of one item (``x1`` (1, D)) from its best lattice point
        ``start_u`` (unit cube), or None where none fits (:func:`vocalatent.nn.refine.laplace_box`)."""
        prior, like = self._prior, self.module_.likelihood

        def loglik(w):
            ll = like.log_prob_matrix(x1, self._latent_params(w[None])).double()[0, 0]
            return ll + _refine.log_prior(w[None], prior)[0]

        z0 = _refine.to_latent(torch.as_tensor(np.asarray(start_u, dtype=np.float64), device=self.device_), prior)
        with torch.enable_grad():
            return _refine.laplace_box(loglik, z0, newton_steps=_refine.NEWTON_STEPS[prior],
                                       max_side=_refine.MAX_SIDE[prior])

    @torch.no_grad()
    def _refine_items(self, data: _Data, res: dict, *, n_shifts: int, seed: int, tol: float) -> dict:
        """Local refinement (:mod:`vocalatent.nn.refine`) of the items ``res`` leaves unconverged:
        a box around each one's posterior mode with its own lattice, at the local sizes
        ``REFINE_SIZES`` (~4x apart, sharing the global part outside the boxes of each shift),
        each item climbing only until two consecutive sizes agree.

        The boxes are placed from ``res["map_point"]`` when ``res`` has it (a lattice pass with
        other shifts than the refinement's, so the boxes are independent of the estimate), else
        from a pilot pass of one shift. Items are processed in blocks read within
        ``memory_budget_mb``. Cost on the unconverged items: the pilot (one shift of the global
        lattice, only without ``map_point``), ``NEWTON_STEPS + 1`` Hessians of ``log p(x | z)``
        per item, ``n_shifts`` passes of the global lattice per block, and ``n_shifts`` times
        the local sizes climbed of decoder points of each item's own box (2-D: 2 x (55 + 233)
        for an item settled at the first pair, at most 2 x 5,456).

        A refined item is converged when the larger of its last two local sizes meets the usual
        criterion *and* the two agree within ``MAX_SHIFT_SD`` nats. Items no box fits are
        scored again on larger global lattices (:meth:`_refine_globally`), with the same rule. Adds ``refined`` (N,) bool, ``refine_delta`` (N,)
        (last size minus the one before, NaN where not refined), ``refine_m`` (N,) (the
        local size taken, 0 where not refined in a box), ``refined_globally`` (how many items
        no box fitted, scored again on larger global lattices), ``refined_items``, ``refine_sizes`` (the
        ladder), ``refine_m_max`` (the largest local size taken), ``refine_change`` (mean over
        all items of ``refine_delta``) and, as the local sizes now decide, ``change`` and
        ``tol_met``.
        """
        d = int(self.latent_dim)
        todo = np.nonzero(~np.asarray(res["converged"], dtype=bool))[0]
        m_g = int(res["n_lattice"])
        sizes = _refine.refine_sizes(d)
        out = dict(res)
        for key in ("log_likelihood", "ess", "min_ess", "shift_sd", "converged", "per_shift", "ess_per_shift"):
            out[key] = np.array(res[key], copy=True)
        refined = np.zeros(data.n, dtype=bool)
        delta = np.full(data.n, np.nan)
        m_used = np.zeros(data.n, dtype=np.int64)
        rng = np.random.default_rng(seed)
        g_shifts = rng.random((n_shifts, d))
        l_shifts = rng.random((n_shifts, len(sizes), d))
        block = int(max(1, min(len(todo) or 1, self.memory_budget_mb * 2**20 // (4 * 4 * self.n_features_))))
        like = self.module_.likelihood
        for b0 in range(0, len(todo), block):
            rows = todo[b0:b0 + block]
            sub = data.subset(rows)
            x = torch.as_tensor(sub.read(np.arange(len(rows)), like), device=self.device_)
            if "map_point" in res:
                starts = np.asarray(res["map_point"])[rows]
            else:
                starts = self._stream(sub, m_g, 1, seed=seed + 1 + b0, stats=True, show_progress=False)["map_point"]
            boxes = [self._place_box(x[i:i + 1], starts[i]) for i in range(len(rows))]
            has_box = np.array([b is not None for b in boxes])
            if not has_box.any():
                continue
            est = self._boxed_estimate(x, boxes, m_g, sizes, g_shifts, l_shifts)
            sel = rows[has_box]
            for key in ("log_likelihood", "ess", "min_ess", "shift_sd", "converged"):
                out[key][sel] = est[key][has_box]
            for key in ("per_shift", "ess_per_shift"):
                out[key][:, sel] = est[key][:, has_box]
            delta[sel] = est["delta"][has_box]
            m_used[sel] = est["m_local"][has_box]
            refined[sel] = True
        n_global = self._refine_globally(data, out, todo[~refined[todo]], m_g, n_shifts=n_shifts, seed=seed + 7,
                                         refined=refined, delta=delta)
        change = float(np.nansum(delta) / data.n)
        out.update(refined=refined, refine_delta=delta, refine_m=m_used, refined_items=int(refined.sum()),
                   refined_globally=int(n_global),
                   refine_sizes=[int(m) for m in sizes], refine_m_max=int(m_used.max(initial=0)),
                   converged_fraction=float(np.mean(out["converged"])))
        if refined.any():
            out.update(refine_change=change, change=change, tol_met=bool(abs(change) < tol),
                       stopped_by=f"{res.get('stopped_by', 'fixed lattice')}; refined {int(refined.sum())} item(s)")
        return out

    def _refine_globally(self, data: _Data, out: dict, rows: np.ndarray, m_g: int, *, n_shifts: int, seed: int,
                         refined: np.ndarray, delta: np.ndarray, steps: int = 2) -> int:
        """Items no box fits (posteriors too broad or too irregular for Laplace's box, e.g.
        two modes): score them alone on the next ``steps`` sizes of the lattice sequence
        (2-D: ~2.6x and ~6.9x ``m_g``), each converged once two consecutive sizes agree within
        ``MAX_SHIFT_SD`` nats and the larger meets the criterion. Updates ``out``, ``refined``
        and ``delta`` in place; returns how many items were scored again."""
        sizes = [m for m in _lattice.lattice_sequence(int(self.latent_dim), start=m_g + 1) if m > m_g][:steps]
        prev, n_items = out["log_likelihood"][rows].copy(), len(rows)
        for k, m in enumerate(sizes):
            if not len(rows):
                break
            res = self._stream(data.subset(rows), m, n_shifts, seed=seed + k, show_progress=False)
            for key in ("log_likelihood", "ess", "min_ess", "shift_sd", "converged"):
                out[key][rows] = res[key]
            for key in ("per_shift", "ess_per_shift"):
                out[key][:, rows] = res[key]
            delta[rows] = res["log_likelihood"] - prev
            out["converged"][rows] &= np.abs(delta[rows]) <= _estimate.MAX_SHIFT_SD
            refined[rows] = True
            keep = ~out["converged"][rows]
            rows, prev = rows[keep], res["log_likelihood"][keep]
        return n_items if sizes else 0

    def _boxed_estimate(self, x: torch.Tensor, boxes: list, m_g: int, sizes, g_shifts: np.ndarray,
                        l_shifts: np.ndarray) -> dict:
        """Per shift: the global lattice outside each item's box (computed once per shift) plus
        the box's own lattice inside it, at growing local sizes until two consecutive ones
        agree (per item). Returns the diagnostics of each item's last size with ``delta`` and
        ``m_local``; rows without a box are undefined."""
        module, d, dev, prior = self.module_, int(self.latent_dim), self.device_, self._prior
        torus = prior == "uniform"
        n, n_shifts = len(boxes), len(g_shifts)
        G = torch.as_tensor(_lattice.lattice(m_g, d), dtype=torch.float64, device=dev)
        budget = self.memory_budget_mb * 2**20
        chunk = int(max(1, min(max(m_g, *sizes), budget // (4 * 4 * module.likelihood.n_params * self.n_features_))))
        sub = int(max(1, min(4096, budget // (8 * 4 * chunk))))
        boxed = [(i, tuple(t.to(dev) for t in b)) for i, b in enumerate(boxes) if b is not None]
        firsts = [i for i, _ in boxed]
        accs = []
        for s in range(n_shifts):
            g_shift = torch.as_tensor(g_shifts[s], dtype=torch.float64, device=dev)
            acc = _refine.WeightSum(n, dev)
            for c0 in range(0, m_g, chunk):
                w = _refine.to_latent(torch.remainder(G[c0:c0 + chunk] + g_shift, 1.0), prior)
                params = self._latent_params(w)
                for r0 in range(0, n, sub):
                    logw = module.likelihood.log_prob_matrix(x[r0:r0 + sub], params).double() - math.log(m_g)
                    for i, (c, R, h) in boxed[bisect.bisect_left(firsts, r0):bisect.bisect_left(firsts, r0 + sub)]:
                        logw[i - r0, _refine.in_box(w, c, R, h, periodic=torus)] = -math.inf
                    acc.update(logw, slice(r0, r0 + sub))
            accs.append(acc)
        out = {"log_likelihood": np.full(n, np.nan), "ess": np.full(n, np.nan), "min_ess": np.full(n, np.nan),
               "shift_sd": np.full(n, np.nan), "converged": np.zeros(n, dtype=bool), "delta": np.full(n, np.nan),
               "m_local": np.zeros(n, dtype=np.int64), "per_shift": np.full((n_shifts, n), np.nan),
               "ess_per_shift": np.full((n_shifts, n), np.nan)}
        active, prev = list(boxed), None
        for k, m_l in enumerate(sizes):
            T = torch.as_tensor(_lattice.lattice(m_l, d), dtype=torch.float64, device=dev)
            per_shift, ess_shift, states = np.full((n_shifts, n), np.nan), np.full((n_shifts, n), np.nan), []
            for s in range(n_shifts):
                t = torch.remainder(T + torch.as_tensor(l_shifts[s, k], dtype=torch.float64, device=dev), 1.0)
                a = accs[s].copy()
                for i, (c, R, h) in active:
                    w = _refine.box_points(t, c, R, h)
                    w = torch.remainder(w, 1.0) if torus else w
                    base = _refine.log_prior(w, prior) + float(torch.log(h).sum()) - math.log(m_l)
                    for c0 in range(0, m_l, chunk):
                        ll = module.likelihood.log_prob_matrix(x[i:i + 1], self._latent_params(w[c0:c0 + chunk]))
                        a.update(ll.double() + base[c0:c0 + chunk], slice(i, i + 1))
                per_shift[s] = a.log_total().cpu().numpy()
                ess_shift[s] = a.ess().cpu().numpy()
                states.append(a.state())
            with np.errstate(invalid="ignore", divide="ignore"):
                pooled = pool_shifts(states)
                diag = item_diagnostics(per_shift, ess_shift, pooled["ess"])
            idx = np.array([i for i, _ in active])
            for key in ("ess", "min_ess", "shift_sd", "converged"):
                out[key][idx] = diag[key][idx]
            out["log_likelihood"][idx] = pooled["log_likelihood"][idx]
            out["per_shift"][:, idx] = per_shift[:, idx]
            out["ess_per_shift"][:, idx] = ess_shift[:, idx]
            out["m_local"][idx] = m_l
            if prev is not None:
                out["delta"][idx] = pooled["log_likelihood"][idx] - prev[idx]
                out["converged"][idx] &= np.abs(out["delta"][idx]) <= _estimate.MAX_SHIFT_SD
                active = [(i, b) for i, b in active if not out["converged"][i]]
            else:
                out["converged"][idx] = False      # one size alone is never enough
            prev = pooled["log_likelihood"]
            if not active:
                break
        return out

    def _floor(self) -> float | None:
        like = self.module_.likelihood
        return like.min_sigma if hasattr(like, "floor") else None

    def _warn_unconverged(self, res: dict, what: str) -> None:
        info = {k: res[k] for k in ("n_lattice", "tol", "tol_met", "change") if k in res}
        info.update(converged_fraction=float(np.mean(res["converged"])),
                    log_likelihood=float(np.mean(res["log_likelihood"])))
        if _estimate.needs_warning(info):
            logger.warning("%s: %s; %s", what, _estimate.convergence_summary(info, label="log p(x)"),
                           _estimate.advice(info, floor=self._floor()))

    def score_samples(self, X, *, n_lattice: int | str | None = None, n_shifts: int | None = None,
                      random_state=None, return_diagnostics: bool = False, refine: bool = False):
        """Per-item held-out log p(x) in nats (the lattice estimate, with its − log m term).

        Every call also computes per-item diagnostics (ESS of the lattice posterior per shift
        and pooled, spread of the per-shift estimates, converged flag; see
        :mod:`vocalatent.nn.estimate`) and logs a warning naming the remedy when fewer than
        99 % of the items are converged.

        Parameters
        ----------
        X : array-like [shape=(N, D) or (N, F, T)]
        n_lattice : int, "auto" or None
            Lattice size (default ``n_eval_lattice``); ``"auto"`` grows it as in :meth:`evaluate`.
        n_shifts : int or None
            Independent random shifts; the estimate uses their union (``n_shifts * m`` points).
        random_state : int or None
            Seeds the shifts (default: derived from the model's seed).
        return_diagnostics : bool, default False
            Also return the diagnostics.
        refine : bool, default False
            Refine the items the lattice leaves unconverged locally, as :meth:`evaluate` does
            (off by default: ``score_samples`` is the plain lattice rule at ``n_lattice``).

        Returns
        -------
        log_likelihood : np.ndarray [shape=(N,), dtype=float64]
        diagnostics : dict, only with ``return_diagnostics``
            ``ess`` (N,), ``ess_per_shift`` (S, N), ``min_ess`` (N,), ``shift_sd`` (N,),
            ``converged`` (N,) bool, ``criterion`` (str), ``n_lattice``, ``n_shifts``; with
            ``refine`` also ``refined`` (N,) bool and ``refine_delta`` (N,) (the two local
            sizes' difference, NaN where not refined).
        """
        self._check_fitted()
        data = self._data(X)
        seed = self.seed_ + 2 if random_state is None else int(random_state)
        n_shifts = n_shifts or self.n_eval_shifts
        res = self._score(data, self._n_eval(n_lattice, allow_auto=True), n_shifts, seed=seed, desc="QLVM score",
                          refine=refine)
        self._warn_unconverged(res, "score_samples")
        if not return_diagnostics:
            return res["log_likelihood"]
        diag = {k: res[k] for k in ("ess", "ess_per_shift", "min_ess", "shift_sd", "converged",
                                    "n_lattice", "n_shifts", "refined", "refine_delta", "refine_m") if k in res}
        diag["criterion"] = _estimate.criterion_text()
        return res["log_likelihood"], diag

    def score(self, X, y=None, **kwargs) -> float:
        """Mean held-out log p(x) per item in nats (``y`` is ignored: scikit-learn's signature)."""
        return float(np.mean(self.score_samples(X, **kwargs)))

    def evaluate(self, X, *, n_lattice: int | str | None = None, n_shifts: int | None = None,
                 random_state=None, tol: float = _estimate.DEFAULT_TOL,
                 max_seconds: float | None = 300.0, refine: bool = True) -> dict:
        """Held-out log-likelihood with its standard error over random shifts and its
        convergence.

        Parameters
        ----------
        X : array-like [shape=(N, D) or (N, F, T)]
        n_lattice : int, "auto" or None
            Lattice size. ``"auto"`` (the default unless ``n_eval_lattice`` is a number): grow m
            along :func:`vocalatent.lattice.lattice_sequence` from the training size until the
            mean estimate changes by less than ``tol`` nats per item between two sizes and at
            least 99 % of the items are converged, or until ``max_seconds`` or the largest
            lattice is reached.
        n_shifts : int or None
            Random shifts (at least 2, so that the spread of the estimates is measured).
        random_state : int or None
        tol : float, default 0.05
            Tolerance of the adaptive lattice, nats per item.
        max_seconds : float or None, default 300
            Time budget of the adaptive lattice.
        refine : bool, default True
            Items the global lattice leaves unconverged (posteriors narrower than its spacing,
            or in a Gaussian prior's far tails) get a local box around their posterior mode
            with its own lattice (:mod:`vocalatent.nn.refine`; still an unbiased estimate of
            p(x)), at local sizes about 4x apart (``refine_sizes``), each item until two
            consecutive sizes agree within 0.1 nats (else it stays flagged unconverged).

        Returns
        -------
        result : dict
            ``log_likelihood`` (mean nats per item, union of all shifts), ``stderr`` (standard
            error of the per-shift means), ``per_shift`` (per-shift means), ``bits_per_dim``
            (−log_likelihood / (D ln 2)), ``n_lattice``, ``n_shifts``, ``n_items``; the
            diagnostics ``converged_fraction``, ``n_not_converged``, ``ess_median``,
            ``ess_min``, ``shift_sd_max``, ``criterion``; with ``"auto"`` also ``tol``,
            ``tol_met``, ``change`` (nats per item from the previous size), ``stopped_by`` and
            ``history`` (``[m, mean, seconds]`` per size), and after a refinement
            ``refined_items``, ``refine_sizes``, ``refine_m_max`` and ``refine_change`` (then ``change`` and
            ``tol_met`` refer to the two local sizes). A warning is logged when fewer than
            99 % of the items are converged or the tolerance was not met.
        """
        self._check_fitted()
        data = self._data(X)
        n_shifts = n_shifts or max(self.n_eval_shifts, 2)
        if n_lattice is None:
            n_lattice = self.n_eval_lattice if self.n_eval_lattice is not None else "auto"
        n = self._n_eval(n_lattice, allow_auto=True)
        seed = self.seed_ + 2 if random_state is None else int(random_state)
        res = self._score(data, n, n_shifts, seed=seed, desc="QLVM evaluate", tol=tol, max_seconds=max_seconds,
                          refine=refine)
        per_shift = res["per_shift"].mean(axis=1)
        ll = float(res["log_likelihood"].mean())
        out = {"log_likelihood": ll,
               "stderr": float(per_shift.std(ddof=1) / math.sqrt(n_shifts)) if n_shifts > 1 else math.nan,
               "per_shift": per_shift.tolist(), "bits_per_dim": -ll / (self.n_features_ * math.log(2)),
               "n_lattice": int(res["n_lattice"]), "n_shifts": n_shifts, "n_items": data.n,
               "converged_fraction": float(np.mean(res["converged"])),
               "n_not_converged": int(np.sum(~res["converged"])),
               "ess_median": float(np.median(res["ess"])), "ess_min": float(np.min(res["ess"])),
               "shift_sd_max": float(np.nanmax(res["shift_sd"])) if n_shifts > 1 else math.nan,
               "criterion": _estimate.criterion_text()}
        for key in ("tol", "tol_met", "change", "stopped_by", "history", "refined_items", "refined_globally",
                    "refine_sizes", "refine_m_max", "refine_change"):
            if key in res:
                out[key] = res[key]
        if _estimate.needs_warning(out):
            logger.warning("%s; %s", _estimate.convergence_summary(out),
                           _estimate.advice(out, floor=self._floor()))
        return out

    def transform(self, X, *, n_lattice: int | str | None = None, n_shifts: int | None = None,
                  random_state=None) -> np.ndarray:
        """Embed items at their posterior circular mean on the torus (scikit-learn's transform).

        Parameters
        ----------
        X : array-like [shape=(N, D) or (N, F, T)]
        n_lattice, n_shifts, random_state
            As in :meth:`transform_dataset`.

        Returns
        -------
        embedding : np.ndarray [shape=(N, latent_dim), dtype=float64]
            The ``embedding`` variable of :meth:`transform_dataset` (values in [0, 1)).
        """
        return self.transform_dataset(X, n_lattice=n_lattice, n_shifts=n_shifts,
                                      random_state=random_state)["embedding"].values

    def transform_dataset(self, X, *, n_lattice: int | str | None = None, n_shifts: int | None = None,
                          random_state=None, coords: dict | None = None, refine: bool = True):
        """Embed items: posterior circular mean, MAP point, spread and log p(x), as a Dataset.

        Parameters
        ----------
        X : array-like [shape=(N, D) or (N, F, T)]
        n_lattice, n_shifts, random_state
            As in :meth:`score_samples`; the posterior statistics use the union of the shifts.
        coords : dict or None
            Per-item metadata (e.g. a DataFrame's columns) added as ``item`` coordinates.
        refine : bool, default True
            Refine the ``log_likelihood`` of the items the lattice leaves unconverged locally,
            as :meth:`evaluate` does (the posterior statistics stay the lattice's); the
            ``refined`` variable and the ``refined_items`` / ``refine_sizes`` attrs say which.

        Returns
        -------
        ds : xarray.Dataset
            Dims ``item`` and ``latent``; variables ``embedding`` (circular posterior mean, in
            [0, 1)), ``map_point``, ``spread`` (1 − mean resultant length, in [0, 1]),
            ``posterior_entropy`` (nats), ``log_likelihood`` (nats), and the diagnostics
            ``ess`` (pooled effective sample size of the lattice posterior), ``shift_sd``
            (spread of the per-shift estimates, nats) and ``converged`` (bool; the criterion
            and the lattice sizes are in the attrs); attrs describe the model.
        """
        from .embedding import build_embedding

        self._check_fitted()
        data = self._data(X)
        n = self._n_eval(n_lattice, allow_auto=True)
        n_shifts = n_shifts or self.n_eval_shifts
        seed = self.seed_ + 3 if random_state is None else int(random_state)
        res = self._score(data, n, n_shifts, seed=seed, stats=True, desc="QLVM transform", refine=refine)
        if refine and "refined" not in res:  # every item converged on the lattice: nothing refined
            res.update(refined=np.zeros(data.n, dtype=bool), refine_sizes=list(
                _refine.refine_sizes(self.latent_dim)))
        self._warn_unconverged(res, "transform")
        res["criterion"] = _estimate.criterion_text()
        return build_embedding(res, model=self, n_lattice=int(res["n_lattice"]), n_shifts=n_shifts, coords=coords)

    def fit_transform(self, X, y=None, *, validation=None, **kwargs) -> np.ndarray:
        """``fit(X, validation=validation)`` then ``transform(X, **kwargs)`` (an ndarray)."""
        return self.fit(X, validation=validation).transform(X, **kwargs)

    @torch.no_grad()
    def posterior(self, X, *, n_lattice: int | None = None, shift=None) -> tuple[np.ndarray, np.ndarray]:
        """The lattice posterior ``w_ij = softmax_j log p(x_i | z_j)`` for one shifted lattice.

        Returns
        -------
        weights : np.ndarray [shape=(N, m)], rows sum to 1
        points : np.ndarray [shape=(m, d)] in [0, 1), the shifted lattice
        """
        self._check_fitted()
        data = self._data(X)
        n = self._n_eval(n_lattice)
        d = int(self.latent_dim)
        if shift is None:
            shift = np.zeros(d)
        shift = np.asarray(shift, dtype=np.float64).reshape(d)
        pts = _lattice.shift_points(_lattice.lattice(n, d), shift)
        u = torch.as_tensor(pts, dtype=torch.float32, device=self.device_)
        params = self.module_.params(u)
        out = np.empty((data.n, n))
        for b0 in range(0, data.n, 1024):
            idx = np.arange(b0, min(data.n, b0 + 1024))
            x = torch.as_tensor(data.read(idx, self.module_.likelihood), device=self.device_)
            out[idx] = torch.softmax(self.module_.likelihood.log_prob_matrix(x, params).double(), 1).cpu().numpy()
        return out, pts

    @torch.no_grad()
    def aggregate_posterior(self, X, *, n_lattice: int | None = None, shift=None) -> tuple[np.ndarray, np.ndarray]:
        """The aggregate posterior ``(1/N) sum_i w_ij`` on one shifted lattice, streamed over
        items (memory O(m + B m), whatever N).

        Returns
        -------
        weights : np.ndarray [shape=(m,)], sums to 1
        points : np.ndarray [shape=(m, d)] in [0, 1)
        """
        self._check_fitted()
        data = self._data(X)
        n = self._n_eval(n_lattice)
        d = int(self.latent_dim)
        shift = np.zeros(d) if shift is None else np.asarray(shift, dtype=np.float64).reshape(d)
        pts = _lattice.shift_points(_lattice.lattice(n, d), shift)
        u = torch.as_tensor(pts, dtype=torch.float32, device=self.device_)
        params = self.module_.params(u)
        total = torch.zeros(n, dtype=torch.float64, device=self.device_)
        for b0 in range(0, data.n, 1024):
            idx = np.arange(b0, min(data.n, b0 + 1024))
            x = torch.as_tensor(data.read(idx, self.module_.likelihood), device=self.device_)
            total += torch.softmax(self.module_.likelihood.log_prob_matrix(x, params).double(), 1).sum(0)
        return (total / data.n).cpu().numpy(), pts

    @property
    def output_shape_(self):
        """The item shape (F, T) for image-like items, else (D,)."""
        self._check_fitted()
        return tuple(self.item_shape_)

    # ----------------------------------------------------------------------------- persistence
    _checkpoint_format = _CHECKPOINT_FORMAT

    def _checkpoint_params(self) -> dict:
        """Constructor arguments as stored in a checkpoint (JSON-able, sizes resolved)."""
        params = self.get_params()
        # record the decoder's resolved sizes so later changes of defaults cannot break loading
        params["decoder"] = self.decoder_kind_
        params["decoder_options"] = {**(self.decoder_options or {}), **self.module_.decoder.config}
        params["random_state"] = self.seed_
        params["device"] = "auto"
        return params

    def _checkpoint_state(self) -> dict:
        """Everything :meth:`load` needs, as tensors and plain Python values."""
        return {
            "format": self._checkpoint_format,
            "estimator": type(self).__name__,
            "vocalatent_version": __version__,
            "params": json.dumps(self._checkpoint_params()),
            "item_shape": list(self.item_shape_),
            "seed": self.seed_,
            "decoder_kind": self.decoder_kind_,
            "n_lattice": int(getattr(self, "n_lattice_", self._n_train())),
            "state_dict": {k: v.detach().cpu() for k, v in self.module_.state_dict().items()},
            "history": {k: [float(v) for v in vals] for k, vals in self.history_.items()},
            "metadata": json.dumps(getattr(self, "metadata_", None)),
        }

    def _restore(self, state: dict) -> None:
        """Rebuild the fitted state from a checkpoint dict (``device_`` is already set)."""
        self.seed_ = int(state["seed"])
        self.item_shape_ = tuple(state["item_shape"])
        self.n_features_ = math.prod(self.item_shape_)
        self.n_features_in_ = self.n_features_
        self.module_ = self._build_module(self.item_shape_, self.n_features_)
        self.decoder_kind_ = state["decoder_kind"]
        self.module_.load_state_dict(state["state_dict"])
        self.module_.to(self.device_).eval()
        self.n_lattice_ = int(state["n_lattice"])
        self.lattice_generator_ = tuple(int(g) for g in _lattice.default_generator(self.n_lattice_, int(self.latent_dim)))
        self.history_ = {k: list(v) for k, v in state["history"].items()}
        self.n_epochs_ = len(self.history_.get("epoch", []))
        self.metadata_ = json.loads(state.get("metadata", "null"))

    @classmethod
    def _params_from_checkpoint(cls, params: dict) -> dict:
        return params

    def save(self, path, *, metadata: dict | None = None) -> Path:
        """Write one self-describing checkpoint (parameters, weights, history) atomically.

        ``metadata`` (JSON-serialisable, e.g. the preprocessing configuration that made the
        training data) is stored with it and comes back as ``metadata_`` after :meth:`load`.
        """
        self._check_fitted()
        if metadata is not None:
            self.metadata_ = metadata
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(self._checkpoint_state(), tmp)
        return path

    @classmethod
    def load(cls, path, *, device="auto"):
        """Load a checkpoint written by :meth:`save` (``weights_only=True``: it cannot run code)."""
        path = Path(path)
        if not path.is_file():
            raise DataError("no such model file", path=path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt files
            raise DataError(f"not a readable vocalatent model checkpoint ({exc.__class__.__name__}: {exc})",
                            path=path) from None
        fmt = state.get("format") if isinstance(state, dict) else None
        if not isinstance(fmt, str) or not fmt.startswith("vocalatent."):
            raise DataError(f"not a {cls._checkpoint_format} checkpoint", path=path)
        estimator = state.get("estimator", cls.__name__)
        if estimator != cls.__name__:
            raise DataError(f"this checkpoint holds a {estimator!r} model; load it with "
                            f"{estimator}.load, not {cls.__name__}.load", path=path)
        if fmt != cls._checkpoint_format:
            raise DataError(f"not a {cls._checkpoint_format} checkpoint (format {fmt!r})", path=path)
        params = cls._params_from_checkpoint(json.loads(state["params"]))
        params["device"] = device
        model = cls(**params)
        model.device_ = resolve_device(device)
        model._restore(state)
        return model


class QLVM(LatentModel):
    """Quasi-Monte Carlo latent variable model: a decoder on a 1-3-D latent torus, trained by
    estimating log p(x) with a randomly shifted rank-1 lattice.

    Parameters
    ----------
    latent_dim : int, default 2
        Dimension d of the latent torus [0, 1)^d. 1, 2 or 3 (more is allowed with a warning:
        the lattice needed grows exponentially).
    n_components : int or None
        scikit-learn's name for ``latent_dim``: when given it sets ``latent_dim``
        (``QLVM(n_components=3)`` is ``QLVM(latent_dim=3)``); ``set_params`` keeps the two equal.
    decoder : {"auto", "mlp", "conv"}
        ``"auto"``: a convolutional decoder for 2-D items (F x T spectrograms, both >= 8),
        an MLP otherwise.
    likelihood : {"gaussian", "bernoulli", "poisson", "poisson_offset", "multinomial", "negbin"}
        Observation model; see :mod:`vocalatent.nn.likelihoods`.
    n_lattice : int or None
        Training lattice size m. Default per d: 256, 987 (Fibonacci), 2039 (Korobov). Each
        step decodes m points (shared by the batch): cost grows linearly in m.
    batch_size : int or "auto", default 256
        Items per step. Steps cost m decoder passes whatever the batch size, so large batches
        are cheap (see docs/method.md). ``"auto"``: from the cost model, equal batches no
        larger than the size at which a step's likelihood work equals its decoder work
        (:func:`vocalatent.schedules.auto_batch_size`), and at least three steps per epoch
        (a few hundred items are three batches); the size used is ``batch_size_``.
    max_epochs : int, default 200
    lr : float, default 1e-3
        Adam learning rate.
    weight_decay : float, default 0
    patience : int, default 20
        Early stopping: epochs without a better validation log-likelihood before stopping
        (only when ``fit`` is given validation data).
    prior : {"uniform", "gaussian"}
        Uniform on the torus with a periodic decoder (the QLVM), or a standard normal prior
        (lattice through the inverse normal CDF, non-periodic decoder) for comparisons.
    n_harmonics : int, default 1
        Harmonics of the periodic input layer.
    decoder_options, likelihood_options : dict or None
        Extra keyword arguments for the decoder (e.g. ``hidden=(512, 512)``,
        ``base_channels=32``) and the likelihood (e.g. ``sigma=0.1``, ``variance="fixed"``).
    output_shape : (int, int) or None
        Item shape for a convolutional decoder when X is given flat (N, F*T).
    n_eval_lattice : int, "auto" or None
        Lattice size for ``score_samples``/``transform``. Default per d: 2048, 6765, 8191;
        ``evaluate`` grows its lattice until the estimate settles (``"auto"``) unless this is
        a number. ``"auto"`` here makes every scoring method grow it.
    n_eval_shifts : int, default 4
        Random shifts averaged by ``score_samples``/``transform``.
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"}
        ``"auto"``: CUDA when available, else CPU. ``"mps"`` (Apple GPUs) where torch offers it.
    precision : {"32", "bf16"}
        ``"bf16"`` runs the decoder under bfloat16 autocast on CUDA (likelihoods stay float32).
    memory_budget_mb : float, default 512
        Bound on the working memory of evaluation (lattice chunks x features, data blocks).
    n_restarts : int, default 1
        Independent trainings from different initialisations; the one with the best
        validation log-likelihood (without validation data: the best final training estimate)
        is kept, the scores are in ``restart_scores_``. Low-dimensional fits can land in folded
        maps of nearly equal likelihood; a few restarts make a good map much more likely.
        Costs ``n_restarts`` times the training time.
    schedule : {"none", "auto"}, default "none"
        ``"auto"``: learning-rate warm-up and reduce-on-plateau, a training lattice that grows
        along the lattice sequence to ``n_lattice`` when the validation score stalls (coarse
        lattices are cheaper per step; a plateau there moves to the next size and does not
        cut the rate), and early stopping on a smoothed validation curve
        (:mod:`vocalatent.schedules`; needs validation data for the plateau-driven parts).
        ``"none"``: constant ``lr``, one lattice, early stopping on the raw curve.
    average_epochs : float >= 0 or None
        Validate, keep and return an exponential moving average of the weights over about this
        many epochs (:class:`vocalatent.training.WeightAverage`) instead of the last step's
        weights: the average is a better model than any single noisy step, and its validation
        curve is smoother, so the plateau rules react to real plateaus. None (the default): by
        the schedule, :data:`vocalatent.schedules.AVERAGE_EPOCHS` (5, the measured horizon)
        under ``schedule="auto"`` and none under ``"none"``; 0: no averaging. With the
        average, ``schedule="auto"`` fitted the README job's syllables in 0.74x the time to a
        held-out log p(x) 555 nats/item higher, and reached the old defaults' score on the 10k
        synthetic set sooner (docs/benchmarks.md, "Weight averaging").
    random_state : int, numpy Generator or None
        Seeds initialisation, shuffling and lattice shifts (global RNGs are not touched).
    verbose : bool, default True
        Progress bars.
    """


    _metric = "log_likelihood"
    _auto_batch = True

    def __init__(self, latent_dim: int = 2, *, n_components: int | None = None, decoder: str = "auto",
                 likelihood: str = "gaussian", n_lattice: int | None = None, batch_size: int = 256,
                 max_epochs: int = 200, lr: float = 1e-3, weight_decay: float = 0.0, patience: int = 20,
                 prior: str = "uniform", n_harmonics: int = 1, decoder_options: dict | None = None,
                 likelihood_options: dict | None = None, output_shape=None,
                 n_eval_lattice: int | None = None, n_eval_shifts: int = 4, device="auto",
                 precision: str = "32", memory_budget_mb: float = 512.0, n_restarts: int = 1,
                 schedule: str = "none", average_epochs: float | None = None, random_state=None,
                 verbose: bool = True):
        self.latent_dim = latent_dim
        self.n_components = n_components  # scikit-learn's alias: sets latent_dim when given
        self.decoder = decoder
        self.likelihood = likelihood
        self.n_lattice = n_lattice
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.prior = prior
        self.n_harmonics = n_harmonics
        self.decoder_options = decoder_options
        self.likelihood_options = likelihood_options
        self.output_shape = output_shape
        self.n_eval_lattice = n_eval_lattice
        self.n_eval_shifts = n_eval_shifts
        self.device = device
        self.precision = precision
        self.memory_budget_mb = memory_budget_mb
        self.n_restarts = n_restarts
        self.schedule = schedule
        self.average_epochs = average_epochs
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self) -> None:
        super()._check_params()
        if self.average_epochs is not None:
            check_positive("average_epochs", self.average_epochs, allow_zero=True)
        check_option("prior", self.prior, ("uniform", "gaussian"))
        check_option("schedule", self.schedule, SCHEDULES)
        check_positive("n_harmonics", self.n_harmonics, integer=True)
        if self.n_lattice is not None:
            check_positive("n_lattice", self.n_lattice, integer=True)

    @property
    def _prior(self) -> str:
        return self.prior

    def _decoder_options(self) -> dict:
        opts = dict(self.decoder_options or {})
        opts.setdefault("input_map", "periodic" if self.prior == "uniform" else "identity")
        if opts["input_map"] == "periodic":
            opts.setdefault("n_harmonics", self.n_harmonics)
        return opts

    # ----------------------------------------------------------------------------- the torus
    @torch.no_grad()
    def decode(self, z) -> np.ndarray:
        """Decoded means at latent points ``z`` (n, d) in [0, 1): shape (n, *item_shape)."""
        self._check_fitted()
        z = np.atleast_2d(np.asarray(z, dtype=np.float32))
        if z.shape[1] != self.latent_dim:
            raise ParameterError(f"z must have {self.latent_dim} columns (latent_dim); got shape {z.shape}")
        u = torch.as_tensor(np.mod(z, 1.0), device=self.device_)
        out = []
        for c0 in range(0, len(u), 1024):
            out.append(self.module_.mean(u[c0:c0 + 1024]).float().cpu().numpy())
        return np.concatenate(out).reshape((len(z),) + tuple(self.item_shape_))

    def mean_function(self):
        """A differentiable callable ``f(z) -> (n, D)`` mapping torch points in [0,1)^d to the
        decoded mean (flattened), on the model's device; for the Jacobian and geodesics."""
        self._check_fitted()
        module = self.module_
        module.eval()

        def f(z: torch.Tensor) -> torch.Tensor:
            return module.mean(z.to(self.device_, torch.float32))

        return f

    # ----------------------------------------------------------------------------- fitting
    def fit(self, X, y=None, *, validation=None) -> "QLVM":
        """Train the decoder by maximising the lattice estimate of log p(x).

        Parameters
        ----------
        X : array-like [shape=(N, D) or (N, F, T)]
            Training items: NumPy array, torch tensor, DataFrame, scipy.sparse matrix (CSR/CSC,
            densified batch by batch) or a lazily read array (h5py dataset).
        y : None
            Ignored (scikit-learn's signature: a Pipeline's ``y`` is never taken as validation).
        validation : array-like, float in (0, 1), or None
            Held-out items for early stopping (same shape as X's items), or a fraction of X to
            hold out (drawn with ``random_state``). None: train for ``max_epochs``.

        Returns
        -------
        self : QLVM
        """
        return super().fit(X, validation=validation)

    def _prepare_fit(self) -> None:
        self.n_lattice_ = self._n_train()
        if self.latent_dim == 2 and self.n_lattice_ not in _lattice.FIBONACCI:
            logger.info("n_lattice=%d is not a Fibonacci number; searching a lattice generator", self.n_lattice_)
        self.lattice_generator_ = tuple(int(g) for g in _lattice.default_generator(self.n_lattice_, int(self.latent_dim)))

    def _make_objective(self, seed, rng, sample, data, val) -> "LatticeObjective":
        with seeded_torch(seed):
            module = self._build_module(self.item_shape_, self.n_features_)
        data.check(module.likelihood)
        if val is not None:
            val.check(module.likelihood)
        module.likelihood.setup(sample)
        module.to(self.device_)
        self.module_ = module  # _stream (validation) reads the module being trained
        objective = LatticeObjective(self, module, self.n_lattice_, rng, val_seed=self.seed_ + 1)
        objective.resolution_sample = sample[:512]  # for the check after training
        return objective

    def _resolve_batch_size(self, objective, data) -> int:
        """``batch_size="auto"``: equal batches no larger than the cost model's knee
        (:func:`vocalatent.schedules.auto_batch_size`), from the decoder's flops per point
        (counted once on a few points) and the item size."""
        if self.batch_size != "auto":
            return int(self.batch_size)
        from torch.utils.flop_counter import FlopCounterMode

        from .schedules import DECODER_EFFICIENCY, auto_batch_size, knee_batch_size

        module = objective.module
        u = torch.rand(8, int(self.latent_dim), generator=torch.Generator().manual_seed(0)).to(self.device_)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module.params(u)
        flops = max(1.0, counter.get_total_flops() / 8)
        knee = knee_batch_size(flops, int(self.n_features_),
                               efficiency=DECODER_EFFICIENCY.get(self.decoder_kind_, 1.0))
        size = auto_batch_size(int(data.n), knee=knee)
        logger.info("batch_size='auto': %d items per step (%d per epoch) for %d training items "
                    "(cost-model knee %.0f: %s decoder, %.3g flops per lattice point, D = %d)",
                    size, math.ceil(data.n / size), data.n, knee, self.decoder_kind_, flops,
                    self.n_features_)
        return size

    def _average_horizon(self):
        if self.average_epochs is None:
            if self.schedule != "auto":
                return None
            from .schedules import AVERAGE_EPOCHS

            return float(AVERAGE_EPOCHS)
        return float(self.average_epochs) if self.average_epochs else None

    def _callbacks(self) -> list:
        if self.schedule != "auto":
            return []
        from .schedules import GrowingLattice, WarmupPlateauLR, lattice_steps

        callbacks = [WarmupPlateauLR(warmup_epochs=min(3, max(0, self.max_epochs // 10)),
                                     patience=max(2, self.patience // 3))]
        sizes = lattice_steps(self.n_lattice_, int(self.latent_dim))
        if len(sizes) > 1 and self.max_epochs >= 5 * len(sizes):
            callbacks.append(GrowingLattice(sizes, patience=max(2, self.patience // 4)))
        return callbacks

    def _stopping(self):
        if self.schedule != "auto":
            return None
        from .schedules import SmoothedEarlyStopping

        # a relative 5e-4 (about 6 nats per item on the README job's ~12,000): the median
        # crawling up by less over `patience` epochs at the decayed learning rate is a plateau
        # (docs/benchmarks.md: on that job 1e-4 ran 60 more epochs for +77 nats per item)
        return SmoothedEarlyStopping(self.patience, min_delta=5e-4)

    def _finish_fit(self, objective, result) -> None:
        self.n_lattice_ = objective.n_lattice
        self.best_val_log_likelihood_ = (
            max(v for v in result.history["val_log_likelihood"] if math.isfinite(v))
            if result.best_validation is not None else None)
        self._check_training_resolution(objective.resolution_sample)

    def _check_training_resolution(self, sample: np.ndarray) -> None:
        """Warn when the training lattice's posterior has collapsed onto one point for most
        items (the model outruns its integrator); sets ``training_ess_``, the median ESS of the
        training-lattice posterior (one shift) on up to 512 training items."""
        res = self._stream(_Data(sample, name="training sample"), self.n_lattice_, 1, seed=self.seed_ + 4,
                           show_progress=False)
        self.training_ess_ = float(np.median(res["ess"]))
        msg = _estimate.training_resolution_message(res["ess"], self.n_lattice_, floor=self._floor())
        if msg:
            logger.warning(msg)


class LatticeObjective:
    """The QLVM's training objective: per item, the randomly shifted lattice estimate
    ``log (1/m) sum_j p(x | frac(z_j + shift))`` with a fresh shift per batch.

    :meth:`set_lattice` changes m between epochs (for a lattice-size schedule).
    """

    def __init__(self, model: QLVM, module: QLVMModule, n_lattice: int, rng: np.random.Generator, *,
                 val_seed: int):
        self.model, self.module, self.rng, self.val_seed = model, module, rng, int(val_seed)
        self.modules = {"module_": module}
        #: lattice size of the validation score (None: the training lattice); a lattice
        #: schedule fixes it to the final size so the early-stopping curve has one yardstick
        self.validation_lattice = None
        self.set_lattice(n_lattice)

    def set_lattice(self, n_lattice: int) -> None:
        """Train (and validate) on the rank-1 lattice of ``n_lattice`` points from now on."""
        d = int(self.model.latent_dim)
        self.n_lattice = int(n_lattice)
        self.points = torch.as_tensor(_lattice.lattice(self.n_lattice, d), dtype=torch.float32,
                                      device=self.model.device_)

    def batch_objective(self, x: torch.Tensor) -> torch.Tensor:
        model, module = self.model, self.module
        shift = torch.as_tensor(self.rng.random(int(model.latent_dim)), dtype=torch.float32,
                                device=model.device_)
        u = frac(self.points + shift)
        with model._autocast():
            params = module.params(u)
        ll = module.likelihood.log_prob_matrix(x, params)
        return torch.logsumexp(ll, dim=1) - math.log(self.n_lattice)

    def validation_score(self, data) -> float:
        res = self.model._stream(data, self.validation_lattice or self.n_lattice, 1,
                                 seed=self.val_seed, show_progress=False)
        return float(res["log_likelihood"].mean())
