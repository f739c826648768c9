"""VAE and IWAE baselines on the QLVM's own decoders, scored by the same QMC estimator.

The baselines exist to answer one question honestly: does a decoder trained with the QLVM's
tight lattice estimate of log p(x) model the data better than a decoder of the same
architecture trained with an encoder and a looser bound?  So they share everything with the
engine except the training objective:

- the decoder classes (:func:`vocalatent.nn.decoders.make_decoder` with
  ``input_map="identity"``) and the likelihoods (:func:`vocalatent.nn.likelihoods.make_likelihood`;
  the per-sample terms come from ``log_prob_pairs``);
- a standard normal prior ``z ~ N(0, I_d)``;
- a Gaussian encoder ``q(z | x) = N(mu(x), diag(s(x)^2) + U(x) U(x)^T)`` with an optional
  low-rank factor ``U`` (``covariance_rank``), sized from the data: an MLP for vectors, a small
  convolutional network for (F, T) items;
- the estimator base :class:`~vocalatent.model.LatentModel` (the QLVM's sibling, not its
  subclass): the training loop :func:`vocalatent.training.train`, restarts, the scikit-learn
  contract (``fit``, ``transform`` to an ndarray, ``transform_dataset``, ``score_samples``),
  ``evaluate``, ``decode``, ``mean_function``, ``save``/``load``.

Training objectives, for log-weights ``log w = log p(x | z) + log p(z) - log q(z | x)``:

- :class:`VAE`: the ELBO ``E_q[log p(x | z)] - KL(q || p)`` with one reparameterised sample
  and the KL in closed form;
- :class:`IWAE`: the importance-weighted bound ``log (1/k) sum_s w_s`` with ``k`` samples — the
  ``- log k`` term and nothing else.

Both models share :meth:`~vocalatent.model.LatentModel.score_samples` with the QLVM: the decoder's held-out
log p(x) estimated by the randomly shifted lattice pushed through the inverse normal CDF
(clipped to ``[1e-4, 1 - 1e-4]``). That is the one yardstick on which every decoder is
compared. :meth:`VAE.elbo` and :meth:`VAE.iwae_bound` report each model's own bound on any
data, so that "training bound vs tight estimate" is visible (:meth:`VAE.evaluate` gives both).

Cost per epoch of N items, in decoder evaluations: VAE ``N``, IWAE ``N * k``; compare with the
QLVM's ``(N / batch_size) * n_lattice``.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import torch
from torch import nn

from ._utils import ParameterError, check_option, check_positive, seeded_torch
from ._version import __version__
from .items import ItemData
from .model import LatentModel

__all__ = ["ENCODERS", "BoundObjective", "EncoderModel", "GaussianEncoder", "IWAE", "VAE", "kl_to_standard_normal",
           "log_importance_weights", "posterior_log_prob", "sample_posterior"]

logger = logging.getLogger(__name__)

_CHECKPOINT_FORMAT = "vocalatent.baselines/1"
_LOG_2PI = math.log(2 * math.pi)

ENCODERS = ("auto", "mlp", "conv")

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh, "silu": nn.SiLU}


# --------------------------------------------------------------------------------------------
# Math: the Gaussian encoder and the bounds (pure torch; no data handling)
# --------------------------------------------------------------------------------------------
class GaussianEncoder(nn.Module):
    """Amortised Gaussian posterior ``q(z | x)`` with diagonal plus low-rank covariance.

    Parameters
    ----------
    n_features : int
        D, the flattened item size.
    latent_dim : int
        d.
    kind : {"mlp", "conv"}
        ``"mlp"``: fully connected layers on the flat item. ``"conv"``: stride-2 convolutions
        (16, 32, 64, ... channels, 4 x 4 kernels) on the (F, T) item until the map is at most
        4 pixels on its short side (at most 4 stages), then one fully connected layer.
    item_shape : (int, int) or None
        (F, T); needed for ``kind="conv"``.
    hidden : sequence of int
        Widths of the fully connected layers (``"conv"`` uses the last one).
    rank : int >= 0
        Rank r of the covariance factor U (0: diagonal covariance).
    activation : {"gelu", "relu", "elu", "tanh", "silu"}
    min_scale : float > 0
        Floor on the posterior standard deviations.

    Notes
    -----
    ``forward(x)`` takes flat items ``(B, D)`` and returns ``loc (B, d)``, ``scale (B, d)``
    (> 0) and ``factor (B, d, r)`` or None. Items are standardised first with a per-feature
    shift and one global scale set by :meth:`setup` from a sample of the training data.
    """

    def __init__(self, n_features: int, latent_dim: int, *, kind: str = "mlp", item_shape=None,
                 hidden=(256, 256), rank: int = 0, activation: str = "gelu",
                 min_scale: float = 1e-4):
        super().__init__()
        check_option("kind", kind, ("mlp", "conv"))
        check_option("activation", activation, tuple(_ACTIVATIONS))
        check_positive("rank", rank, integer=True, allow_zero=True)
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ParameterError(f"encoder hidden must be a non-empty list of positive widths; got {hidden!r}")
        act = _ACTIVATIONS[activation]
        self.n_features, self.latent_dim, self.rank = int(n_features), int(latent_dim), int(rank)
        self.kind, self.min_scale = kind, float(min_scale)
        if kind == "conv":
            if item_shape is None or len(item_shape) != 2 or int(item_shape[0]) * int(item_shape[1]) != n_features:
                raise ParameterError(f"a conv encoder needs item_shape=(F, T) with F*T = {n_features}; "
                                     f"got {item_shape!r}")
            f, t = (int(s) for s in item_shape)
            self.item_shape = (f, t)
            layers, c_in, c_out, size = [], 1, 16, min(f, t)
            n_stages = 0
            while size > 4 and n_stages < 4:
                layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), act()]
                c_in, c_out, size, n_stages = c_out, min(2 * c_out, 128), size // 2, n_stages + 1
            layers.append(nn.Flatten())
            with torch.no_grad():
                n_flat = nn.Sequential(*layers)(torch.zeros(1, 1, f, t)).shape[1]
            self.body = nn.Sequential(*layers, nn.Linear(n_flat, hidden[-1]), act())
        else:
            self.item_shape = None
            sizes = (int(n_features),) + hidden
            layers = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                layers += [nn.Linear(a, b), act()]
            self.body = nn.Sequential(*layers)
        self.head = nn.Linear(hidden[-1], latent_dim * (2 + self.rank))
        with torch.no_grad():  # start with moderately narrow posteriors (scale about 0.3)
            self.head.bias[latent_dim:2 * latent_dim].fill_(-1.0)
            if self.rank:
                self.head.weight[2 * latent_dim:].mul_(0.1)
                self.head.bias[2 * latent_dim:].zero_()
        self.register_buffer("shift", torch.zeros(n_features))
        self.register_buffer("inv_scale", torch.ones(()))

    def setup(self, x_sample: np.ndarray) -> None:
        """Set the input standardisation from a sample of training items ``(n, D)``."""
        x = np.asarray(x_sample, dtype=np.float64).reshape(len(x_sample), -1)
        mean = x.mean(axis=0)
        std = float(np.sqrt(((x - mean) ** 2).mean()))
        self.shift.copy_(torch.as_tensor(mean, dtype=self.shift.dtype))
        self.inv_scale.fill_(1.0 / max(std, 1e-6))

    def forward(self, x: torch.Tensor):
        h = (x - self.shift) * self.inv_scale
        if self.kind == "conv":
            h = h.reshape(x.shape[0], 1, *self.item_shape)
        out = self.head(self.body(h))
        d = self.latent_dim
        loc = out[:, :d]
        scale = nn.functional.softplus(out[:, d:2 * d]) + self.min_scale
        factor = out[:, 2 * d:].reshape(x.shape[0], d, self.rank) if self.rank else None
        return loc, scale, factor


def sample_posterior(loc: torch.Tensor, scale: torch.Tensor, factor: torch.Tensor | None,
                     n_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Reparameterised samples ``z = loc + scale * e1 + factor @ e2`` of shape ``(k, B, d)``.

    Parameters
    ----------
    loc, scale : torch.Tensor [shape=(B, d)]
    factor : torch.Tensor [shape=(B, d, r)] or None
    n_samples : int
        k.
    generator : torch.Generator or None
        Source of the standard normal draws (on ``loc``'s device).
    """
    k = int(n_samples)
    kw = dict(device=loc.device, dtype=loc.dtype, generator=generator)
    z = loc + scale * torch.randn((k,) + tuple(loc.shape), **kw)
    if factor is not None:
        e2 = torch.randn((k, loc.shape[0], factor.shape[2], 1), **kw)
        z = z + (factor @ e2).squeeze(-1)
    return z


