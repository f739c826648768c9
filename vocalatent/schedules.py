"""Training schedules: callbacks of the one training loop (:mod:`vocalatent.training`).

Why each exists (the cost model of docs/method.md: a step costs m decoder passes plus
~6·B·m·D flops, so an epoch costs ceil(N/B)·m decoder passes):

- :class:`WarmupPlateauLR` — a larger learning rate reaches a better map in the same epochs
  (docs/benchmarks.md); a short linear warm-up keeps the first steps of a freshly initialised
  decoder from diverging, and a reduce-on-plateau step lets the fit settle instead of
  oscillating around the optimum, so that early stopping sees a curve that has flattened.
  Under :class:`GrowingLattice` the rate is cut on the final lattice only: a plateau on a
  coarse training lattice means the lattice no longer resolves the model, and the answer is
  the next size, not a smaller step (on the 10k synthetic set at m = 987 two cuts at the
  stage changes had left the fit below the old defaults' score for good; without them it
  reaches that score and ends 15.9 nats/item higher; docs/benchmarks.md, session 9).
- :class:`GrowingLattice` — the lattice size m is the main cost knob and the main accuracy
  knob: a coarse lattice already places the items roughly, a fine one resolves the detail.
  Training starts on a lattice a few sizes smaller along the lattice sequence (Fibonacci in
  2-D, the Korobov table in 3-D, k/n in 1-D) and moves to the next size whenever the
  validation score stops improving, ending on the model's own m. Validation is always scored
  on the final m, so the early-stopping curve has one yardstick. Each stage (and the rate's
  plateau rule on the final lattice) counts its plateaus from its own best: a finer lattice's
  first epochs start below the coarser stage's best, and a climb from there is not a plateau
  (on the 10k synthetic set at m = 987 this reached the old defaults' score in 0.31x their
  time, against 0.60x when the coarse best counted; docs/benchmarks.md, session 12). (``slowdown``, a rule that
  leaves a stage once its gain per epoch has fallen to a fraction of its fastest, is an
  option, off by default: on the 10k set it was faster to the old score at m = 987 and slower,
  and lower at the end, at m = 377.)
- :class:`SmoothedEarlyStopping` — the validation estimate jumps by a few nats per item from
  epoch to epoch (a new shift, a new batch order); stopping on a running median of it neither
  stops on a lucky peak nor runs on past a real plateau. The weights kept are
  still those of the best single epoch.
- weight averaging (part of ``schedule="auto"``: ``QLVM(average_epochs=None)`` averages over
  :data:`AVERAGE_EPOCHS`, :class:`vocalatent.training.WeightAverage`) — at the schedule's
  learning rate each step moves the decoder by as much as the noise of its random lattice
  shift; an exponential average of the weights over a few epochs is a better model than any
  one step and gives a smooth validation curve, so the plateau rules above cut the rate and
  stop on real plateaus rather than on one noisy epoch (docs/benchmarks.md, "Weight
  averaging": the README job's fit in 0.74x the time and 555 nats/item higher held-out; on
  the 10k synthetic set at m = 377, where without it the rate was cut five times on noisy
  epochs and the fit stopped below the old defaults, it ends 4.1 nats/item above them and
  reaches their score in 0.39x their time).
- :func:`auto_batch_size` — the batch size from the cost model (``batch_size="auto"``): the
  largest number of steps per epoch whose batches are still big enough that a step's
  likelihood work is at least its decoder work, with equal batches (no step spent decoding
  a lattice for a handful of left-over items).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from . import lattice as _lattice
from ._utils import check_positive
from .training import Callback, EarlyStopping, TrainState

__all__ = ["AVERAGE_EPOCHS", "DECODER_EFFICIENCY", "MIN_STEPS", "GrowingLattice", "SmoothedEarlyStopping", "WarmupPlateauLR",
           "auto_batch_size", "knee_batch_size", "lattice_steps", "stage_sizes_summary"]

logger = logging.getLogger(__name__)

#: Epochs of the weight average of ``schedule="auto"`` (``QLVM(average_epochs=None)``): chosen
#: between 2 and 5 on the 10k synthetic set at m = 377 and 987 (docs/benchmarks.md); 5 ended
#: higher at both.
AVERAGE_EPOCHS = 5.0

#: Fewest steps per epoch of ``batch_size="auto"``: an epoch also validates and takes the
#: schedule's decisions (warm-up, rate cuts, lattice stages, early stopping), so one step per
#: epoch gives the optimiser one move per decision. With one or two steps the README job's fit
#: and the repertoire benchmark's fits ended far lower, and two of those 600-item fits collapsed
#: their maps to a point (docs/benchmarks.md, "Steps per epoch").
MIN_STEPS = 3


class SmoothedEarlyStopping(EarlyStopping):
    """Early stopping on a running median of the validation score.

    Parameters
    ----------
    patience : int
        Epochs without an improvement of the smoothed score before stopping.
    window : int, default 5
        Epochs in the running median (1: no smoothing). A median ignores a single lucky or
        unlucky epoch entirely, where a moving average would carry it for many epochs.
    min_delta : float, default 1e-4
        Relative improvement of the smoothed score that counts.

    Notes
    -----
    :meth:`update` still returns True on the best *raw* epoch, so the training loop keeps the
    weights of the best epoch; only the stopping decision uses the smoothed curve.
    """

    def __init__(self, patience: int, *, window: int = 5, min_delta: float = 1e-4):
        super().__init__(patience, min_delta=min_delta)
        check_positive("window", window, integer=True)
        self.window = int(window)
        self.recent: list[float] = []
        self.smoothed = None
        self.best_smoothed = -math.inf
        self.best_raw = -math.inf

    def update(self, score: float) -> bool:
        score = float(score)
        if not math.isfinite(score):
            self.bad_epochs += 1
            return False
        self.recent = (self.recent + [score])[-self.window:]
        self.smoothed = float(np.median(self.recent))
        if (not math.isfinite(self.best_smoothed)
                or self.smoothed > self.best_smoothed + self.min_delta * abs(self.best_smoothed)):
            self.best_smoothed, self.bad_epochs = self.smoothed, 0
        else:
            self.bad_epochs += 1
        improved = score > self.best_raw
        if improved:
            self.best_raw = score
        self.best = self.best_raw
        return improved

    def reset_patience(self) -> None:
        """Start counting epochs without improvement afresh (a new lattice size)."""
        self.bad_epochs = 0
        self.best_smoothed = -math.inf
        self.recent = []
        self.smoothed = None


class WarmupPlateauLR(Callback):
    """Linear learning-rate warm-up, then a reduction on each plateau of the validation score.

    Parameters
    ----------
    warmup_epochs : int >= 0
        The learning rate rises linearly from ``lr / warmup_epochs`` to ``lr`` over these epochs.
    factor : float in (0, 1)
        Multiplier applied on a plateau.
    patience : int > 0
        Epochs without a new best validation score that make a plateau.
    min_lr_ratio : float
        The rate never goes below ``lr * min_lr_ratio``.
    """

    def __init__(self, *, warmup_epochs: int = 3, factor: float = 0.5, patience: int = 6,
                 min_lr_ratio: float = 0.05):
        check_positive("warmup_epochs", warmup_epochs, integer=True, allow_zero=True)
        check_positive("patience", patience, integer=True)
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1); got {factor!r}")
        self.warmup_epochs = int(warmup_epochs)
        self.factor = float(factor)
        self.patience = int(patience)
        self.min_lr_ratio = float(min_lr_ratio)
        self.base_lr = None
        self.scale = 1.0
        self.best = -math.inf
        self.bad = 0

    def _set(self, state: TrainState, lr: float) -> None:
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        state.history.setdefault("lr", []).append(lr)     # one entry per epoch

    def on_epoch_start(self, state: TrainState) -> None:
        if self.base_lr is None:
            self.base_lr = float(state.optimizer.param_groups[0]["lr"])
        warm = min(1.0, state.epoch / self.warmup_epochs) if self.warmup_epochs else 1.0
        self._set(state, self.base_lr * self.scale * warm)

    def on_epoch_end(self, state: TrainState) -> None:
        scores = state.history.get("val_log_likelihood") or next(
            (v for k, v in state.history.items() if k.startswith("val_")), [])
        if not scores or not math.isfinite(scores[-1]) or state.epoch <= self.warmup_epochs:
            return
        if state.info.get("coarse_lattice"):
            # a plateau on a coarse training lattice is answered by a finer lattice
            # (GrowingLattice), not by a smaller step: the rate is cut on the final lattice
            # only, and its plateaus are counted from the final lattice's own best (a score
            # reached on a coarse lattice is not a level the first fine epochs must beat)
            self.best, self.bad = -math.inf, 0
            return
        if scores[-1] > self.best:
            self.best, self.bad = scores[-1], 0
            return
        self.bad += 1
        if self.bad >= self.patience and self.scale > self.min_lr_ratio:
            self.scale = max(self.min_lr_ratio, self.scale * self.factor)
            self.bad = 0
            logger.debug("epoch %d: learning rate reduced to %.3g", state.epoch, self.base_lr * self.scale)


def lattice_steps(n_final: int, latent_dim: int, *, n_steps: int = 3, min_size: int = 34) -> list[int]:
    """Lattice sizes from coarse to ``n_final`` along the dimension's lattice sequence.

    Each size is about a third of the next (two Fibonacci steps in 2-D); sizes below
    ``min_size`` are dropped. The last entry is ``n_final`` itself.

    Parameters
    ----------
    n_final : int
    latent_dim : int
    n_steps : int >= 1
        How many sizes at most (including ``n_final``).
    min_size : int

    Returns
    -------
    list of int
    """
    check_positive("n_steps", n_steps, integer=True)
    if latent_dim == 2:
        seq = [f for f in _lattice.FIBONACCI if f < n_final]
        seq = seq[::-1][1::2][: n_steps - 1][::-1]        # every second Fibonacci number below
    else:
        # 1-D: k/n for any n; 3-D: sizes below the Korobov table get a searched generator
        # (an exhaustive Korobov search, milliseconds at these sizes)
        seq = [max(2, int(round(n_final / 3 ** k))) for k in range(n_steps - 1, 0, -1)]
    sizes = [s for s in seq if s >= min_size] + [int(n_final)]
    return sorted(set(sizes))


class GrowingLattice(Callback):
    """Train on coarser lattices first; move up the sequence when validation stalls.

    Parameters
    ----------
    sizes : sequence of int
        Increasing lattice sizes; the last is the final training lattice (the model's m).
    patience : int > 0
        Epochs without a new best validation score (on the final lattice) that move to the
        next size.
    max_fraction : float in (0, 1]
        A size is left at the latest after this fraction of ``max_epochs`` divided evenly among
        the coarse sizes, so the final lattice always gets most of the epochs.
    slowdown : float in (0, 1) or None, default None
        Also leave a size once its gain per epoch, the difference of the medians of the last
        two ``window``-epoch windows over ``window``, has fallen to ``slowdown`` times the
        fastest such gain of the stage. None: off (measured, not the default: module notes).
    window : int, default 5

    Notes
    -----
    The objective must offer ``set_lattice(m)`` and ``validation_lattice`` (validation is
    scored on ``sizes[-1]`` throughout). Early stopping is held off until the final size is
    reached, and ``state.info["coarse_lattice"]`` tells :class:`WarmupPlateauLR` to hold its
    rate cuts until then too.
    """

    def __init__(self, sizes, *, patience: int = 4, max_fraction: float = 0.4,
                 slowdown: float | None = None, window: int = 5):
        sizes = [int(s) for s in sizes]
        if not sizes or any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"sizes must be increasing; got {sizes}")
        check_positive("patience", patience, integer=True)
        check_positive("window", window, integer=True)
        if slowdown is not None and not 0 < slowdown < 1:
            raise ValueError(f"slowdown must be in (0, 1) or None; got {slowdown!r}")
        self.sizes = sizes
        self.patience = int(patience)
        self.max_fraction = float(max_fraction)
        self.slowdown = None if slowdown is None else float(slowdown)
        self.window = int(window)
        self.stage = 0
        self.stage_start = 1
        self.best = -math.inf
        self.bad = 0
        self.stage_scores: list[float] = []
        self.peak_rate = -math.inf

    def _slowed(self) -> bool:
        """The stage's gain per epoch has fallen to ``slowdown`` times its fastest."""
        w, scores = self.window, self.stage_scores
        if self.slowdown is None or len(scores) < 2 * w:
            return False
        rate = (float(np.median(scores[-w:])) - float(np.median(scores[-2 * w:-w]))) / w
        self.peak_rate = max(self.peak_rate, rate)
        return self.peak_rate > 0 and rate <= self.slowdown * self.peak_rate

    @property
    def final(self) -> bool:
        return self.stage == len(self.sizes) - 1

    def on_epoch_start(self, state: TrainState) -> None:
        obj = state.objective
        if state.epoch == 1:
            obj.validation_lattice = self.sizes[-1]
            obj.set_lattice(self.sizes[0])
            state.info["lattice"] = [(1, self.sizes[0])]
        state.history.setdefault("n_lattice", []).append(int(obj.n_lattice))   # one per epoch
        state.info["coarse_lattice"] = not self.final
        if not self.final and state.stopping is not None:
            state.stopping.bad_epochs = 0          # no early stop before the final lattice

    def on_epoch_end(self, state: TrainState) -> None:
        if self.final:
            return
        scores = state.history.get("val_log_likelihood", [])
        if scores and math.isfinite(scores[-1]):
            if self.slowdown is not None:
                self.stage_scores.append(float(scores[-1]))
            if scores[-1] > self.best:
                self.best, self.bad = scores[-1], 0
            else:
                self.bad += 1
        budget = max(1, int(self.max_fraction * state.max_epochs / max(1, len(self.sizes) - 1)))
        if self.bad >= self.patience or state.epoch - self.stage_start + 1 >= budget or self._slowed():
            self.stage += 1
            self.stage_start = state.epoch + 1
            self.best, self.bad = -math.inf, 0      # each stage's plateau from its own best
            self.stage_scores, self.peak_rate = [], -math.inf
            state.objective.set_lattice(self.sizes[self.stage])
            state.info.setdefault("lattice", []).append((state.epoch + 1, self.sizes[self.stage]))
            if state.stopping is not None:
                if hasattr(state.stopping, "reset_patience"):
                    state.stopping.reset_patience()
                else:
                    state.stopping.bad_epochs = 0
            logger.debug("epoch %d: training lattice m=%d", state.epoch + 1, self.sizes[self.stage])


def stage_sizes_summary(info: dict) -> str:
    """'m=89 from epoch 1, m=377 from epoch 9' from a TrainState's ``info``."""
    return ", ".join(f"m={m} from epoch {e}" for e, m in info.get("lattice", []))


#: How many times slower a decoder's floating-point work runs than the likelihood kernel's
#: GEMMs, per decoder kind (measured on a 2-core CPU, docs/benchmarks.md, "Batch size from the
#: cost model": the 128 x 128 conv decoder does 5.6 MFLOP per lattice point forward and
#: backward in 2.45 ms, 2.3 GFLOP/s, where the kernel runs 63 GFLOP/s; an MLP decoder is itself
#: GEMMs, assumed 1).
DECODER_EFFICIENCY = {"conv": 27.0, "mlp": 1.0}


def knee_batch_size(decoder_flops: float, n_features: int, *, efficiency: float = 1.0) -> float:
    """Batch size at which one step's likelihood work equals its decoder work.

    A step decodes m lattice points (about ``3 * decoder_flops`` per point forward and
    backward, at ``efficiency`` times the cost of GEMM flops) and evaluates the B x m kernel
    (about ``6 * B * n_features`` flops per point, docs/method.md). Below this batch size a
    step costs about the same whatever B (the decoder dominates), so larger batches are nearly
    free; above it a step's cost grows in proportion to B, as a VAE's does.

    Parameters
    ----------
    decoder_flops : float > 0
        Forward flops of the decoder for one latent point.
    n_features : int > 0
        D, the features of one item.
    efficiency : float > 0
        :data:`DECODER_EFFICIENCY` of the decoder kind.

    Returns
    -------
    float
        ``efficiency * 3 * decoder_flops / (6 * n_features)``.
    """
    check_positive("decoder_flops", decoder_flops)
    check_positive("n_features", n_features, integer=True)
    check_positive("efficiency", efficiency)
    return float(efficiency) * 3.0 * float(decoder_flops) / (6.0 * int(n_features))


def auto_batch_size(n_items: int, *, knee: float, min_batch: int = 32, min_steps: int = MIN_STEPS) -> int:
    """The batch size of ``batch_size="auto"``: equal batches no larger than the cost knee.

    An epoch of k steps costs about ``k * m`` decoder passes plus ``6 * N * m * D`` kernel
    flops. With batches at the knee (:func:`knee_batch_size`) an epoch costs at most twice its
    floor (the kernel work alone) while keeping as many steps as that allows; so
    ``k = ceil(N / knee)`` steps of ``ceil(N / k)`` items, but at least ``min_steps`` (a small
    job pays a few more decoder passes per epoch for steps that converge: the README job's
    269 training items are 3 steps of 90, not one of 269).

    Parameters
    ----------
    n_items : int > 0
        Training items N.
    knee : float > 0
        The knee batch size.
    min_batch : int, default 32
        The batch never drops below this (or N when N is smaller), whatever the knee or
        ``min_steps``: tiny batches make noisy steps and the decoder term is paid per step.
    min_steps : int, default :data:`MIN_STEPS`
        Fewest steps per epoch (when ``min_batch`` allows).

    Returns
    -------
    int
        The batch size, between ``min(N, min_batch)`` and N.
    """
    check_positive("n_items", n_items, integer=True)
    check_positive("knee", knee)
    check_positive("min_batch", min_batch, integer=True)
    check_positive("min_steps", min_steps, integer=True)
    n = int(n_items)
    target = max(float(knee), float(min_batch))
    # the extra steps for min_steps only where batches of min_batch items allow them
    steps = max(math.ceil(n / target), min(int(min_steps), max(1, n // int(min_batch))))
    return int(min(n, math.ceil(n / steps)))
