"""The one training loop of the estimators (QLVM, VAE, IWAE).

Every estimator trains the same way: epochs over shuffled mini-batches, one Adam step per
batch on the negative mean of a per-item objective (the lattice estimate of log p(x), the
ELBO, the IWAE bound), a divergence check, a history, a validation score after each epoch with
early stopping that keeps the best weights, and a progress bar. What differs is only *what*
is maximised; that is an :class:`Objective`:

- ``modules`` — the ``nn.Module`` objects trained (their parameters, train/eval mode and
  ``state_dict`` for the best epoch);
- ``batch_objective(x)`` — the per-item objective ``(B,)`` of a batch (maximised);
- ``validation_score(data)`` — one float on the validation data (higher is better).

Changes of the training schedule are :class:`Callback` objects: ``on_epoch_start`` and
``on_epoch_end`` see the :class:`TrainState` (epoch, optimizer, objective, history, the
early-stopping rule) and may change it, e.g. set a new lattice size on the objective
(a lattice schedule), the optimizer's learning rate (warm-up, reduce-on-plateau) or request a
stop. Early stopping itself is a small strategy object, :class:`EarlyStopping`, that sees the
validation curve; a smoothed rule is a subclass overriding :meth:`EarlyStopping.update`.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from ._utils import DataError

__all__ = ["Callback", "EarlyStopping", "Objective", "TrainResult", "TrainState", "WeightAverage", "train"]

logger = logging.getLogger(__name__)


class Objective(Protocol):
    """What one training run maximises (see the module docstring)."""

    modules: dict

    def batch_objective(self, x: torch.Tensor) -> torch.Tensor: ...

    def validation_score(self, data) -> float: ...


class EarlyStopping:
    """Stop after ``patience`` epochs without a relative improvement of ``min_delta`` in the
    validation score (higher is better); remembers the best epoch.

    Parameters
    ----------
    patience : int
    min_delta : float, default 1e-4
        A score improves when it exceeds the best by ``min_delta * |best|``.
    """

    def __init__(self, patience: int, *, min_delta: float = 1e-4):
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.best = -math.inf
        self.bad_epochs = 0

    def update(self, score: float) -> bool:
        """Record one epoch's validation score; True when it is the best so far (the loop then
        keeps these weights)."""
        improved = not math.isfinite(self.best) or score > self.best + self.min_delta * abs(self.best)
        if improved:
            self.best, self.bad_epochs = score, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


class WeightAverage:
    """An exponential moving average of the trained parameters, scored in place of them.

    Optimizer step k moves the average a share ``max(1 / (horizon * steps_per_epoch),
    1 / (k + 1))`` towards the live parameters: an equal-weight mean of the first steps, then
    an exponential average spanning about ``horizon`` epochs whatever the batch size.
    Validation, the best epoch's weights and the weights the fit ends with are the average's;
    training steps continue from the live parameters.

    Parameters
    ----------
    modules : sequence of torch.nn.Module
    horizon : float > 0
        Epochs the average spans.
    steps_per_epoch : int > 0
    """

    def __init__(self, modules, *, horizon: float, steps_per_epoch: int):
        if not horizon > 0:
            raise ValueError(f"horizon must be > 0; got {horizon!r}")
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.rate = 1.0 / max(1.0, float(horizon) * int(steps_per_epoch))
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step."""
        self.steps += 1
        w = max(self.rate, 1.0 / (self.steps + 1))
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p.detach(), w)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live parameters and the average (call twice to swap back)."""
        for s, p in zip(self.shadow, self.params):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


@dataclass
class TrainState:
    """What a :class:`Callback` sees and may change between epochs."""

    epoch: int
    max_epochs: int
    objective: object
    optimizer: torch.optim.Optimizer
    history: dict
    stopping: EarlyStopping | None
    stop: bool = False
    info: dict = field(default_factory=dict)


class Callback:
    """Per-epoch hooks of :func:`train` (no-ops here; subclass and override)."""

    def on_epoch_start(self, state: TrainState) -> None:
        """Before the epoch's first batch (``state.epoch`` is the epoch about to run)."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After the epoch's validation; set ``state.stop = True`` to end training."""


@dataclass
class TrainResult:
    """History, the best validation score (None without validation), the score ranking
    restarts, and why training ended."""

    history: dict
    best_validation: float | None
    score: float
    n_epochs: int
    stopped_early: bool


def train(objective, data, *, batch_fn: Callable[[np.ndarray], torch.Tensor], rng: np.random.Generator,
          max_epochs: int, batch_size: int, lr: float, weight_decay: float, patience: int,
          validation=None, metric: str = "log_likelihood", callbacks: Sequence[Callback] = (),
          bar=None, stopping: EarlyStopping | None = None,
          average_horizon: float | None = None) -> TrainResult:
    """Train ``objective`` on ``data``; the weights of the best validation epoch are kept.

    Parameters
    ----------
    objective : Objective
    data : ItemData
        Training items (only ``data.n`` is used here; ``batch_fn`` reads the rows).
    batch_fn : callable
        ``idx -> x`` (a ``(B, D)`` tensor on the objective's device) for a batch of indices.
    rng : numpy Generator
        Shuffles the items each epoch.
    max_epochs, batch_size, lr, weight_decay, patience
        The estimator's parameters (Adam with ``lr`` and ``weight_decay``).
    validation : ItemData or None
        Scored after each epoch by ``objective.validation_score``; enables early stopping.
    metric : str
        History keys are ``train_<metric>`` and ``val_<metric>`` (besides ``epoch`` and
        ``seconds``, cumulative wall time).
    callbacks : sequence of Callback
    bar : tqdm or None
        One progress bar for the whole fit (all restarts): advanced by one per epoch; an early
        stop removes the epochs not run from its total.
    stopping : EarlyStopping or None
        The early-stopping rule (default ``EarlyStopping(patience)``).
    average_horizon : float or None
        Score, keep and return an exponential moving average of the weights over about this
        many epochs (:class:`WeightAverage`) instead of the last step's weights. None: no
        averaging.

    Returns
    -------
    TrainResult
        ``score`` ranks restarts: the best validation score with validation data, else the
        mean training objective over the last 5 epochs.

    Raises
    ------
    DataError
        When the loss is not finite (divergence), naming the epoch and the learning rate.
    """
    modules = list(objective.modules.values())
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    history = {"epoch": [], f"train_{metric}": [], f"val_{metric}": [], "seconds": []}
    if validation is not None and stopping is None:
        stopping = EarlyStopping(patience)
    state = TrainState(epoch=0, max_epochs=max_epochs, objective=objective, optimizer=opt,
                       history=history, stopping=stopping if validation is not None else None)
    best_state = None
    stopped_early = False
    average = (WeightAverage(modules, horizon=average_horizon,
                             steps_per_epoch=math.ceil(data.n / batch_size))
               if average_horizon else None)
    t0 = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        state.epoch = epoch
        for cb in callbacks:
            cb.on_epoch_start(state)
        for m in modules:
            m.train()
        perm = (data.permutation(rng, batch_size) if hasattr(data, "permutation")
                else rng.permutation(data.n))
        total, count = 0.0, 0
        for start in range(0, data.n, batch_size):
            idx = perm[start:start + batch_size]
            x = batch_fn(idx)
            value = objective.batch_objective(x)
            loss = -value.mean()
            if not torch.isfinite(loss):
                raise DataError(f"training diverged at epoch {epoch} (non-finite loss); try a smaller "
                                f"lr (now {opt.param_groups[0]['lr']}) or check the data scaling")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if average is not None:
                average.update()
            total += float(value.detach().sum())
            count += len(idx)
        history["epoch"].append(epoch)
        history[f"train_{metric}"].append(total / count)
        val_score = math.nan
        if validation is not None:
            for m in modules:
                m.eval()
            if average is not None:
                average.swap()                  # score (and keep) the averaged weights
            val_score = float(objective.validation_score(validation))
            if stopping.update(val_score):
                best_state = [copy.deepcopy(m.state_dict()) for m in modules]
            if average is not None:
                average.swap()
        history[f"val_{metric}"].append(val_score)
        history["seconds"].append(time.perf_counter() - t0)
        if bar is not None:
            bar.update(1)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(train=f"{total / count:.1f}", val=f"{val_score:.1f}")
        for cb in callbacks:
            cb.on_epoch_end(state)
        if validation is not None and stopping.should_stop:
            logger.info("early stopping at epoch %d (best validation %s %.3f)", epoch, metric, stopping.best)
            stopped_early = True
        if stopped_early or state.stop:
            if bar is not None and bar.total is not None:
                bar.total -= max_epochs - epoch
                bar.refresh()
            break
    if best_state is not None:
        for m, sd in zip(modules, best_state):
            m.load_state_dict(sd)
    elif average is not None:
        average.swap()                          # no validation: end on the average
    for m in modules:
        m.eval()
    best = stopping.best if validation is not None else None
    score = best if validation is not None else float(np.mean(history[f"train_{metric}"][-5:]))
    return TrainResult(history=history, best_validation=best, score=score,
                       n_epochs=len(history["epoch"]), stopped_early=stopped_early or state.stop)