def posterior_log_prob(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                       factor: torch.Tensor | None) -> torch.Tensor:
    """``log q(z | x)`` for ``z`` ``(k, B, d)`` under ``N(loc, diag(scale^2) + factor factor^T)``.

    Returns
    -------
    log_q : torch.Tensor [shape=(k, B)]
    """
    d = loc.shape[1]
    diff = z - loc
    if factor is None:
        u = diff / scale
        return -0.5 * (u * u).sum(-1) - torch.log(scale).sum(-1) - 0.5 * d * _LOG_2PI
    # Woodbury: Sigma^-1 = D^-1 - D^-1 U C^-1 U^T D^-1 with C = I + U^T D^-1 U (r x r);
    # log det Sigma = log det D + log det C.
    inv_var = scale.pow(-2)                                    # (B, d)
    du = factor * inv_var[..., None]                           # D^-1 U: (B, d, r)
    cap = torch.eye(factor.shape[2], dtype=loc.dtype, device=loc.device) + factor.transpose(1, 2) @ du
    chol = torch.linalg.cholesky(cap)                          # (B, r, r)
    proj = torch.einsum("kbd,bdr->kbr", diff, du)              # U^T D^-1 diff
    sol = torch.cholesky_solve(proj.permute(1, 2, 0), chol).permute(2, 0, 1)  # C^-1 proj
    maha = (diff * diff * inv_var).sum(-1) - (proj * sol).sum(-1)
    logdet = 2 * torch.log(scale).sum(-1) + 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
    return -0.5 * maha - 0.5 * logdet - 0.5 * d * _LOG_2PI


