"""Training schedules (vocalatent.schedules): known answers on scripted validation curves, and
one small fit with schedule="auto". Nothing here depends on timing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vocalatent import QLVM
from vocalatent.schedules import (GrowingLattice, SmoothedEarlyStopping, WarmupPlateauLR,
                                  lattice_steps)
from vocalatent.training import EarlyStopping, TrainState


class _Objective:
    def __init__(self, m):
        self.n_lattice = m
        self.validation_lattice = None
        self.calls = []

    def set_lattice(self, m):
        self.n_lattice = m
        self.calls.append(m)


def _state(opt=None, objective=None, stopping=None, max_epochs=100):
    opt = opt or torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    return TrainState(epoch=0, max_epochs=max_epochs, objective=objective, optimizer=opt,
                      history={"val_log_likelihood": []}, stopping=stopping)


def _run(callback, state, scores):
    lrs = []
    for epoch, score in enumerate(scores, 1):
        state.epoch = epoch
        callback.on_epoch_start(state)
        lrs.append(state.optimizer.param_groups[0]["lr"])
        state.history["val_log_likelihood"].append(score)
        callback.on_epoch_end(state)
    return lrs


def test_warmup_then_plateau_reductions():
    cb = WarmupPlateauLR(warmup_epochs=4, factor=0.5, patience=3, min_lr_ratio=0.2)
    state = _state()
    # improving for 6 epochs, then flat for 12
    scores = [1, 2, 3, 4, 5, 6] + [6] * 12
    lrs = _run(cb, state, scores)
    np.testing.assert_allclose(lrs[:4], [0.0025, 0.005, 0.0075, 0.01])
    np.testing.assert_allclose(lrs[4:7], 0.01)
    # plateau of 3 epochs (7, 8, 9) -> halved from epoch 10; again after 3 more; floor 0.2
    np.testing.assert_allclose(lrs[9:12], 0.005)
    np.testing.assert_allclose(lrs[12:15], 0.0025)
    np.testing.assert_allclose(lrs[15:], 0.002)
    assert state.history["lr"] == lrs


def test_lattice_steps_follow_the_sequences():
    assert lattice_steps(987, 2) == [144, 377, 987]
    assert lattice_steps(377, 2) == [55, 144, 377]
    assert lattice_steps(256, 1) == [85, 256]
    assert lattice_steps(1021, 3) == [113, 340, 1021]
    assert lattice_steps(55, 2) == [55]        # nothing coarser is worth it
    assert all(b > a for a, b in zip(lattice_steps(2584, 2), lattice_steps(2584, 2)[1:]))


def test_growing_lattice_moves_on_plateaus_and_holds_off_stopping():
    obj = _Objective(987)
    stop = EarlyStopping(2)
    cb = GrowingLattice([144, 377, 987], patience=2, max_fraction=1.0)
    state = _state(objective=obj, stopping=stop, max_epochs=100)
    # improving 3 epochs, then stalls: after 2 bad epochs -> 377; improves, stalls -> 987
    scores = [1, 2, 3, 3, 3, 4, 5, 5, 5, 5, 5]
    for epoch, score in enumerate(scores, 1):
        state.epoch = epoch
        cb.on_epoch_start(state)
        assert stop.bad_epochs == 0 or cb.final   # no early stop before the final lattice
        state.history["val_log_likelihood"].append(score)
        stop.update(score)
        cb.on_epoch_end(state)
    assert obj.validation_lattice == 987         # one yardstick throughout
    assert state.history["n_lattice"] == [144] * 5 + [377] * 4 + [987] * 2
    assert obj.calls == [144, 377, 987]


def test_growing_lattice_time_budget_per_stage():
    obj = _Objective(987)
    cb = GrowingLattice([144, 377, 987], patience=50, max_fraction=0.4)
    state = _state(objective=obj, max_epochs=50)
    _run(cb, state, np.arange(1, 31, dtype=float))        # always improving
    # 0.4 * 50 / 2 = 10 epochs per coarse size, then the final one
    assert state.history["n_lattice"] == [144] * 10 + [377] * 10 + [987] * 10


def test_rate_is_cut_on_the_final_lattice_only():
    # flat curve: the coarse stage is left after its patience (3 bad epochs) without a rate
    # cut; on the final lattice the same plateau halves the rate every 3 epochs
    obj = _Objective(377)
    lr_cb = WarmupPlateauLR(warmup_epochs=0, factor=0.5, patience=3, min_lr_ratio=0.01)
    grow = GrowingLattice([144, 377], patience=3, max_fraction=1.0)
    state = _state(objective=obj, max_epochs=100)
    lrs = []
    for epoch, score in enumerate([1.0] + [1.0] * 12, 1):
        state.epoch = epoch
        lr_cb.on_epoch_start(state)
        grow.on_epoch_start(state)
        lrs.append(state.optimizer.param_groups[0]["lr"])
        state.history["val_log_likelihood"].append(score)
        lr_cb.on_epoch_end(state)
        grow.on_epoch_end(state)
    assert state.history["n_lattice"] == [144] * 4 + [377] * 9
    # no cut on the coarse lattice; on the final one epoch 5 is its first best, then 3 flat
    # epochs (6, 7, 8) halve the rate from epoch 9 and again from epoch 12
    np.testing.assert_allclose(lrs[:8], 0.01)
    np.testing.assert_allclose(lrs[8:11], 0.005)
    np.testing.assert_allclose(lrs[11:], 0.0025)
    # without the lattice callback the same curve is cut from epoch 5 on
    lr_alone = WarmupPlateauLR(warmup_epochs=0, factor=0.5, patience=3, min_lr_ratio=0.01)
    lrs_alone = _run(lr_alone, _state(), [1.0] * 13)
    np.testing.assert_allclose(lrs_alone[4], 0.005)


def test_a_stage_counts_its_plateaus_from_its_own_best():
    # after a change of lattice the validation score first falls below the coarse stage's
    # best, then climbs: the stage (and the rate) must not treat the climb as a plateau
    obj = _Objective(987)
    lr_cb = WarmupPlateauLR(warmup_epochs=0, factor=0.5, patience=2, min_lr_ratio=0.01)
    grow = GrowingLattice([144, 377, 987], patience=2, max_fraction=1.0)
    state = _state(objective=obj, max_epochs=100)
    coarse = [1.0, 2.0, 3.0, 3.0, 3.0]                # 144: left after two flat epochs
    middle = [2.0, 2.2, 2.4, 2.6, 2.6, 2.6]           # 377: below 3.0 but rising, then flat
    final = [2.5, 2.7, 2.9, 3.1, 3.3, 3.3, 3.3]       # 987: rising from below, then flat
    lrs = []
    for epoch, score in enumerate(coarse + middle + final, 1):
        state.epoch = epoch
        lr_cb.on_epoch_start(state)
        grow.on_epoch_start(state)
        lrs.append(state.optimizer.param_groups[0]["lr"])
        state.history["val_log_likelihood"].append(score)
        lr_cb.on_epoch_end(state)
        grow.on_epoch_end(state)
    assert state.history["n_lattice"] == [144] * 5 + [377] * 6 + [987] * 7
    # the final lattice's climb from 2.5 is not a plateau under the coarse best of 3.0:
    # the first cut follows the two flat epochs 17 and 18
    np.testing.assert_allclose(lrs[:18], 0.01)


def test_growing_lattice_leaves_a_stage_whose_gain_has_slowed():
    obj = _Objective(987)
    cb = GrowingLattice([144, 377, 987], patience=50, max_fraction=1.0, slowdown=0.25, window=5)
    state = _state(objective=obj, max_epochs=200)
    # gains of 10 per epoch for 12 epochs, then 1 per epoch. On a rising curve the difference
    # of the two windows' medians (epochs e-9..e-5 and e-4..e) over 5 is the mean gain of
    # epochs e-6..e-2: it first falls to 1 <= 0.25 * 10 at e = 19 (the gains of 13..17)
    gains = [10.0] * 12 + [1.0] * 30
    scores = np.cumsum(gains)
    _run(cb, state, scores)
    n = state.history["n_lattice"]
    assert n[:19] == [144] * 19 and n[19] == 377
    # a stage that never speeds up (constant gains) runs on: the rate never falls below
    # a quarter of its own peak, so only patience or the budget end it
    cb2 = GrowingLattice([144, 377], patience=50, max_fraction=1.0, slowdown=0.25)
    state2 = _state(objective=_Objective(377), max_epochs=100)
    _run(cb2, state2, np.arange(1, 60, dtype=float))
    assert set(state2.history["n_lattice"]) == {144}
    # a stage that only falls (no positive gain) is left by patience, not by the rate test
    cb3 = GrowingLattice([144, 377], patience=3, max_fraction=1.0, slowdown=0.25)
    state3 = _state(objective=_Objective(377), max_epochs=100)
    _run(cb3, state3, [5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    assert state3.history["n_lattice"] == [144] * 4 + [377] * 2
    with pytest.raises(ValueError, match="slowdown"):
        GrowingLattice([144, 377], slowdown=1.5)


def test_smoothed_stopping_ignores_single_spikes():
    rng = np.random.default_rng(0)
    raw = EarlyStopping(5)
    smooth = SmoothedEarlyStopping(5, window=5)
    # a rising curve with noise and one lucky spike at epoch 10
    curve = np.linspace(0, 10, 40) + rng.normal(0, 0.3, 40)
    curve[9] += 8
    stops = {}
    for rule, name in ((raw, "raw"), (smooth, "smooth")):
        for k, v in enumerate(curve, 1):
            rule.update(v)
            if rule.should_stop:
                stops[name] = k
                break
    assert stops.get("raw") == 15                # the spike ends the raw rule 5 epochs later
    assert "smooth" not in stops                 # the average keeps rising past the spike
    assert math.isclose(smooth.best, curve.max())
    # on a flat curve both stop
    flat = SmoothedEarlyStopping(4, window=3)
    n = next(k for k, v in enumerate(rng.normal(0, 0.1, 100), 1) if flat.update(v) is not None
             and flat.should_stop)
    assert n < 30


def test_auto_schedule_fits_and_ends_on_the_final_lattice():
    rng = np.random.default_rng(0)
    t = rng.random(600)
    X = np.stack([np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)], 1) * 0.4 + 0.5
    X = (X + rng.normal(0, 0.02, X.shape)).astype(np.float32)
    X = np.concatenate([X, X ** 2], 1)
    m = QLVM(1, n_lattice=256, max_epochs=40, patience=8, lr=3e-3, schedule="auto",
             random_state=0, verbose=False).fit(X, validation=0.2)
    hist = m.history_
    assert m.n_lattice_ == 256
    assert hist["n_lattice"][0] == 85 and hist["n_lattice"][-1] == 256
    assert len(hist["lr"]) == len(hist["epoch"]) == len(hist["n_lattice"])
    assert hist["lr"][0] < 3e-3                    # warm-up
    with pytest.raises(Exception, match="schedule"):
        QLVM(schedule="fast").fit(X)


def test_knee_batch_size_is_the_cost_models_balance_point():
    from vocalatent.schedules import knee_batch_size

    # 3 * F decoder flops per point (forward and backward) = 6 * B * D kernel flops
    assert knee_batch_size(1_000_000, 1000) == pytest.approx(500.0)
    assert knee_batch_size(1_000_000, 1000, efficiency=27.0) == pytest.approx(13_500.0)
    # the 128 x 128 conv decoder of the README job: 1.87 MFLOP per point forward, D = 16384
    assert 1400 < knee_batch_size(1.87e6, 128 * 128, efficiency=27.0) < 1700
    with pytest.raises(Exception, match="n_features"):
        knee_batch_size(1e6, 0)


@pytest.mark.parametrize("n, knee, expected", [
    (269, 1540.0, 90),           # the README job: at least 3 steps per epoch (MIN_STEPS)
    (600, 1540.0, 200),          # a repertoire of the benchmark: 3 steps
    (9000, 516.0, 500),          # 18 equal steps of 500 (ceil(9000 / 516) = 18)
    (100_000, 1540.0, 1539),     # 65 steps
    (1000, 1000.0, 334),
    (3001, 1000.0, 751),         # 4 steps: never 3 big ones plus a left-over of 1 item
    (5000, 3.0, 32),             # never below min_batch
    (80, 1540.0, 40),            # ... not even for the 3 steps (2 of 40, not 3 of 27)
    (10, 3.0, 10),               # ... nor above N
])
def test_auto_batch_size_known_answers(n, knee, expected):
    from vocalatent.schedules import auto_batch_size

    b = auto_batch_size(n, knee=knee)
    assert b == expected
    steps = math.ceil(n / b)
    assert b * steps >= n and b * (steps - 1) < n       # the batches cover N once
    assert n - b * (steps - 1) >= b - steps             # and are equal to within one item per step


def test_qlvm_auto_batch_size_follows_the_counted_decoder_flops():
    from vocalatent.schedules import auto_batch_size, knee_batch_size

    rng = np.random.default_rng(1)
    X = rng.random((900, 6)).astype(np.float32)
    m = QLVM(1, n_lattice=32, max_epochs=1, batch_size="auto", decoder="mlp",
             decoder_options={"hidden": [16]}, random_state=0, verbose=False).fit(X, validation=0.1)
    # an MLP's flops are 2 * in * out per linear layer and point: count them from the layers
    flops = sum(2 * mod.in_features * mod.out_features for mod in m.module_.modules()
                if isinstance(mod, torch.nn.Linear))
    expected = auto_batch_size(810, knee=knee_batch_size(flops, 6))
    assert m.batch_size_ == expected
    assert expected < 810                      # a small decoder: several steps per epoch
    m2 = QLVM(1, n_lattice=32, max_epochs=1, batch_size=64, random_state=0, verbose=False).fit(X)
    assert m2.batch_size_ == 64
    with pytest.raises(Exception, match="batch_size"):
        QLVM(1, batch_size="big").fit(X)


def test_weight_average_is_the_float64_exponential_average_of_the_steps():
    from vocalatent.training import WeightAverage

    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    module = torch.nn.Module()
    module.p = p
    avg = WeightAverage([module], horizon=2.0, steps_per_epoch=3)     # share 1/6 once warmed up
    rng = np.random.default_rng(1)
    ref = np.zeros(3)
    for step in range(1, 21):
        with torch.no_grad():
            p.copy_(torch.as_tensor(rng.normal(size=3)))
        avg.update()
        w = max(1 / 6, 1 / (step + 1))
        ref = (1 - w) * ref + w * p.detach().numpy()
    live = p.detach().clone()
    avg.swap()
    np.testing.assert_allclose(p.detach().numpy(), ref, rtol=1e-12)
    avg.swap()
    assert torch.equal(p.detach(), live)
    with pytest.raises(ValueError, match="horizon"):
        WeightAverage([module], horizon=0, steps_per_epoch=1)


def test_training_keeps_and_scores_the_averaged_weights():
    """With an average, each epoch is scored on the average of the live weights after each
    step so far (a float64 reference from the recorded live trajectory), and the fit ends on the
    best epoch's average, not on the last step's live weights."""
    from vocalatent.training import train

    class Obj:
        def __init__(self):
            self.w = torch.nn.Linear(1, 1, bias=False)
            self.modules = {"w": self.w}
            self.live, self.scored = [], []

        def batch_objective(self, x):
            self.live.append(float(self.w.weight.detach()))     # the weights before this step
            return -((self.w(x) - 2 * x) ** 2).squeeze(1)

        def validation_score(self, data):
            self.scored.append(float(self.w.weight.detach()))
            return -abs(self.scored[-1] - 2.0)

    class Data:
        n = 8

    obj = Obj()
    x = torch.linspace(-1, 1, 8).unsqueeze(1)
    res = train(obj, Data(), batch_fn=lambda idx: x[idx], rng=np.random.default_rng(0), max_epochs=6,
                batch_size=4, lr=0.3, weight_decay=0.0, patience=50, validation=Data(),
                average_horizon=3.0)
    after = obj.live[1:]                    # live weights after steps 1, 2, ...
    ref, avg = [], obj.live[0]
    for step, w_live in enumerate(after, 1):
        w = max(1 / 6, 1 / (step + 1))      # horizon 3 epochs x 2 steps per epoch
        avg = (1 - w) * avg + w * w_live
        if step % 2 == 0:
            ref.append(avg)
    np.testing.assert_allclose(obj.scored[:len(ref)], ref, rtol=1e-6)
    assert not np.allclose(obj.scored[:len(ref)], after[1::2][:len(ref)])   # not the live weights
    best = int(np.argmax(res.history["val_log_likelihood"]))
    assert float(obj.w.weight.detach()) == pytest.approx(obj.scored[best], abs=1e-7)


def test_average_epochs_follows_the_schedule():
    from vocalatent.schedules import AVERAGE_EPOCHS

    assert QLVM(schedule="auto")._average_horizon() == AVERAGE_EPOCHS     # part of "auto"
    assert QLVM()._average_horizon() is None                               # "none": off
    assert QLVM(schedule="auto", average_epochs=2.5)._average_horizon() == 2.5
    assert QLVM(schedule="auto", average_epochs=0)._average_horizon() is None
    assert QLVM(schedule="none", average_epochs=2.5)._average_horizon() == 2.5
    X = np.random.default_rng(0).random((40, 3)).astype(np.float32)
    with pytest.raises(Exception, match="average_epochs"):
        QLVM(1, average_epochs=-1, max_epochs=1, verbose=False).fit(X)


def test_job_config_passes_the_weight_average_only_with_the_auto_schedule():
    from vocalatent.schedules import AVERAGE_EPOCHS
    from vocalatent.workflow import make_model, resolve

    vocal = make_model(resolve(pipeline="bengalese_finch"), device="cpu", verbose=False)
    assert vocal.schedule == "auto" and vocal._average_horizon() == AVERAGE_EPOCHS
    off = make_model(resolve(pipeline="bengalese_finch", overrides={"model": {"average_epochs": 0.0}}),
                     device="cpu", verbose=False)
    assert off._average_horizon() is None
    short = make_model(resolve(pipeline="bengalese_finch", overrides={"model": {"average_epochs": 2}}),
                       device="cpu", verbose=False)
    assert short._average_horizon() == 2.0
    cells = make_model(resolve(pipeline="single_cell"), device="cpu", verbose=False)
    assert cells.schedule == "none" and cells._average_horizon() is None