def kl_to_standard_normal(loc: torch.Tensor, scale: torch.Tensor,
                          factor: torch.Tensor | None) -> torch.Tensor:
    """``KL(N(loc, diag(scale^2) + factor factor^T) || N(0, I))`` in closed form, ``(B,)``."""
    tr = (scale * scale).sum(-1)
    logdet = 2 * torch.log(scale).sum(-1)
    if factor is not None:
        tr = tr + (factor * factor).sum((-2, -1))
        du = factor * scale.pow(-2)[..., None]
        cap = torch.eye(factor.shape[2], dtype=loc.dtype, device=loc.device) + factor.transpose(1, 2) @ du
        logdet = logdet + torch.logdet(cap)
    return 0.5 * (tr + (loc * loc).sum(-1) - loc.shape[1] - logdet)


def _decode_log_lik(module, x: torch.Tensor, z: torch.Tensor, autocast=None) -> torch.Tensor:
    """``log p(x_b | z_kb)`` for samples ``z`` ``(k, B, d)``: ``(k, B)``."""
    k, b, d = z.shape
    if autocast is None:
        params = module.decoder(z.reshape(k * b, d))
    else:
        with autocast:
            params = module.decoder(z.reshape(k * b, d))
        params = params.float()
    xr = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, x.shape[1])
    return module.likelihood.log_prob_pairs(xr, params).reshape(k, b)


def log_importance_weights(module, encoder: nn.Module, x: torch.Tensor, n_samples: int, *,
                           generator: torch.Generator | None = None, autocast=None) -> torch.Tensor:
    """Log importance weights ``log p(x | z) + log p(z) - log q(z | x)`` with ``z ~ q(z | x)``.

    Parameters
    ----------
    module : QLVMModule
        Decoder and likelihood (its ``decoder`` takes latent points in R^d directly).
    encoder : nn.Module
        Returns ``(loc, scale, factor)`` for flat items (see :class:`GaussianEncoder`).
    x : torch.Tensor [shape=(B, D)]
    n_samples : int
        k samples per item.

    Returns
    -------
    log_w : torch.Tensor [shape=(k, B)]
        ``mean(log_w, 0)`` is an unbiased ELBO estimate; ``logsumexp(log_w, 0) - log k`` the
        IWAE-k bound. With the exact posterior every entry equals log p(x).
    """
    loc, scale, factor = encoder(x)
    z = sample_posterior(loc, scale, factor, n_samples, generator=generator)
    log_prior = -0.5 * (z * z).sum(-1) - 0.5 * z.shape[-1] * _LOG_2PI
    return _decode_log_lik(module, x, z, autocast) + log_prior - posterior_log_prob(z, loc, scale, factor)


def _analytic_elbo(module, encoder, x, n_samples: int, *, generator=None, autocast=None) -> torch.Tensor:
    """ELBO per item ``(B,)``: reconstruction averaged over ``n_samples`` samples, KL exact."""
    loc, scale, factor = encoder(x)
    z = sample_posterior(loc, scale, factor, n_samples, generator=generator)
    rec = _decode_log_lik(module, x, z, autocast).mean(0)
    return rec - kl_to_standard_normal(loc, scale, factor)


# --------------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------------
class EncoderModel(LatentModel):
    """Common base of :class:`VAE` and :class:`IWAE`: a decoder with a standard normal prior and
    a Gaussian encoder, trained on a bound by the shared loop (:func:`vocalatent.training.train`)
    and scored, like the QLVM, by the lattice estimate of log p(x). Not used directly."""

    _metric = "bound"
    _fitted_attrs = ("module_", "encoder_")
    _checkpoint_format = _CHECKPOINT_FORMAT

    @property
    def bound_name(self) -> str:
        """Name of the training bound: ``"elbo"`` or ``"iwae_<k>"``."""
        raise NotImplementedError

    def _check_params(self) -> None:
        super()._check_params()
        check_option("encoder", self.encoder, ENCODERS)
        check_positive("covariance_rank", self.covariance_rank, integer=True, allow_zero=True)
        try:
            hidden = tuple(int(h) for h in self.encoder_hidden)
        except (TypeError, ValueError):
            hidden = ()
        if not hidden or min(hidden) < 1:
            raise ParameterError(f"encoder_hidden must be a non-empty list of positive widths; "
                                 f"got {self.encoder_hidden!r}")

    # ----------------------------------------------------------------------------- building
    def _build_encoder(self, item_shape, n_features) -> GaussianEncoder:
        shape2 = tuple(self.output_shape) if self.output_shape is not None else (
            tuple(item_shape) if len(item_shape) == 2 else None)
        kind = self.encoder
        if kind == "auto":
            kind = "conv" if shape2 is not None and min(shape2) >= 8 else "mlp"
        if kind == "conv" and shape2 is None:
            raise ParameterError("encoder='conv' needs 2-D items (N, F, T) or output_shape=(F, T)")
        self.encoder_kind_ = kind
        return GaussianEncoder(n_features, int(self.latent_dim), kind=kind, item_shape=shape2,
                               hidden=tuple(self.encoder_hidden), rank=int(self.covariance_rank))

    def _training_bound(self, x, generator) -> torch.Tensor:
        """The per-item bound ``(B,)`` maximised in training."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- fitting
    def fit(self, X, y=None, *, validation=None):
        """Train decoder and encoder by maximising the model's bound (ELBO or IWAE-k).

        Parameters
        ----------
        X : array-like [shape=(N, D) or (N, F, T)]
            As in :meth:`QLVM.fit <vocalatent.model.QLVM.fit>` (sparse input included).
        y : None
            Ignored (scikit-learn's signature).
        validation : array-like, float in (0, 1), or None
            Held-out items (or a fraction of X) for early stopping on the model's own bound.

        Returns
        -------
        self
        """
        return super().fit(X, validation=validation)

    def _run_rng(self, restart, seed, fit_rng):
        # the first run shuffles with the generator that drew the validation split and the
        # setup sample (as the baselines always did, so that fits reproduce earlier versions)
        return fit_rng if restart == 0 else np.random.default_rng(seed)

    def _make_objective(self, seed, rng, sample, data, val) -> "BoundObjective":
        with seeded_torch(seed):
            module = self._build_module(self.item_shape_, self.n_features_)
            encoder = self._build_encoder(self.item_shape_, self.n_features_)
        data.check(module.likelihood)
        if val is not None:
            val.check(module.likelihood)
        module.likelihood.setup(sample)
        encoder.setup(sample)
        self.module_, self.encoder_ = module.to(self.device_), encoder.to(self.device_)
        gen = torch.Generator(device=self.device_)
        gen.manual_seed(seed + 5)
        return BoundObjective(self, gen, val_seed=self.seed_ + 6)

    def _finish_fit(self, objective, result) -> None:
        self.best_val_bound_ = result.best_validation

    # ----------------------------------------------------------------------------- bounds
    def _bound_items(self, data: ItemData, *, seed: int) -> np.ndarray:
        """The model's own training bound on every item (ELBO or IWAE-k), float64 (N,)."""
        if self.bound_name == "elbo":
            return self._stream_bound(data, "elbo", 1, seed=seed)
        return self._stream_bound(data, "iwae", int(self.k), seed=seed)

    @torch.no_grad()
    def _stream_bound(self, data: ItemData, kind: str, k: int, *, seed: int) -> np.ndarray:
        self.module_.eval()
        self.encoder_.eval()
        gen = torch.Generator(device=self.device_)
        gen.manual_seed(int(seed))
        budget = self.memory_budget_mb * 2**20
        # per sample and item: the repeated item, the decoded parameters and decoder activations
        per = 4 * (self.n_features_ * (2 + self.module_.likelihood.n_params) + 2048)
        block = int(max(1, min(data.n, budget // (per * min(k, 64)))))
        k_chunk = int(max(1, min(k, budget // (per * block))))
        out = np.empty(data.n)
        for b0 in range(0, data.n, block):
            idx = np.arange(b0, min(data.n, b0 + block))
            x = torch.as_tensor(data.read(idx, self.module_.likelihood), device=self.device_)
            if kind == "elbo":
                acc = torch.zeros(len(idx), dtype=torch.float64, device=self.device_)
                for s0 in range(0, k, k_chunk):
                    kc = min(k_chunk, k - s0)
                    acc += _analytic_elbo(self.module_, self.encoder_, x, kc, generator=gen,
                                          autocast=self._autocast()).double() * kc
                out[idx] = (acc / k).cpu().numpy()
                continue
            lse = torch.full((len(idx),), -math.inf, dtype=torch.float64, device=self.device_)
            for s0 in range(0, k, k_chunk):
                kc = min(k_chunk, k - s0)
                lw = log_importance_weights(self.module_, self.encoder_, x, kc, generator=gen,
                                            autocast=self._autocast()).double()
                lse = torch.logaddexp(lse, torch.logsumexp(lw, 0))
            out[idx] = (lse - math.log(k)).cpu().numpy()
        return out

    def elbo(self, X, *, n_samples: int = 16, random_state=None) -> np.ndarray:
        """Per-item ELBO in nats: reconstruction term averaged over ``n_samples`` encoder
        samples, KL to the prior in closed form.

        Returns
        -------
        elbo : np.ndarray [shape=(N,), dtype=float64]
        """
        self._check_fitted()
        check_positive("n_samples", n_samples, integer=True)
        seed = self.seed_ + 7 if random_state is None else int(random_state)
        return self._stream_bound(self._data(X), "elbo", int(n_samples), seed=seed)

    def iwae_bound(self, X, k: int = 16, *, random_state=None) -> np.ndarray:
        """Per-item importance-weighted bound ``log (1/k) sum_s w_s`` in nats, ``k`` samples
        from the encoder (k=1 is the single-sample ELBO; it tightens toward log p(x) as k grows).

        Returns
        -------
        bound : np.ndarray [shape=(N,), dtype=float64]
        """
        self._check_fitted()
        check_positive("k", k, integer=True)
        seed = self.seed_ + 8 if random_state is None else int(random_state)
        return self._stream_bound(self._data(X), "iwae", int(k), seed=seed)

    def score_samples(self, X, *, n_lattice: int | str | None = None, n_shifts: int | None = None,
                      random_state=None, return_diagnostics: bool = False, refine: bool = False):
        """Per-item log p(x) of the decoder in nats by the shifted lattice through the inverse
        normal CDF (the yardstick shared with the QLVM), with the same diagnostics; see
        :meth:`QLVM.score_samples`."""
        if int(self.latent_dim) > 3:
            logger.warning("lattice scoring with latent_dim=%d samples the prior and is a loose lower "
                           "bound; iwae_bound(X, k=1000) is tighter", int(self.latent_dim))
        return super().score_samples(X, n_lattice=n_lattice, n_shifts=n_shifts, random_state=random_state,
                                     return_diagnostics=return_diagnostics, refine=refine)

    def evaluate(self, X, *, n_lattice: int | str | None = None, n_shifts: int | None = None,
                 random_state=None, n_bound_samples: int = 16, **lattice_options) -> dict:
        """Held-out log p(x) (lattice estimate, with its standard error over shifts) beside the
        model's own bounds.

        Returns
        -------
        result : dict
            The keys of :meth:`QLVM.evaluate` (``lattice_options``: its ``tol`` and
            ``max_seconds``; ``n_lattice="auto"`` by default as there), plus ``elbo`` (mean, ``n_bound_samples``
            reconstruction samples), ``training_bound`` (mean of the bound the model was trained
            on: the ELBO, or IWAE-k with the model's k), ``bound_name`` and ``bound_gap``
            (``log_likelihood - training_bound``, >= 0 up to estimation noise).
        """
        res = super().evaluate(X, n_lattice=n_lattice, n_shifts=n_shifts, random_state=random_state,
                               **lattice_options)
        seed = self.seed_ + 9 if random_state is None else int(random_state) + 1
        res["elbo"] = float(np.mean(self.elbo(X, n_samples=n_bound_samples, random_state=seed)))
        if self.bound_name == "elbo":
            res["training_bound"] = res["elbo"]
        else:
            res["training_bound"] = float(np.mean(self.iwae_bound(X, int(self.k), random_state=seed)))
        res["bound_name"] = self.bound_name
        res["bound_gap"] = res["log_likelihood"] - res["training_bound"]
        return res

    # ----------------------------------------------------------------------------- embedding
    @torch.no_grad()
    def encode(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Encoder mean and standard deviations (the diagonal of the posterior covariance).

        Returns
        -------
        loc : np.ndarray [shape=(N, d)]
            Posterior mean in latent units (the prior is N(0, I)).
        sd : np.ndarray [shape=(N, d)], > 0
        """
        self._check_fitted()
        data = self._data(X)
        loc = np.empty((data.n, int(self.latent_dim)))
        sd = np.empty_like(loc)
        for b0 in range(0, data.n, 1024):
            idx = np.arange(b0, min(data.n, b0 + 1024))
            x = torch.as_tensor(data.read(idx, self.module_.likelihood), device=self.device_)
            m, s, f = self.encoder_(x)
            var = s * s + ((f * f).sum(-1) if f is not None else 0)
            loc[idx] = m.double().cpu().numpy()
            sd[idx] = torch.sqrt(var).double().cpu().numpy()
        return loc, sd

    def transform(self, X) -> np.ndarray:
        """Embed items at their encoder mean (scikit-learn's transform).

        Returns
        -------
        embedding : np.ndarray [shape=(N, latent_dim), dtype=float64]
            The ``embedding`` variable of :meth:`transform_dataset` (latent units, prior N(0, I)).
        """
        return self.encode(X)[0]

    def transform_dataset(self, X, *, score: bool = True, n_lattice: int | None = None,
                          n_shifts: int | None = None, random_state=None, coords: dict | None = None,
                          refine: bool = True):
        """Embed items at their encoder mean, as a Dataset.

        Parameters
        ----------
        X : array-like [shape=(N, D) or (N, F, T)]
        score : bool, default True
            Add the lattice estimate of log p(x) per item (``n_lattice``, ``n_shifts``,
            ``random_state`` and ``refine`` as in :meth:`score_samples`; refined by default,
            as the QLVM's embedding) with its ``converged`` flag and ``refined``.
        coords : dict or DataFrame, optional
            Per-item metadata added as ``item`` coordinates.

        Returns
        -------
        ds : xarray.Dataset
            Dims ``item`` and ``latent``; ``embedding`` (encoder mean in R^d; for d=2 a map to
            plot), ``posterior_sd`` (encoder standard deviations) and, with ``score``,
            ``log_likelihood`` (nats).
        """
        import xarray as xr

        from .embedding import add_item_coords, to_jsonable

        loc, sd = self.encode(X)
        d = int(self.latent_dim)
        ds = xr.Dataset({"embedding": (("item", "latent"), loc),
                         "posterior_sd": (("item", "latent"), sd)},
                        coords={"item": np.arange(len(loc)), "latent": [f"z{i + 1}" for i in range(d)]})
        ds["embedding"].attrs.update(long_name="encoder posterior mean", units="latent (prior N(0, 1))")
        if score:
            ll, diag = self.score_samples(X, n_lattice=n_lattice, n_shifts=n_shifts, random_state=random_state,
                                          refine=refine, return_diagnostics=True)
            ds["log_likelihood"] = ("item", ll)
            ds["log_likelihood"].attrs.update(long_name="log p(x) lattice estimate", units="nats")
            ds["converged"] = ("item", np.asarray(diag["converged"], dtype=bool))
            ds["refined"] = ("item", np.asarray(diag.get("refined", np.zeros(len(ll), dtype=bool)), dtype=bool))
            ds.attrs.update(converged_fraction=float(np.mean(diag["converged"])),
                            convergence_criterion=str(diag["criterion"]))
        if coords is not None:
            ds = add_item_coords(ds, coords)
        ds.attrs.update(vocalatent_version=__version__, latent_dim=d, seed=int(self.seed_),
                        model=json.dumps(to_jsonable(self.get_params())), estimator=type(self).__name__,
                        likelihood=str(self.likelihood), decoder=str(self.decoder_kind_),
                        encoder=str(self.encoder_kind_), training_bound=self.bound_name)
        return ds

    def fit_transform(self, X, y=None, *, validation=None) -> np.ndarray:
        """``fit(X, validation=validation)`` then ``transform(X)`` (an ndarray)."""
        return self.fit(X, validation=validation).transform(X)

    @torch.no_grad()
    def decode(self, z) -> np.ndarray:
        """Decoded means at latent points ``z`` ``(n, d)`` in R^d (prior N(0, I), not the unit
        torus of the QLVM): shape ``(n, *item_shape)``."""
        self._check_fitted()
        z = np.atleast_2d(np.asarray(z, dtype=np.float32))
        if z.shape[1] != self.latent_dim:
            raise ParameterError(f"z must have {self.latent_dim} columns (latent_dim); got shape {z.shape}")
        zt = torch.as_tensor(z, device=self.device_)
        out = [self.module_.likelihood.mean(self.module_.decoder(zt[c0:c0 + 1024]).float()).cpu().numpy()
               for c0 in range(0, len(zt), 1024)]
        return np.concatenate(out).reshape((len(z),) + tuple(self.item_shape_))

    def mean_function(self):
        """A differentiable callable ``f(z) -> (n, D)``: decoded mean (flattened) at torch
        latent points ``z`` ``(n, d)`` in R^d, on the model's device."""
        self._check_fitted()
        module = self.module_
        module.eval()

        def f(z: torch.Tensor) -> torch.Tensor:
            return module.likelihood.mean(module.decoder(z.to(self.device_, torch.float32)).float())

        return f

    # ----------------------------------------------------------------------------- persistence
    # save/load are LatentModel's; these hooks add the encoder to the same checkpoint.
    def _checkpoint_params(self) -> dict:
        params = super()._checkpoint_params()
        params["encoder_hidden"] = list(params["encoder_hidden"])
        return params

    def _checkpoint_state(self) -> dict:
        state = super()._checkpoint_state()
        state["encoder_kind"] = self.encoder_kind_
        state["encoder_state_dict"] = {k: v.detach().cpu() for k, v in self.encoder_.state_dict().items()}
        return state

    @classmethod
    def _params_from_checkpoint(cls, params: dict) -> dict:
        params["encoder_hidden"] = tuple(params["encoder_hidden"])
        return params

    def _restore(self, state: dict) -> None:
        super()._restore(state)
        self.encoder_ = self._build_encoder(self.item_shape_, self.n_features_)
        self.encoder_.load_state_dict(state["encoder_state_dict"])
        self.encoder_.to(self.device_).eval()


class BoundObjective:
    """Training objective of the encoder models: the model's bound (ELBO or IWAE-k) per item,
    reparameterised samples from ``generator``; validated on the same bound."""

    def __init__(self, model: EncoderModel, generator: torch.Generator, *, val_seed: int):
        self.model, self.generator, self.val_seed = model, generator, int(val_seed)
        self.modules = {"module_": model.module_, "encoder_": model.encoder_}

    def batch_objective(self, x: torch.Tensor) -> torch.Tensor:
        return self.model._training_bound(x, self.generator)

    def validation_score(self, data) -> float:
        return float(np.mean(self.model._bound_items(data, seed=self.val_seed)))


_COMMON_DOC = """
    decoder : {"auto", "mlp", "conv"}
        As in :class:`~vocalatent.model.QLVM` (identity input layer instead of the periodic one).
    likelihood : str
        As in :class:`~vocalatent.model.QLVM`.
    encoder : {"auto", "mlp", "conv"}
        ``"auto"``: convolutional for (F, T) items with both sides >= 8, an MLP otherwise.
    encoder_hidden : sequence of int, default (256, 256)
        Widths of the encoder's fully connected layers.
    covariance_rank : int >= 0, default 0
        Rank of the low-rank part of the posterior covariance (0: diagonal).
    batch_size, max_epochs, lr, weight_decay, patience
        As in :class:`~vocalatent.model.QLVM`; early stopping watches the model's own bound on
        the validation data.
    n_components, decoder_options, likelihood_options, output_shape, n_eval_lattice,
    n_eval_shifts, device, precision, memory_budget_mb, n_restarts, random_state, verbose
        As in :class:`~vocalatent.model.QLVM` (restarts are ranked by the validation bound).
"""


class VAE(EncoderModel):
    """Variational autoencoder on the QLVM's decoders, with a standard normal prior.

    Trained on the ELBO (one reparameterised sample, closed-form KL). Scored, like every
    decoder in vocalatent, by the lattice estimate of log p(x) (:meth:`score_samples`,
    :meth:`evaluate`); its own bounds are :meth:`elbo` and :meth:`iwae_bound`.

    Parameters
    ----------
    latent_dim : int, default 2
        d. Lattice scoring is accurate for d <= 3; for larger d, :meth:`score_samples` samples
        the prior and is a loose lower bound: use :meth:`iwae_bound` with a large k instead.
    """ + _COMMON_DOC.rstrip() + """
    """

    def __init__(self, latent_dim: int = 2, *, n_components: int | None = None, decoder: str = "auto",
                 likelihood: str = "gaussian", encoder: str = "auto", encoder_hidden=(256, 256),
                 covariance_rank: int = 0, batch_size: int = 256, max_epochs: int = 200,
                 lr: float = 1e-3, weight_decay: float = 0.0, patience: int = 20,
                 decoder_options: dict | None = None, likelihood_options: dict | None = None,
                 output_shape=None, n_eval_lattice: int | None = None, n_eval_shifts: int = 4,
                 device="auto", precision: str = "32", memory_budget_mb: float = 512.0,
                 n_restarts: int = 1, random_state=None, verbose: bool = True):
        self.latent_dim = latent_dim
        self.n_components = n_components  # scikit-learn's alias: sets latent_dim when given
        self.decoder = decoder
        self.likelihood = likelihood
        self.encoder = encoder
        self.encoder_hidden = encoder_hidden
        self.covariance_rank = covariance_rank
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.decoder_options = decoder_options
        self.likelihood_options = likelihood_options
        self.output_shape = output_shape
        self.n_eval_lattice = n_eval_lattice
        self.n_eval_shifts = n_eval_shifts
        self.device = device
        self.precision = precision
        self.memory_budget_mb = memory_budget_mb
        self.n_restarts = n_restarts
        self.random_state = random_state
        self.verbose = verbose

    @property
    def bound_name(self) -> str:
        return "elbo"

    def _training_bound(self, x, generator) -> torch.Tensor:
        return _analytic_elbo(self.module_, self.encoder_, x, 1, generator=generator,
                              autocast=self._autocast())


class IWAE(EncoderModel):
    """Importance-weighted autoencoder: decoder and encoder trained on ``log (1/k) sum_s w_s``.

    Parameters
    ----------
    latent_dim : int, default 2
        As in :class:`VAE`.
    k : int >= 1, default 16
        Importance samples per item and step (k = 1 is the single-sample VAE without the
        closed-form KL). An epoch costs ``N * k`` decoder evaluations.
    """ + _COMMON_DOC.rstrip() + """
    """

    def __init__(self, latent_dim: int = 2, *, k: int = 16, n_components: int | None = None,
                 decoder: str = "auto", likelihood: str = "gaussian", encoder: str = "auto",
                 encoder_hidden=(256, 256), covariance_rank: int = 0, batch_size: int = 256,
                 max_epochs: int = 200, lr: float = 1e-3, weight_decay: float = 0.0,
                 patience: int = 20, decoder_options: dict | None = None,
                 likelihood_options: dict | None = None, output_shape=None,
                 n_eval_lattice: int | None = None, n_eval_shifts: int = 4, device="auto",
                 precision: str = "32", memory_budget_mb: float = 512.0, n_restarts: int = 1,
                 random_state=None, verbose: bool = True):
        self.latent_dim = latent_dim
        self.k = k
        self.n_components = n_components  # scikit-learn's alias: sets latent_dim when given
        self.decoder = decoder
        self.likelihood = likelihood
        self.encoder = encoder
        self.encoder_hidden = encoder_hidden
        self.covariance_rank = covariance_rank
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.decoder_options = decoder_options
        self.likelihood_options = likelihood_options
        self.output_shape = output_shape
        self.n_eval_lattice = n_eval_lattice
        self.n_eval_shifts = n_eval_shifts
        self.device = device
        self.precision = precision
        self.memory_budget_mb = memory_budget_mb
        self.n_restarts = n_restarts
        self.random_state = random_state
        self.verbose = verbose

    @property
    def bound_name(self) -> str:
        return f"iwae_{int(self.k)}"

    def _check_params(self) -> None:
        super()._check_params()
        check_positive("k", self.k, integer=True)

    def _training_bound(self, x, generator) -> torch.Tensor:
        lw = log_importance_weights(self.module_, self.encoder_, x, int(self.k), generator=generator,
                                    autocast=self._autocast())
        return torch.logsumexp(lw, 0) - math.log(int(self.k))
